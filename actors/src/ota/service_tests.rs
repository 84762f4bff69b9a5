//! Tests of `OtaService`'s flow against a stub supervisor: scheduling after
//! OPERATIONAL, consent retries, install, reboot, leave-modal on failure,
//! and auto-confirm of a trial boot.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use lwsys_messages::ota::{CheckOta, GetOtaStatus, ReportCurrent, RollbackCause};
use lwsys_messages::protocol::SystemEvent;
use lwsys_messages::state::{Changed, GetState, StateReading, SystemState};
use lwsys_messages::supervisor::{Cycle, WalkError, WalkReport, WalkResult};
use serde_json::Value;
use tokio::sync::mpsc;

use super::tests::{log, Fixture, VARIANT};
use super::*;

/// Answers `Cycle`s as the test says: deny the first `deny` EnterModals,
/// then allow; records every cycle.
struct StubSupervisor {
    /// Deny the health round as this notifier.
    unhealthy: Option<&'static str>,
    deny: u32,
    /// Defer every EnterModal instead (the walk parks).
    defer: bool,
    cycles: Arc<Mutex<Vec<Cycle>>>,
}

impl Actor for StubSupervisor {
    type Context = Context<Self>;
}

impl Handler<Cycle> for StubSupervisor {
    type Result = MessageResult<Cycle>;

    fn handle(&mut self, c: Cycle, _: &mut Context<Self>) -> Self::Result {
        self.cycles.lock().unwrap().push(c);
        let r: WalkResult = match c {
            Cycle::HealthCheck if self.unhealthy.is_some() => Err(WalkError::Denied {
                by: self.unhealthy.unwrap_or_default().into(),
                reason: "database corrupt".into(),
                target: SystemState::Operational,
                state: SystemState::Operational,
            }),
            Cycle::EnterModal if self.defer => Ok(WalkReport {
                state: SystemState::AwaitingModalUpdating,
                reached: false,
                pending: Some(lwsys_messages::supervisor::Pending {
                    by: "slow-app".into(),
                    reason: "saving".into(),
                    target: SystemState::ModalUpdating,
                    since_us: 0,
                }),
            }),
            Cycle::EnterModal if self.deny > 0 => {
                self.deny -= 1;
                Err(WalkError::Denied {
                    by: "busy-app".into(),
                    reason: "playing".into(),
                    target: SystemState::ModalUpdating,
                    state: SystemState::AwaitingModalUpdating,
                })
            }
            Cycle::EnterModal | Cycle::EnterModalPastDefer | Cycle::ForceModal => {
                Ok(WalkReport { state: SystemState::ModalUpdating, reached: true, pending: None })
            }
            _ => Ok(WalkReport { state: SystemState::Operational, reached: true, pending: None }),
        };
        MessageResult(r)
    }
}

/// Forwards `ota` events to a channel.
struct Tap(mpsc::UnboundedSender<Value>);

impl Actor for Tap {
    type Context = Context<Self>;
}

impl Handler<SystemEvent> for Tap {
    type Result = ();

    fn handle(&mut self, e: SystemEvent, _: &mut Context<Self>) {
        let _ = self.0.send(e.to_json());
    }
}

struct Harness {
    svc: Addr<OtaService>,
    cycles: Arc<Mutex<Vec<Cycle>>>,
    reboots: Arc<AtomicU32>,
    events: mpsc::UnboundedReceiver<Value>,
}

impl Harness {
    fn start(f: &Fixture, deny: u32, tune: impl FnOnce(&mut OtaConfig)) -> Self {
        let cycles = Arc::new(Mutex::new(Vec::new()));
        let defer = deny == DEFER;
        let unhealthy = (deny == UNHEALTHY).then_some("db-watch");
        let deny = if defer || unhealthy.is_some() { 0 } else { deny };
        let sup = StubSupervisor { unhealthy, deny, defer, cycles: cycles.clone() }.start();
        let (tx, events) = mpsc::unbounded_channel();
        let tap = Tap(tx).start();
        let reboots = Arc::new(AtomicU32::new(0));
        let r = reboots.clone();
        let links = OtaLinks {
            modal: sup.recipient(),
            events: Some(tap.recipient()),
            reboot: Arc::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }),
        };
        let mut fetch = FetchConfig::new(&f.server.url(), VARIANT);
        fetch.read_timeout = Duration::from_secs(5);
        let mut cfg = OtaConfig::new(fetch, ManifestPolicy::new(VARIANT));
        tune(&mut cfg);
        let svc = OtaService::new(&log(), Box::new(f.slots()), f.public, cfg, links).start();
        Self { svc, cycles, reboots, events }
    }

    fn cycles(&self) -> Vec<Cycle> {
        self.cycles.lock().unwrap().clone()
    }

    /// The next `ota` event saying how a trial boot ended.
    async fn trial(&mut self) -> Value {
        loop {
            let e = tokio::time::timeout(Duration::from_secs(30), self.events.recv())
                .await
                .expect("no trial event within 30 s")
                .expect("events closed");
            if e.get("trial").is_some() {
                return e;
            }
        }
    }

    /// The next `ota` event whose phase is one of `phases`.
    async fn phase(&mut self, phases: &[&str]) -> Value {
        loop {
            let e = self.events.recv().await.unwrap();
            if phases.iter().any(|p| e["phase"] == *p) {
                return e;
            }
        }
    }
}

/// `Harness::start`'s `deny` value that makes the stub defer instead.
const DEFER: u32 = u32::MAX - 1;
/// Harness::start's `deny` for a supervisor whose health round a notifier
/// denies.
const UNHEALTHY: u32 = u32::MAX - 2;

fn operational() -> Changed {
    Changed { from: SystemState::OneTimeUpdates, to: SystemState::Operational }
}

#[actix_rt::test]
async fn first_check_comes_30_to_45_s_after_operational_then_every_period() {
    let f = Fixture::new();
    let mut h = Harness::start(&f, 0, |c| c.periodic = Some(Duration::from_secs(600)));
    tokio::time::pause();
    let t0 = tokio::time::Instant::now();
    h.svc.send(operational()).await.unwrap();
    h.phase(&["checking"]).await;
    let first = t0.elapsed();
    assert!(first >= Duration::from_secs(30) && first <= Duration::from_secs(45), "{first:?}");
    // Nothing published: the check fails (404) and the next is armed.
    h.phase(&["failed", "idle"]).await;
    let t1 = tokio::time::Instant::now();
    h.phase(&["checking"]).await;
    let gap = t1.elapsed();
    assert!(gap >= Duration::from_secs(599) && gap <= Duration::from_secs(601), "{gap:?}");
    assert!(h.cycles().is_empty(), "no consent asked without a release");
}

#[actix_rt::test]
async fn checks_are_armed_wake_latency_early() {
    let f = Fixture::new();
    let mut h = Harness::start(&f, 0, |c| {
        c.first_check_jitter = Duration::ZERO;
        c.wake_latency = Duration::from_secs(10);
    });
    tokio::time::pause();
    let t0 = tokio::time::Instant::now();
    h.svc.send(operational()).await.unwrap();
    h.phase(&["checking"]).await;
    assert_eq!(t0.elapsed().as_secs(), 20);
}

#[actix_rt::test]
async fn newer_release_is_installed_with_consent_then_reboots_when_reset() {
    let f = Fixture::new();
    f.publish(1000, 300_000);
    let mut h = Harness::start(&f, 0, |_| {});
    let out = h.svc.send(CheckOta).await.unwrap().unwrap();
    assert!(out.updated && out.reboot, "{out:?}");
    assert_eq!(out.unixtime, Some(1000));
    assert_eq!(h.cycles(), vec![Cycle::EnterModal]);
    assert_eq!(h.reboots.load(Ordering::SeqCst), 1);
    let s = h.svc.send(GetOtaStatus).await.unwrap();
    assert_eq!((s.phase, s.percent, s.selected.as_str()), (OtaPhase::Done, 100, "b"));
    assert_eq!((s.attempted_unixtime, s.confirmed_unixtime), (1000, 0));
    // Progress was seen, 100 % only at done.
    let mut last = 0;
    while let Ok(e) = h.events.try_recv() {
        let pct = e["percent"].as_u64().unwrap();
        if e["phase"] != "done" {
            assert!(pct < 100, "{e}");
        }
        last = pct;
    }
    assert_eq!(last, 100);
    let s = h.svc.send(ReportCurrent { bad: false }).await.unwrap().unwrap();
    assert_eq!(s.confirmed_unixtime, 1000);
}

#[actix_rt::test]
async fn release_without_reset_leaves_modal_instead_of_rebooting() {
    let f = Fixture::new();
    let (mut m, _) = f.publish(1000, 10_000);
    m.reset = false;
    f.write_manifest(&m);
    let h = Harness::start(&f, 0, |_| {});
    let out = h.svc.send(CheckOta).await.unwrap().unwrap();
    assert!(out.updated && !out.reboot);
    // The leave-modal request is sent after the reply; a status round trip
    // lets it through.
    h.svc.send(GetOtaStatus).await.unwrap();
    assert_eq!(h.cycles(), vec![Cycle::EnterModal, Cycle::LeaveModal]);
    assert_eq!(h.reboots.load(Ordering::SeqCst), 0);
}

#[actix_rt::test]
async fn refused_consent_is_retried_every_second_for_30_s_then_leaves_modal() {
    let f = Fixture::new();
    f.publish(1000, 10_000);
    let mut h = Harness::start(&f, u32::MAX, |_| {});
    tokio::time::pause();
    let t0 = tokio::time::Instant::now();
    let id = h.svc.send(CheckOta);
    let e = h.phase(&["awaiting_consent"]).await;
    assert_eq!(e["percent"], 0);
    let err = id.await.unwrap().unwrap_err();
    assert!(matches!(err, OtaError::ConsentRefused(ref r) if r.contains("busy-app")), "{err:?}");
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_secs(30) && waited < Duration::from_secs(32), "{waited:?}");
    h.svc.send(GetOtaStatus).await.unwrap();
    let cycles = h.cycles();
    let asks = cycles.iter().filter(|c| **c == Cycle::EnterModal).count();
    assert!((30..=32).contains(&asks), "{asks} attempts");
    assert_eq!(cycles.last(), Some(&Cycle::LeaveModal));
    f.assert_untouched(&f.slots());
    let s = h.svc.send(GetOtaStatus).await.unwrap();
    assert!(s.last_error.unwrap().contains("consent"));
}

#[actix_rt::test]
async fn consent_given_after_refusals_lets_the_update_proceed() {
    let f = Fixture::new();
    f.publish(1000, 10_000);
    let h = Harness::start(&f, 3, |_| {});
    tokio::time::pause();
    let out = h.svc.send(CheckOta).await.unwrap().unwrap();
    assert!(out.updated);
    assert_eq!(h.cycles(), vec![Cycle::EnterModal; 4]);
}

#[actix_rt::test]
async fn deferred_walk_that_goes_on_by_itself_counts_as_consent() {
    let f = Fixture::new();
    f.publish(1000, 10_000);
    let mut h = Harness::start(&f, DEFER, |_| {});
    let check = h.svc.send(CheckOta);
    let e = h.phase(&["awaiting_consent"]).await;
    assert_eq!(e["phase"], "awaiting_consent");
    // The notifier resumed; the parked walk entered MODAL_UPDATING.
    loop {
        let s = h.svc.send(GetOtaStatus).await.unwrap();
        if s.last_error.is_some_and(|m| m.contains("slow-app deferred")) {
            break;
        }
        tokio::task::yield_now().await;
    }
    let modal =
        Changed { from: SystemState::AwaitingModalUpdating, to: SystemState::ModalUpdating };
    h.svc.send(modal).await.unwrap();
    let out = check.await.unwrap().unwrap();
    assert!(out.updated);
    assert_eq!(h.reboots.load(Ordering::SeqCst), 1);
}

#[actix_rt::test]
async fn failed_install_leaves_modal_and_the_active_slot_untouched() {
    let f = Fixture::new();
    let (mut m, _) = f.publish(1000, 10_000);
    m.sha512 = "ab".repeat(64);
    f.write_manifest(&m);
    let h = Harness::start(&f, 0, |_| {});
    let err = h.svc.send(CheckOta).await.unwrap().unwrap_err();
    assert_eq!(err, OtaError::HashMismatch);
    let s = h.svc.send(GetOtaStatus).await.unwrap();
    assert_eq!(s.phase, OtaPhase::Failed);
    assert_eq!(h.cycles(), vec![Cycle::EnterModal, Cycle::LeaveModal]);
    assert_eq!(h.reboots.load(Ordering::SeqCst), 0);
    f.assert_untouched(&f.slots());
}

#[actix_rt::test]
async fn nothing_newer_answers_not_updated_without_asking_consent() {
    let f = Fixture::new();
    f.publish(1000, 10_000);
    let h = Harness::start(&f, 0, |_| {});
    assert!(h.svc.send(CheckOta).await.unwrap().unwrap().updated);
    h.svc.send(ReportCurrent { bad: false }).await.unwrap().unwrap();
    let out = h.svc.send(CheckOta).await.unwrap().unwrap();
    assert!(!out.updated && out.reason.is_some(), "{out:?}");
    assert_eq!(h.cycles(), vec![Cycle::EnterModal]);
}

/// Installs release 1000 into a fresh fixture so the next boot is a trial.
fn trial_fixture() -> Fixture {
    let f = Fixture::new();
    f.publish(1000, 10_000);
    let mut slots = f.slots();
    f.run(&mut slots).unwrap();
    f
}

#[actix_rt::test]
async fn operational_on_a_trial_slot_confirms_it_when_auto_once_stable() {
    let f = trial_fixture();
    // The stable time (confirm_after) is what this test waits for; short.
    let mut h = Harness::start(&f, 0, |c| c.confirm_after = Duration::from_millis(50));
    let s = h.svc.send(GetOtaStatus).await.unwrap();
    assert_eq!(s.slots[1].status, SlotStatus::Trial, "on_boot ran, still a trial");
    h.svc.send(operational()).await.unwrap();
    // Not at once: the trial is still unconfirmed right after OPERATIONAL.
    let s = h.svc.send(GetOtaStatus).await.unwrap();
    assert_eq!(s.slots[1].status, SlotStatus::Trial);
    let e = h.trial().await;
    assert_eq!(e["trial"], "confirmed", "{e}");
    assert_eq!(h.cycles(), vec![Cycle::HealthCheck], "the notifiers' health round");
    let s = h.svc.send(GetOtaStatus).await.unwrap();
    assert_eq!((s.selected.as_str(), s.slots[1].status), ("b", SlotStatus::Good));
    assert_eq!(s.confirmed_unixtime, 1000);
    assert_eq!(h.reboots.load(Ordering::SeqCst), 0);
}

#[actix_rt::test]
async fn a_failing_health_command_rolls_the_trial_back_with_its_reason_and_reboots() {
    let f = trial_fixture();
    let mut h = Harness::start(&f, 0, |c| {
        c.confirm_after = Duration::from_millis(20);
        c.health_commands = vec![vec!["/bin/true".into()], vec!["/bin/false".into()]];
    });
    h.svc.send(operational()).await.unwrap();
    let e = h.trial().await;
    assert_eq!(e["trial"], "rolled_back", "{e}");
    assert_eq!(e["rollback"]["cause"], "health_check", "{e}");
    assert_eq!(e["rollback"]["check"], "/bin/false", "{e}");
    assert_eq!(e["rollback"]["release_unixtime"], 1000, "{e}");
    let s = h.svc.send(GetOtaStatus).await.unwrap();
    assert_eq!((s.selected.as_str(), s.slots[1].status), ("a", SlotStatus::Bad));
    let r = s.last_rollback.unwrap();
    assert_eq!((r.cause, r.check.as_deref()), (RollbackCause::HealthCheck, Some("/bin/false")));
    assert_eq!(h.reboots.load(Ordering::SeqCst), 1);
    // Durable: the slots reopened say so too.
    let again = f.slots();
    assert_eq!(
        again.state().last_rollback.as_ref().map(|r| r.cause),
        Some(RollbackCause::HealthCheck)
    );
}

#[actix_rt::test]
async fn leaving_operational_before_the_stable_time_rolls_the_trial_back() {
    let f = trial_fixture();
    let mut h = Harness::start(&f, 0, |c| c.confirm_after = Duration::from_secs(3600));
    h.svc.send(operational()).await.unwrap();
    let left = Changed { from: SystemState::Operational, to: SystemState::PolicyInvalid };
    h.svc.send(left).await.unwrap();
    let e = h.trial().await;
    assert_eq!(e["rollback"]["cause"], "left_operational", "{e}");
    assert_eq!(e["rollback"]["state"], "POLICY_INVALID", "{e}");
    assert_eq!(h.reboots.load(Ordering::SeqCst), 1);
}

#[actix_rt::test]
async fn a_trial_never_operational_is_rolled_back_at_the_confirm_deadline() {
    let f = trial_fixture();
    let mut h = Harness::start(&f, 0, |c| c.confirm_timeout = Duration::from_millis(100));
    let e = h.trial().await;
    assert_eq!(e["rollback"]["cause"], "confirm_timeout", "{e}");
    assert!(e["rollback"]["message"].as_str().unwrap().contains("OPERATIONAL not reached"), "{e}");
    let s = h.svc.send(GetOtaStatus).await.unwrap();
    assert_eq!(s.selected, "a");
}

#[actix_rt::test]
async fn manual_confirm_leaves_the_trial_until_reported() {
    let f = trial_fixture();
    let h = Harness::start(&f, 0, |c| c.auto_confirm = false);
    h.svc.send(operational()).await.unwrap();
    h.svc.send(CheckOta).await.unwrap().unwrap_err();
    let s = h.svc.send(GetOtaStatus).await.unwrap();
    assert_eq!(s.slots[1].status, SlotStatus::Trial);
    let s = h.svc.send(ReportCurrent { bad: true }).await.unwrap().unwrap();
    assert_eq!((s.selected.as_str(), s.slots[1].status), ("a", SlotStatus::Bad));
    assert!(s.last_rollback_reason.unwrap().contains("reported bad"));
}

#[actix_rt::test]
async fn trial_never_confirmed_is_rolled_back_by_the_service_on_boot() {
    let f = trial_fixture();
    for _ in 0..3 {
        let h = Harness::start(&f, 0, |c| c.auto_confirm = false);
        let s = h.svc.send(GetOtaStatus).await.unwrap();
        assert_eq!(s.selected, "b");
    }
    let h = Harness::start(&f, 0, |c| c.auto_confirm = false);
    let s = h.svc.send(GetOtaStatus).await.unwrap();
    assert_eq!((s.selected.as_str(), s.slots[1].status), ("a", SlotStatus::Bad));
}

/// Platform ops whose first `report_current` waits for the test, and that
/// count calls made while another is still running.
struct GatedOps {
    inner: SlotDir,
    gate: Option<std::sync::mpsc::Receiver<()>>,
    busy: Arc<std::sync::atomic::AtomicBool>,
    overlaps: Arc<AtomicU32>,
    entered: Arc<AtomicU32>,
}

impl OtaOps for GatedOps {
    fn start(&mut self, m: &Manifest) -> Result<(), OtaError> {
        self.inner.start(m)
    }
    fn write(&mut self, chunk: &[u8]) -> Result<(), OtaError> {
        self.inner.write(chunk)
    }
    fn abort(&mut self) -> Result<(), OtaError> {
        self.inner.abort()
    }
    fn finalize(&mut self, m: &Manifest) -> Result<(), OtaError> {
        self.inner.finalize(m)
    }
    fn report_current(&mut self, bad: bool) -> Result<(), OtaError> {
        if self.busy.swap(true, Ordering::SeqCst) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        self.entered.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = self.gate.take() {
            let _ = gate.recv();
        }
        let r = self.inner.report_current(bad);
        self.busy.store(false, Ordering::SeqCst);
        r
    }
    fn last_fw_unixtime(&self) -> u64 {
        self.inner.last_fw_unixtime()
    }
    fn status(&self) -> OtaStatus {
        self.inner.status()
    }
}

/// Answers `GetState` with OPERATIONAL.
struct StubState;

impl Actor for StubState {
    type Context = Context<Self>;
}

impl Handler<GetState> for StubState {
    type Result = MessageResult<GetState>;

    fn handle(&mut self, _: GetState, _: &mut Context<Self>) -> Self::Result {
        MessageResult(StateReading { state: SystemState::Operational, since_us: 0 })
    }
}

#[actix_rt::test]
async fn a_restarted_service_gets_the_ops_only_after_the_dead_ones_worker_is_done() {
    let f = Fixture::new();
    let (open, gate) = std::sync::mpsc::channel();
    let (busy, overlaps, entered) = Default::default();
    let ops = GatedOps {
        inner: f.slots(),
        gate: Some(gate),
        busy: Arc::clone(&busy),
        overlaps: Arc::clone(&overlaps),
        entered: Arc::clone(&entered),
    };
    let sup =
        StubSupervisor { unhealthy: None, deny: 0, defer: false, cycles: Arc::default() }.start();
    let links = OtaLinks { modal: sup.recipient(), events: None, reboot: Arc::new(|| {}) };
    let cfg = OtaConfig::new(f.fetcher_config(), ManifestPolicy::new(VARIANT));
    let old = OtaService::new(&log(), Box::new(ops), f.public, cfg.clone(), links.clone());
    let handoff = old.handoff();
    let old = old.start();
    // The old worker is now inside report_current, holding the ops.
    let stuck = old.send(ReportCurrent { bad: false });
    let stuck = actix::spawn(stuck);
    while entered.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    assert!(old.send(lwsys_messages::lifecycle::Crash).await.is_err(), "the service died");
    let reopened = Arc::new(AtomicU32::new(0));
    let r = reopened.clone();
    let reopen: ReopenOps = Box::new(move || {
        r.fetch_add(1, Ordering::SeqCst);
        Err(OtaError::Io("the old worker's ops must be handed over".into()))
    });
    let state = StubState.start().recipient();
    let new = OtaService::restart(&log(), handoff, reopen, f.public, cfg, links, state).start();
    let asked = actix::spawn(new.send(ReportCurrent { bad: false }));
    // Its status answers at once, from the handed-over slots.
    assert_eq!(new.send(GetOtaStatus).await.unwrap().selected, "a");
    assert_eq!(entered.load(Ordering::SeqCst), 1, "the new worker waits for the old one");
    open.send(()).unwrap();
    let got = asked.await.unwrap().unwrap();
    assert_eq!(got.unwrap().selected, "a");
    assert_eq!(entered.load(Ordering::SeqCst), 2);
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two workers used the ops at once");
    assert_eq!(reopened.load(Ordering::SeqCst), 0);
    // The dead service's request was not answered by it.
    assert!(!matches!(stuck.await, Ok(Ok(Ok(_)))));
}

#[actix_rt::test]
async fn a_spent_deferral_budget_enters_modal_past_the_deferring_notifier() {
    let f = Fixture::new();
    f.publish(1000, 10_000);
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(&f, DEFER, |c| {
        c.update_policy.max_deferrals = Some(2);
        c.policy_store = policy_store::PolicyStore::new(dir.path());
    });
    tokio::time::pause();
    let out = h.svc.send(CheckOta).await.unwrap().unwrap();
    assert!(out.updated, "{out:?}");
    // Two deferred attempts (the budget), then one past the deferral.
    assert_eq!(h.cycles(), vec![Cycle::EnterModal, Cycle::EnterModal, Cycle::EnterModalPastDefer]);
    let decided = loop {
        let e = h.phase(&["awaiting_consent"]).await;
        if e["policy"] == "install_past_defer" {
            break e;
        }
    };
    assert_eq!(decided["waiting"]["for"], "consent", "{decided}");
    // The count is durable, per release.
    let (rec, _) = policy_store::PolicyStore::new(dir.path()).load();
    assert_eq!((rec.release, rec.deferrals), (1000, 2));
}

#[actix_rt::test]
async fn outside_the_windows_the_check_reports_and_the_install_waits() {
    let f = Fixture::new();
    f.publish(1000, 10_000);
    // A window opening two hours from now (UTC), one hour long.
    let now = gate::now_unix();
    let start = (now / 60 % 1440 + 120) % 1440;
    let w = format!(
        "{:02}:{:02}-{:02}:{:02}",
        start / 60,
        start % 60,
        (start + 60) % 1440 / 60,
        start % 60
    );
    let h = Harness::start(&f, 0, |c| c.update_policy.windows = vec![w.parse().unwrap()]);
    let out = h.svc.send(CheckOta).await.unwrap().unwrap();
    assert!(!out.updated && out.reason.as_ref().unwrap().contains("maintenance window"), "{out:?}");
    assert!(h.cycles().is_empty(), "no consent asked: {:?}", h.cycles());
    let s = h.svc.send(GetOtaStatus).await.unwrap();
    let waiting = s.waiting.unwrap();
    assert_eq!((waiting.waits_for, waiting.release), (lwsys_messages::ota::WaitFor::Window, 1000));
    let until = waiting.until_unix.unwrap();
    assert!(until > now + 7000 && until <= now + 7200, "{until} vs {now}");
    f.assert_untouched(&f.slots());
}

#[actix_rt::test]
async fn a_notifier_denying_the_health_round_rolls_the_trial_back_naming_it() {
    let f = trial_fixture();
    let mut h = Harness::start(&f, UNHEALTHY, |c| c.confirm_after = Duration::from_millis(20));
    h.svc.send(operational()).await.unwrap();
    let e = h.trial().await;
    assert_eq!(e["trial"], "rolled_back", "{e}");
    assert_eq!(e["rollback"]["check"], "db-watch", "{e}");
    assert!(e["rollback"]["message"].as_str().unwrap().contains("database corrupt"), "{e}");
    assert_eq!(h.cycles(), vec![Cycle::HealthCheck]);
    assert_eq!(h.reboots.load(Ordering::SeqCst), 1);
}
