//! OTA updates in the lws_ota model: the platform ops trait ([`OtaOps`]),
//! and the library pieces `OtaService` is built from.
//!
//! The flow, all blocking and meant for the service's own worker thread:
//! [`fetch::Fetcher::manifest`] -> [`manifest::verify_manifest`] ->
//! (consent, by the caller) -> [`pipeline::install`], which streams
//! HTTP -> gunzip -> SHA-512 -> [`OtaOps::write`] and calls
//! [`OtaOps::finalize`] only once the hash and size match.
//! [`slots::SlotDir`] is the default A/B platform; [`sign`](mod@sign) is the issuer's
//! side (`lwsysctl ota keygen` / `ota publish`).
//!
//! [`OtaService`] runs the flow on the event loop: at start the platform's
//! `on_boot` (trial counting, rollback); a trial boot is confirmed once
//! stable at OPERATIONAL and healthy, else rolled back (`ota/health.rs`,
//! `confirm = "auto"`). On reaching OPERATIONAL it schedules the first check
//! 30 s + up to 15 s later, then one every `periodic_check_secs`. A check
//! runs on the worker thread (`ota/worker.rs`); a newer release goes to the
//! update policy (`ota/gate.rs`: windows, deferral budget, security
//! deadline), which may make it wait, then asks the system for
//! `Cycle::EnterModal` or a variant past deferrals (refused: retried every
//! second for 30 s), is
//! installed on the worker, and either reboots (the manifest's `reset`) or
//! leaves MODAL_UPDATING; any failure leaves it too. The steps between
//! messages are in `ota/flow.rs`; the worker owns the ops. A download has
//! an overall deadline (`FetchConfig::download_timeout`) besides the
//! per-read timeout, and with `OtaConfig::download_cache` its compressed
//! bytes are saved so that the next attempt, even after a restart,
//! resumes it ([`resume`]). A manifest with a signed chunk index goes
//! through [`chunked`] instead: every chunk verified before it is written,
//! chunks the running image already has copied locally, and a resume from
//! the re-hashed partial image (the worker calls
//! [`chunked::install_auto`], which picks the path).
//!
//! The service is supervised: when it dies, its `Drop` cancels the install
//! in flight and closes the worker's queue; the replacement
//! ([`OtaService::restart`]) takes the ops back through the
//! [`OtaHandoff`] by joining the old worker thread on its own new one, so
//! two workers never use the ops at once. It does not repeat `on_boot` (no
//! boot happened), and it leaves a MODAL_UPDATING its predecessor held.

pub mod chunked;
pub mod config;
pub mod fetch;
mod flow;
mod gate;
mod handoff;
mod health;
pub mod issuers;
/// The issuer's keys as JWKs: [`lwsys_manifest::jwk`], re-exported.
pub use lwsys_manifest::jwk;
/// The signed manifest and its checks: [`lwsys_manifest::jws`], re-exported
/// under its old name.
pub use lwsys_manifest::jws as manifest;
pub mod journal;
pub mod ops;
pub mod pipeline;
pub mod policy;
pub mod policy_store;
pub mod resume;
pub mod rollback;
/// The issuer's side: [`lwsys_manifest::publish`](mod@lwsys_manifest::publish),
/// re-exported under its old name.
pub mod sign {
    pub use lwsys_manifest::publish::*;
}
pub mod slots;
mod worker;

pub use config::{OtaConfig, OtaLinks};
pub use fetch::{tls_from_ca_file, tls_with_verifier, FetchConfig, Fetcher};
pub use lwsys_manifest::publish::publish;
pub use lwsys_manifest::{keygen, parse_private_jwk, parse_public_jwk};
pub use lwsys_manifest::{verify_manifest, Manifest, ManifestPolicy};
pub use lwsys_manifest::{IssuerKey, VerifyingKey};
pub use lwsys_messages::ota::{OtaError, OtaEvent, OtaPhase, OtaStatus, SlotStatus};
use lwsys_messages::ota::{PolicyDecision, Waiting};
pub use ops::OtaOps;
pub use pipeline::{check, check_and_install, install, install_resumable};
pub use resume::DownloadCache;
pub use slots::{Bootloader, SlotDir};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use lwsys_messages::lifecycle::{Crash, Stop, WatchDeath};
use lwsys_messages::ota::{CheckOta, CheckOutcome, GetOtaStatus, ReportCurrent};
use lwsys_messages::state::{Changed, GetState, StateChanges, StateReading, SystemState};
use rand::Rng as _;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::lifecycle::DeathNotice;
use handoff::OpsSource;
pub use handoff::{OtaHandoff, ReopenOps};
use worker::{Job, Slots, Worker};

/// The OTA service. See the module docs for the flow.
pub struct OtaService {
    log: slog::Logger,
    cfg: OtaConfig,
    links: OtaLinks,
    /// Until the worker starts (in `started`); then the worker owns them.
    pending_worker: Option<(OpsSource, IssuerKey, crossbeam_channel::Receiver<Job>)>,
    handoff: OtaHandoff,
    /// Set when this service replaced a dead one: where to read the state.
    restarted: Option<Recipient<GetState>>,
    /// A restarted service before its own first check: a walk to
    /// MODAL_UPDATING its predecessor asked for (parked by a notifier) may
    /// still arrive, and nobody else would leave it.
    predecessor_walk: bool,
    death: DeathNotice,
    jobs: crossbeam_channel::Sender<Job>,
    cancel: Arc<AtomicBool>,
    periodic: Duration,
    /// The slots part of the status, as the worker last reported it.
    slots: OtaStatus,
    /// Phase, percent, bytes and last error.
    progress: OtaStatus,
    run: Option<Run>,
    operational_seen: bool,
    timer: Option<SpawnHandle>,
    /// Set once the system reached TIME_VALID (see `issuers`).
    clock_valid: Arc<AtomicBool>,
    /// The update policy's record of the release on offer (saved).
    policy_rec: policy::ReleaseRecord,
    /// What the release found waits for (`ota.status` `waiting`).
    waiting: Option<Waiting>,
    /// The policy's last decision in this check, for the `ota` events.
    decision: Option<PolicyDecision>,
    /// The health gate of a trial boot.
    trial: health::TrialGate,
}

/// A check under way, from the manifest fetch until it settles.
struct Run {
    stage: Stage,
    waiters: Vec<oneshot::Sender<Result<CheckOutcome, OtaError>>>,
    manifest: Option<Manifest>,
    consent_since: Option<Instant>,
    /// How MODAL_UPDATING is asked for (the update policy's entry).
    entry: policy::Entry,
}

/// What [`OtaService::new`] and [`OtaService::restart`] each work out
/// before the service is assembled.
struct Parts {
    log: slog::Logger,
    cfg: OtaConfig,
    links: OtaLinks,
    key: IssuerKey,
    handoff: OtaHandoff,
    periodic: Duration,
    slots: OtaStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Checking,
    AwaitingConsent,
    Installing,
}

impl OtaService {
    /// A service over `ops`, trusting `key` (and `cfg.keyring`'s). Runs the
    /// platform's `on_boot` (trial counting and rollback) right here.
    pub fn new(
        log: &slog::Logger,
        mut ops: Box<dyn OtaOps>,
        key: impl Into<IssuerKey>,
        cfg: OtaConfig,
        links: OtaLinks,
    ) -> Self {
        let key = key.into();
        let log = log.new(slog::o!("service" => "ota"));
        if let Err(e) = ops.on_boot() {
            slog::error!(log, "boot bookkeeping of the slots failed"; "error" => %e);
        }
        let slots = ops.status();
        slog::info!(log, "slots"; "selected" => %slots.selected,
                    "confirmed_unixtime" => slots.confirmed_unixtime,
                    "attempted_unixtime" => slots.attempted_unixtime);
        let periodic =
            cfg.periodic.unwrap_or_else(|| Duration::from_secs(ops.periodic_check_secs().max(1)));
        let handoff = OtaHandoff::default();
        handoff.set_slots(&slots);
        let parts = Parts { log, cfg, links, key, handoff, periodic, slots };
        Self::assemble(parts, OpsSource::Ready(ops), None)
    }

    /// A service replacing a dead one whose [`OtaService::handoff`] this
    /// is: its worker first waits for the old worker to end (the old
    /// service's death cancelled the install in flight) and takes the ops
    /// from it, or calls `reopen` if it cannot. No boot bookkeeping. Once
    /// started it reads the system state from `state`: at OPERATIONAL it
    /// arms the first check as after a boot; in (AWAITING_)MODAL_UPDATING
    /// (an install the old service held) it leaves it. Without
    /// `cfg.periodic` the period is 86400 s (the ops are not at hand to
    /// ask).
    pub fn restart(
        log: &slog::Logger,
        handoff: OtaHandoff,
        reopen: ReopenOps,
        key: impl Into<IssuerKey>,
        cfg: OtaConfig,
        links: OtaLinks,
        state: Recipient<GetState>,
    ) -> Self {
        let key = key.into();
        let log = log.new(slog::o!("service" => "ota"));
        let slots = handoff.lock().slots.clone();
        let periodic = cfg.periodic.unwrap_or(Duration::from_secs(86_400));
        let parts = Parts { log, cfg, links, key, handoff, periodic, slots };
        Self::assemble(parts, OpsSource::Previous(reopen), Some(state))
    }

    /// The service both constructors make: a fresh one, or (with the
    /// `state` to read) one replacing a dead predecessor.
    fn assemble(p: Parts, ops: OpsSource, restarted: Option<Recipient<GetState>>) -> Self {
        let (jobs, rx) = crossbeam_channel::unbounded();
        let (policy_rec, unreadable) = p.cfg.policy_store.load();
        if let Some(why) = unreadable {
            slog::warn!(p.log, "update policy state unreadable; starting afresh"; "error" => crate::LogSafe(&why));
        }
        Self {
            log: p.log,
            cfg: p.cfg,
            links: p.links,
            pending_worker: Some((ops, p.key, rx)),
            handoff: p.handoff,
            predecessor_walk: restarted.is_some(),
            restarted,
            death: DeathNotice::new(lwsys_messages::supervisor::ServiceKind::Ota),
            jobs,
            cancel: Arc::new(AtomicBool::new(false)),
            periodic: p.periodic,
            slots: p.slots,
            progress: OtaStatus::default(),
            run: None,
            operational_seen: false,
            timer: None,
            clock_valid: Arc::new(AtomicBool::new(false)),
            policy_rec,
            waiting: None,
            decision: None,
            trial: health::TrialGate::default(),
        }
    }

    /// What a replacement of this service needs ([`OtaService::restart`]).
    pub fn handoff(&self) -> OtaHandoff {
        self.handoff.clone()
    }

    /// After a restart: take up the system where the old service left it.
    fn resync(&mut self, reading: StateReading, ctx: &mut Context<Self>) {
        self.note_clock(reading.state);
        match reading.state {
            // Either way nobody waits for it: back to OPERATIONAL. A walk
            // still parked that later reaches MODAL_UPDATING is left by
            // `Changed` too.
            SystemState::ModalUpdating | SystemState::AwaitingModalUpdating => {
                self.leave_predecessors_modal(ctx);
            }
            SystemState::Operational => {
                let now = Changed { from: reading.state, to: reading.state };
                <Self as Handler<Changed>>::handle(self, now, ctx);
            }
            _ => {}
        }
    }

    /// MODAL_UPDATING held for the dead service: nobody will install, so
    /// give it back (the next check comes a period later).
    fn leave_predecessors_modal(&mut self, ctx: &mut Context<Self>) {
        if self.run.is_some() || !self.predecessor_walk {
            return;
        }
        slog::warn!(self.log, "leaving the MODAL_UPDATING the dead ota service held");
        self.progress.last_error = Some("the ota service was restarted".into());
        self.progress.last_error_kind = Some("restarted".into());
        self.set_phase(OtaPhase::Failed, 0, 0);
        self.operational_seen = true;
        self.leave_modal(ctx);
        let periodic = self.periodic;
        self.arm(periodic, ctx);
    }
}

impl Drop for OtaService {
    fn drop(&mut self) {
        // Also when a handler panicked: the install in flight stops at its
        // next read, so the replacement's worker is not kept waiting.
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl Actor for OtaService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some((source, key, rx)) = self.pending_worker.take() else { return };
        let (keyring, clock_valid) = (self.cfg.keyring.clone(), self.clock_valid.clone());
        let fetcher = Fetcher::new(self.cfg.fetch.clone());
        let policy = self.cfg.policy.clone();
        let cancel = self.cancel.clone();
        let addr = ctx.address();
        let cache = self.cfg.download_cache.clone();
        let handoff = self.handoff.clone();
        let log = self.log.clone();
        let mut slot = self.handoff.lock();
        let previous = slot.worker.take();
        let spawned = std::thread::Builder::new().name("lwsys-ota".into()).spawn(move || {
            let ops = source.take(previous, &log)?;
            let keys = issuers::Issuers::open(key, keyring.as_deref(), clock_valid);
            let worker = Worker { ops, fetcher, keys, policy, cancel, addr, cache, handoff };
            Some(worker.run(rx))
        });
        match spawned {
            Ok(h) => slot.worker = Some(h),
            Err(e) => slog::crit!(self.log, "cannot start the ota worker"; "error" => %e),
        }
        drop(slot);
        self.arm_trial_gate(ctx);
        if let Some(state) = self.restarted.clone() {
            ctx.spawn(state.send(GetState).into_actor(self).map(|res, act, ctx| {
                if let Ok(reading) = res {
                    act.resync(reading, ctx);
                }
            }));
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl Handler<CheckOta> for OtaService {
    type Result = ResponseFuture<Result<CheckOutcome, OtaError>>;

    fn handle(&mut self, _: CheckOta, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.start_check(Some(tx), ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(OtaError::Cancelled)) })
    }
}

impl Handler<ReportCurrent> for OtaService {
    type Result = ResponseActFuture<Self, Result<OtaStatus, OtaError>>;

    fn handle(&mut self, msg: ReportCurrent, _: &mut Context<Self>) -> Self::Result {
        if self.run.as_ref().is_some_and(|r| r.stage == Stage::Installing) {
            let e = OtaError::Busy("an install is under way".into());
            return Box::pin(actix::fut::ready(Err(e)));
        }
        // Reported by hand: the health gate has nothing more to decide.
        self.trial.watching = false;
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Job::Report { bad: msg.bad, reply: Some(tx) }).is_err() {
            return Box::pin(actix::fut::ready(Err(OtaError::Io("ota worker is gone".into()))));
        }
        Box::pin(async move { rx.await.unwrap_or(Err(OtaError::Cancelled)) }.into_actor(self).map(
            move |res, act, _| {
                let slots = res?;
                slog::info!(act.log, "current boot reported"; "bad" => msg.bad,
                            "selected" => %slots.selected);
                act.slots = slots;
                Ok(act.status())
            },
        ))
    }
}

impl Handler<GetOtaStatus> for OtaService {
    type Result = MessageResult<GetOtaStatus>;

    fn handle(&mut self, _: GetOtaStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status())
    }
}

impl Handler<StateChanges> for OtaService {
    type Result = ();

    fn handle(&mut self, msg: StateChanges, ctx: &mut Context<Self>) {
        for c in msg.0.iter() {
            <Self as Handler<Changed>>::handle(self, *c, ctx);
        }
    }
}

impl Handler<Changed> for OtaService {
    type Result = ();

    fn handle(&mut self, msg: Changed, ctx: &mut Context<Self>) {
        self.note_clock(msg.to);
        self.trial_state_changed(msg, ctx);
        if msg.to == SystemState::ModalUpdating {
            if self.run.is_none() && self.predecessor_walk {
                return self.leave_predecessors_modal(ctx);
            }
            // A walk a notifier deferred may go on by itself once it
            // resumes: that is consent too.
            return self.consent_given(ctx);
        }
        if msg.to != SystemState::Operational || self.operational_seen {
            return;
        }
        self.operational_seen = true;
        if self.run.is_none() && self.timer.is_none() {
            let jitter_ms = u64::try_from(self.cfg.first_check_jitter.as_millis()).unwrap_or(0);
            let jitter = Duration::from_millis(rand::thread_rng().gen_range(0..=jitter_ms));
            let first = self.cfg.first_check + jitter;
            self.arm(first, ctx);
        }
    }
}

impl Handler<OtaEvent> for OtaService {
    type Result = ();

    fn handle(&mut self, e: OtaEvent, _: &mut Context<Self>) {
        // A late event from an install that already settled is ignored.
        if self.run.as_ref().is_some_and(|r| r.stage == Stage::Installing) {
            if e.phase == OtaPhase::Failed {
                return; // the outcome carries the error
            }
            self.take_counts(&e);
            self.set_phase(e.phase, e.percent, e.bytes);
        }
    }
}

impl Handler<Slots> for OtaService {
    type Result = ();

    fn handle(&mut self, msg: Slots, _: &mut Context<Self>) {
        self.slots = msg.0;
    }
}

impl Handler<WatchDeath> for OtaService {
    type Result = ();

    fn handle(&mut self, msg: WatchDeath, _ctx: &mut Self::Context) {
        self.death.watch(msg.0);
    }
}

impl Handler<Stop> for OtaService {
    type Result = ();

    /// Its system is torn down: stop without asking for a restart.
    fn handle(&mut self, _msg: Stop, ctx: &mut Self::Context) {
        self.death.forget();
        ctx.stop();
    }
}

impl Handler<Crash> for OtaService {
    type Result = ();

    /// The fault hook: fail as a bug in a handler would.
    fn handle(&mut self, _msg: Crash, _ctx: &mut Self::Context) {
        panic!("fault injected into the OtaService (debug.crash)");
    }
}

#[cfg(test)]
mod chunked_tests;
#[cfg(test)]
mod resume_tests;
#[cfg(test)]
mod service_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testserver;
#[cfg(test)]
mod tls_tests;
