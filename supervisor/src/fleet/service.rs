//! `FleetService`: the actor that turns the supervisor's events into the
//! fleet's retained payloads (`state`, `explain`, `ota`, `info`) in the
//! [`Latest`] buffer, and starts the link. It subscribes to the events as
//! a control session does; on each it asks the supervisor for an
//! explanation (one at a time: events during a refresh coalesce into one
//! more). A deferral is no event, so while the system is not settled
//! (something is parked, or it is below OPERATIONAL) it refreshes every
//! [`UNSETTLED_POLL`]; a settled system costs no wakeups.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use lwsys_actors::logsafe::LogSafe;
use lwsys_messages::fleet::{ExplainSummary, InfoPayload, OtaPayload, StatePayload, Topic};
use lwsys_messages::ota::GetOtaStatus;
use lwsys_messages::protocol::{SystemEvent, PROTOCOL_VERSION};
use lwsys_messages::state::SystemState;
use lwsys_messages::supervisor::Explanation;
use serde::Serialize;
use slog::{error, warn, Logger};

use super::link::{self, LinkParts};
use super::{identity, FleetGate, FleetSettings, Latest};
use crate::control::SessionEnv;
use crate::handle::WeakSystemHandle;

/// How often an unsettled system is looked at again.
pub const UNSETTLED_POLL: Duration = Duration::from_secs(1);

/// See the module docs.
pub struct FleetService {
    sys: WeakSystemHandle,
    log: Logger,
    latest: Arc<Latest>,
    ota: OtaPayload,
    refreshing: bool,
    again: bool,
    poll: Option<SpawnHandle>,
}

impl FleetService {
    /// Start the fleet link of the system `env` drives: the service, and
    /// (once the device id and credentials are read) the link task.
    pub fn start(s: FleetSettings, env: SessionEnv, gate: Option<FleetGate>) -> Addr<Self> {
        let log = env.log.new(slog::o!("part" => "fleet"));
        let latest = Arc::new(Latest::default());
        let info = InfoPayload {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            variant: s.variant.clone(),
            protocol: PROTOCOL_VERSION,
            commands: s.commands.as_str().to_owned(),
        };
        put_json(&latest, Topic::Info, &info, &log);
        let addr = FleetService {
            sys: env.sys.downgrade(),
            log: log.clone(),
            latest: latest.clone(),
            ota: OtaPayload::default(),
            refreshing: false,
            again: false,
            poll: None,
        }
        .start();
        let sys = env.sys.clone();
        actix::spawn(async move {
            let device = match identity::device_id(&sys, &s, &log).await {
                Ok(d) => d,
                Err(e) => {
                    error!(log, "fleet link not started"; "error" => %e);
                    return;
                }
            };
            let verifier = if s.broker.tls {
                let store = sys.services().and_then(|v| v.trust_verifier);
                match identity::verifier(&s, store)
                    .and_then(|v| Ok((identity::tls_anonymous(v.clone())?, v)))
                {
                    Ok(v) => Some(v),
                    Err(e) => {
                        error!(log, "fleet link not started"; "error" => %LogSafe(&e));
                        return;
                    }
                }
            } else {
                None
            };
            drop(sys);
            let log = log.new(slog::o!("device" => device.clone()));
            // The credentials and the client certificate are read before
            // each connection attempt (link::identify), not here.
            let opts = link::options(&s, &device, None, verifier.as_ref().map(|(t, _)| t.clone()));
            let verifier = verifier.map(|(_, v)| v);
            link::spawn(s, device, opts, LinkParts { log, latest, gate, env, verifier });
        });
        addr
    }

    /// Ask for a fresh explanation (see the module docs).
    fn refresh(&mut self, ctx: &mut Context<Self>) {
        if self.refreshing {
            self.again = true;
            return;
        }
        let Some(sys) = self.sys.upgrade() else { return ctx.stop() };
        self.refreshing = true;
        let fut = async move { sys.explain().await };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.refreshing = false;
            match res {
                Ok(x) => act.publish(&x, ctx),
                Err(e) => warn!(act.log, "fleet: no explanation"; "error" => %e),
            }
            if std::mem::take(&mut act.again) {
                act.refresh(ctx);
            }
        }));
    }

    fn publish(&mut self, x: &Explanation, ctx: &mut Context<Self>) {
        let state =
            StatePayload { state: x.state, since_us: x.since_us, pending: x.pending.clone() };
        put_json(&self.latest, Topic::State, &state, &self.log);
        put_json(&self.latest, Topic::Explain, &ExplainSummary::from_explanation(x), &self.log);
        let settled = x.pending.is_none() && x.state >= SystemState::Operational;
        if let Some(h) = self.poll.take() {
            ctx.cancel_future(h);
        }
        if !settled {
            self.poll = Some(ctx.run_later(UNSETTLED_POLL, |act, ctx| {
                act.poll = None;
                act.refresh(ctx);
            }));
        }
    }

    fn publish_ota(&self) {
        put_json(&self.latest, Topic::Ota, &self.ota, &self.log);
    }
}

/// Serialize `v` into `topic`'s slot.
fn put_json<T: Serialize>(latest: &Latest, topic: Topic, v: &T, log: &Logger) {
    match serde_json::to_vec(v) {
        Ok(bytes) => latest.put(topic, bytes),
        Err(e) => warn!(log, "fleet payload would not serialize"; "topic" => ?topic, "error" => %e),
    }
}

impl Actor for FleetService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(sys) = self.sys.upgrade() else { return ctx.stop() };
        let me = ctx.address().recipient();
        let ota = sys.services().and_then(|s| s.ota);
        let fut = async move {
            let _ = sys.subscribe(me).await;
            match ota {
                Some(o) => o.send(GetOtaStatus).await.ok(),
                None => None,
            }
        };
        ctx.spawn(fut.into_actor(self).map(|status, act, ctx| {
            if let Some(st) = status {
                act.ota = OtaPayload::from_status(&st);
            }
            act.publish_ota();
            act.refresh(ctx);
        }));
    }
}

impl Handler<SystemEvent> for FleetService {
    type Result = ();

    fn handle(&mut self, ev: SystemEvent, ctx: &mut Context<Self>) {
        match ev {
            SystemEvent::Ota(p) => {
                self.ota.apply(&p.progress);
                if p.error_kind.is_some() {
                    self.ota.last_error_kind = p.error_kind;
                }
                self.publish_ota();
            }
            SystemEvent::State { .. } | SystemEvent::Notifier { .. } => self.refresh(ctx),
            _ => {}
        }
    }
}
