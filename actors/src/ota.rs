//! OTA updates in the lws_ota model: the platform ops trait ([`OtaOps`]),
//! and the library pieces `OtaService` is built from.
//!
//! The flow, all blocking and meant for the service's own worker thread:
//! [`fetch::Fetcher::manifest`] -> [`manifest::verify_manifest`] ->
//! (consent, by the caller) -> [`pipeline::install`], which streams
//! HTTP -> gunzip -> SHA-512 -> [`OtaOps::write`] and calls
//! [`OtaOps::finalize`] only once the hash and size match.
//! [`slots::SlotDir`] is the default A/B platform; [`sign`] is the issuer's
//! side (`lwsysctl ota keygen` / `ota publish`). [`OtaService`] is a thin
//! actor over them, without scheduling or consent yet.

pub mod fetch;
pub mod jwk;
pub mod manifest;
pub mod ops;
pub mod pipeline;
pub mod sign;
pub mod slots;

pub use fetch::{FetchConfig, Fetcher};
pub use jwk::{keygen, parse_private_jwk, parse_public_jwk};
pub use lwsys_messages::ota::{OtaError, OtaEvent, OtaPhase, OtaStatus, SlotStatus};
pub use manifest::{verify_manifest, Manifest, ManifestPolicy};
pub use ops::OtaOps;
pub use pipeline::{check, check_and_install, install};
pub use sign::publish;
pub use slots::{Bootloader, SlotDir};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use actix::{Actor, ActorContext as _, AsyncContext as _, Context, Handler, Message, Recipient};
use lwsys_messages::ota::{CheckOta, GetOtaStatus, ReportCurrent};
use p521::ecdsa::VerifyingKey;

/// The OTA service (skeleton): serves `ota.status` and
/// `ota.report_current`, and runs a check-and-install on its own worker
/// thread on `ota.check`. Scheduling (30 s + jitter, periodic checks) and
/// consent (`enter_modal`) are the lead's to wire: see [`check`] and
/// [`install`], between which consent goes.
pub struct OtaService {
    log: slog::Logger,
    ops: Arc<Mutex<Box<dyn OtaOps>>>,
    fetcher: Arc<Fetcher>,
    key: VerifyingKey,
    policy: ManifestPolicy,
    progress: OtaStatus,
    busy: bool,
    cancel: Arc<AtomicBool>,
    events: Option<Recipient<OtaEvent>>,
}

impl OtaService {
    /// A service over `ops`, fetching with `fetch` and trusting `key`.
    /// `events`, if given, receives every progress event.
    pub fn new(
        log: &slog::Logger,
        ops: Box<dyn OtaOps>,
        fetch: FetchConfig,
        key: VerifyingKey,
        policy: ManifestPolicy,
        events: Option<Recipient<OtaEvent>>,
    ) -> Self {
        Self {
            log: log.new(slog::o!("service" => "ota")),
            ops: Arc::new(Mutex::new(ops)),
            fetcher: Arc::new(Fetcher::new(fetch)),
            key,
            policy,
            progress: OtaStatus::default(),
            busy: false,
            cancel: Arc::new(AtomicBool::new(false)),
            events,
        }
    }
}

impl Actor for OtaService {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// The worker thread's end result, sent to the service.
#[derive(Message)]
#[rtype(result = "()")]
struct WorkerDone(Result<Manifest, OtaError>);

impl Handler<CheckOta> for OtaService {
    type Result = Result<(), OtaError>;

    fn handle(&mut self, _: CheckOta, ctx: &mut Context<Self>) -> Self::Result {
        if self.busy {
            return Err(OtaError::Busy("a check is under way".into()));
        }
        self.busy = true;
        self.progress.last_error = None;
        let (ops, fetcher, key, policy) =
            (self.ops.clone(), self.fetcher.clone(), self.key, self.policy.clone());
        let (cancel, addr) = (self.cancel.clone(), ctx.address());
        let spawned = std::thread::Builder::new().name("lwsys-ota".into()).spawn(move || {
            // The final event (done or failed) goes out only once the ops
            // are unlocked and the result is in, so whoever sees it can use
            // the service at once.
            let mut last = None;
            let result = match ops.lock() {
                Ok(mut ops) => {
                    check_and_install(ops.as_mut(), &fetcher, &key, &policy, &cancel, &mut |e| {
                        match e.phase {
                            OtaPhase::Done | OtaPhase::Failed => last = Some(e),
                            _ => addr.do_send(e),
                        }
                    })
                }
                Err(_) => Err(OtaError::Io("ota ops poisoned".into())),
            };
            // No newer release is not a failure: back to idle.
            let phase = match &result {
                Err(OtaError::NotNewer { .. } | OtaError::RolledBack(_)) => OtaPhase::Idle,
                _ => OtaPhase::Failed,
            };
            let last = last.unwrap_or(OtaEvent { phase, percent: 0, bytes: 0 });
            addr.do_send(WorkerDone(result));
            addr.do_send(last);
        });
        if let Err(e) = spawned {
            self.busy = false;
            return Err(OtaError::Io(format!("spawn ota worker: {e}")));
        }
        Ok(())
    }
}

impl Handler<ReportCurrent> for OtaService {
    type Result = Result<OtaStatus, OtaError>;

    fn handle(&mut self, msg: ReportCurrent, ctx: &mut Context<Self>) -> Self::Result {
        let Ok(mut ops) = self.ops.try_lock() else {
            return Err(OtaError::Busy("an install is under way".into()));
        };
        ops.report_current(msg.bad)?;
        drop(ops);
        slog::info!(self.log, "current boot reported"; "bad" => msg.bad);
        Ok(self.handle(GetOtaStatus, ctx).0)
    }
}

impl Handler<GetOtaStatus> for OtaService {
    type Result = actix::MessageResult<GetOtaStatus>;

    fn handle(&mut self, _: GetOtaStatus, _: &mut Context<Self>) -> Self::Result {
        // While the worker holds the ops, the slots are being written:
        // answer with the progress alone rather than block the actor.
        let mut s = match self.ops.try_lock() {
            Ok(ops) => ops.status(),
            Err(_) => OtaStatus::default(),
        };
        s.phase = self.progress.phase;
        s.percent = self.progress.percent;
        s.bytes = self.progress.bytes;
        s.last_error = self.progress.last_error.clone();
        actix::MessageResult(s)
    }
}

impl Handler<OtaEvent> for OtaService {
    type Result = ();

    fn handle(&mut self, e: OtaEvent, _: &mut Context<Self>) {
        self.progress.phase = e.phase;
        self.progress.percent = e.percent;
        self.progress.bytes = e.bytes;
        if let Some(r) = &self.events {
            r.do_send(e);
        }
    }
}

impl Handler<WorkerDone> for OtaService {
    type Result = ();

    fn handle(&mut self, done: WorkerDone, ctx: &mut Context<Self>) {
        self.busy = false;
        match done.0 {
            Ok(m) => {
                slog::info!(self.log, "update installed"; "unixtime" => m.unixtime, "reset" => m.reset);
            }
            Err(e @ (OtaError::NotNewer { .. } | OtaError::RolledBack(_))) => {
                slog::debug!(self.log, "no update"; "why" => %e);
            }
            Err(e) => {
                slog::warn!(self.log, "update check failed"; "error" => %e);
                self.progress.last_error = Some(e.to_string());
            }
        }
        if self.cancel.load(Ordering::Relaxed) {
            ctx.stop();
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testserver;
