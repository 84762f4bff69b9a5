//! The supervisor's side of service supervision: a `ServiceDied` is
//! counted against the restart limits, the service restarted through its
//! `Supervised` owner (a restarted notifier keeps its place), or the
//! system given up on.

use actix::prelude::*;
use lwsys_messages::lifecycle::ServiceDied;
use lwsys_messages::protocol::ServiceEvent;
use lwsys_messages::protocol::SystemEvent;
use lwsys_messages::supervisor::Shutdown;
use slog::warn;

use super::registry::Kind;
use super::{RunState, Supervisor};

impl Handler<ServiceDied> for Supervisor {
    type Result = ();

    /// A supervised service is gone: restart it (durable state reloaded),
    /// unless it died too often, then give up and shut down as failed.
    fn handle(&mut self, msg: ServiceDied, ctx: &mut Self::Context) {
        if self.shutting_down {
            return;
        }
        let deaths = ctx.address().recipient();
        let Some(sup) = self.supervision.as_mut() else { return };
        let kind = msg.service;
        let name = kind.name();
        let count = match sup.restarts().on_death(name, tokio::time::Instant::now()) {
            Ok(count) => count,
            Err(why) => {
                slog::crit!(self.log, "giving up on a service; shutting down"; "service" => name,
                            "restarts" => sup.restarts().count());
                return self.fail(why, name, ctx);
            }
        };
        let restarted = sup.services().restart(kind, &deaths);
        let notifier = match restarted {
            Ok(notifier) => notifier,
            Err(e) => {
                slog::crit!(self.log, "cannot restart a service; shutting down"; "service" => name,
                            "error" => %e);
                return self.fail(format!("cannot restart the {name} service: {e}"), name, ctx);
            }
        };
        warn!(self.log, "service died; restarted"; "service" => name, "restarts_in_window" => count);
        if let Some(reg) = notifier {
            // The new notifier takes the old one's place in the consent
            // order, and a walk the old one held is asked again (the new
            // one has deferred nothing it could resume).
            let old_id = sup.notifier_id(&reg.name);
            let kind = Kind::Actor {
                consent: reg.consent,
                changed: reg.changed,
                aborted: reg.aborted,
                kind: reg.kind,
            };
            let id = self.registry.put(old_id, &reg.name, kind);
            if let Some(s) = self.supervision.as_mut() {
                s.set_notifier_id(&reg.name, id);
            }
            if self.resume_parked(&reg.name) {
                self.pump(ctx);
            }
        }
        self.emit(SystemEvent::Service(ServiceEvent::Restarted {
            service: name.to_owned(),
            restarts: count,
        }));
    }
}

impl Supervisor {
    /// Give up: publish the failure, tell subscribers, and shut down.
    pub(super) fn fail(&mut self, why: String, service: &str, ctx: &mut Context<Self>) {
        self.emit(SystemEvent::Service(ServiceEvent::GaveUp {
            service: service.to_owned(),
            reason: why.clone(),
        }));
        self.shutdown_tx.send_replace(RunState::Failed(why));
        ctx.address().do_send(Shutdown);
    }
}
