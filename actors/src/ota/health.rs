//! The health-gated commit of a trial boot (`confirm = "auto"`): the
//! trial is confirmed only once the system has been OPERATIONAL for
//! `confirm_after` without leaving it, every health command then exits
//! 0 within `health_timeout`, and every notifier then allows the health
//! round (`Cycle::HealthCheck`: consent for OPERATIONAL -> OPERATIONAL,
//! `check: "health"` on the socket; a defer means "not yet" and the round
//! is asked again every `consent_retry`). It is rolled back (recording
//! why, then rebooting through the platform's reboot) when a command
//! fails or a notifier denies, when
//! the system leaves OPERATIONAL for any state but CONTEXT_DESTROYING (a
//! shutdown is no verdict: the next boot counts as another attempt), or
//! when `confirm_timeout` from the service's start passes unconfirmed.
//!
//! Commands run without a shell (argv from config), stdin/stdout/stderr
//! on /dev/null, on one short-lived thread per round, which polls each
//! child and kills it at its timeout, so a hung check cannot hold the
//! trial open beyond `confirm_timeout` nor leave a process behind.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix::prelude::*;
use lwsys_messages::ota::{RollbackCause, RollbackRecord, SlotStatus, TrialOutcome};
use lwsys_messages::state::{Changed, SystemState};
use lwsys_messages::supervisor::{Cycle, WalkError};

use super::worker::Job;
use super::OtaService;

/// Where the health gate of this boot stands.
#[derive(Default)]
pub(super) struct TrialGate {
    /// Whether a trial is being watched (set at start, cleared once
    /// confirmed or rolled back).
    pub(super) watching: bool,
    /// Bumped on every change of state, so that a stable-time timer or a
    /// health round that began before it is ignored.
    epoch: u64,
    stable: Option<SpawnHandle>,
    /// The state last entered, if known.
    pub(super) state: Option<SystemState>,
}

/// A health round's outcome: `Err((check, why))` for the first failure.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct HealthDone {
    epoch: u64,
    result: Result<(), (String, String)>,
}

/// How often a running health command is looked at.
const POLL: Duration = Duration::from_millis(20);

/// Runs `argv` and waits for it at most `timeout`: `Ok` if it exited 0.
fn run_check(argv: &[String], timeout: Duration) -> Result<(), String> {
    let Some((prog, args)) = argv.split_first() else { return Ok(()) };
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("failed: {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("wait: {e}"));
            }
        }
    }
}

impl OtaService {
    /// Whether the selected slot is an unconfirmed trial.
    fn on_trial(&self) -> bool {
        let cur = self.slots.slots.iter().find(|s| s.name == self.slots.selected);
        cur.is_some_and(|s| s.status == SlotStatus::Trial)
    }

    /// At start: watch a trial boot, with its overall deadline.
    pub(super) fn arm_trial_gate(&mut self, ctx: &mut Context<Self>) {
        if !self.cfg.auto_confirm || !self.on_trial() {
            return;
        }
        self.trial.watching = true;
        let timeout = self.cfg.confirm_timeout;
        slog::info!(self.log, "trial boot: confirming once healthy";
                    "stable_s" => self.cfg.confirm_after.as_secs(), "timeout_s" => timeout.as_secs(),
                    "health_commands" => self.cfg.health_commands.len());
        ctx.run_later(timeout, move |act, ctx| {
            if !act.trial.watching {
                return;
            }
            let state = act.trial.state.map(|s| s.to_string());
            let message = match act.trial.state {
                Some(SystemState::Operational) => format!(
                    "not confirmed within {} s (OPERATIONAL, not yet stable and healthy)",
                    timeout.as_secs()
                ),
                Some(s) => {
                    format!("OPERATIONAL not reached within {} s (at {s})", timeout.as_secs())
                }
                None => format!("OPERATIONAL not reached within {} s", timeout.as_secs()),
            };
            act.roll_back_trial(
                RollbackCause::ConfirmTimeout,
                None,
                state.as_deref(),
                &message,
                ctx,
            );
        });
    }

    /// A change of state while a trial is watched.
    pub(super) fn trial_state_changed(&mut self, msg: Changed, ctx: &mut Context<Self>) {
        self.trial.state = Some(msg.to);
        if !self.trial.watching {
            return;
        }
        self.trial.epoch += 1;
        if let Some(h) = self.trial.stable.take() {
            ctx.cancel_future(h);
        }
        match msg.to {
            SystemState::Operational => {
                let epoch = self.trial.epoch;
                self.trial.stable = Some(ctx.run_later(self.cfg.confirm_after, move |act, ctx| {
                    act.trial.stable = None;
                    if act.trial.epoch == epoch && act.trial.watching {
                        act.run_health(epoch, ctx);
                    }
                }));
            }
            SystemState::ContextDestroying => {}
            to if msg.from == SystemState::Operational => {
                let message = format!("left OPERATIONAL for {to} before the trial was confirmed");
                let state = to.to_string();
                self.roll_back_trial(
                    RollbackCause::LeftOperational,
                    None,
                    Some(&state),
                    &message,
                    ctx,
                );
            }
            _ => {}
        }
    }

    /// Stable long enough: run the health commands, off the event loop.
    fn run_health(&mut self, epoch: u64, ctx: &mut Context<Self>) {
        let commands = self.cfg.health_commands.clone();
        if commands.is_empty() {
            return self.health_done(HealthDone { epoch, result: Ok(()) }, ctx);
        }
        let timeout = self.cfg.health_timeout;
        let addr = ctx.address();
        let spawned =
            std::thread::Builder::new().name("lwsys-ota-health".into()).spawn(move || {
                let result = commands.iter().try_for_each(|argv| {
                    run_check(argv, timeout).map_err(|why| (argv.join(" "), why))
                });
                addr.do_send(HealthDone { epoch, result });
            });
        if let Err(e) = spawned {
            let why = format!("cannot start the health checks: {e}");
            self.roll_back_trial(RollbackCause::HealthCheck, None, None, &why, ctx);
        }
    }

    fn health_done(&mut self, msg: HealthDone, ctx: &mut Context<Self>) {
        if !self.trial.watching || msg.epoch != self.trial.epoch {
            return; // the state changed meanwhile; a new round follows
        }
        match msg.result {
            Ok(()) => self.ask_notifiers(msg.epoch, ctx),
            Err((check, why)) => {
                let message = format!("health check {check:?} {why}");
                self.roll_back_trial(RollbackCause::HealthCheck, Some(&check), None, &message, ctx);
            }
        }
    }

    /// The commands passed: the notifiers' health round (`Cycle::HealthCheck`).
    /// Allow from all confirms; a defer asks again after `consent_retry`
    /// (until the confirm deadline); a deny rolls back, naming the notifier.
    fn ask_notifiers(&mut self, epoch: u64, ctx: &mut Context<Self>) {
        let fut = self.links.modal.send(Cycle::HealthCheck);
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            if !act.trial.watching || act.trial.epoch != epoch {
                return; // the state changed meanwhile; a new round follows
            }
            let not_yet = match res {
                Ok(Ok(r)) if r.reached => return act.confirm_trial(ctx),
                Ok(Ok(r)) => match r.pending {
                    Some(p) => format!("{} deferred the health check: {}", p.by, p.reason),
                    None => format!("health check not run (at {})", r.state),
                },
                Ok(Err(WalkError::Denied { by, reason, .. })) => {
                    let message = format!("notifier {by} failed the health check: {reason}");
                    let (cause, check) = (RollbackCause::HealthCheck, Some(&*by));
                    return act.roll_back_trial(cause, check, None, &message, ctx);
                }
                Ok(Err(WalkError::ShuttingDown)) => return,
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            slog::info!(act.log, "trial boot not healthy yet; asking again";
                        "why" => crate::LogSafe(&not_yet));
            ctx.run_later(act.cfg.consent_retry, move |act, ctx| {
                if act.trial.watching && act.trial.epoch == epoch {
                    act.ask_notifiers(epoch, ctx);
                }
            });
        }));
    }

    /// Stable and healthy: confirm the trial.
    fn confirm_trial(&mut self, ctx: &mut Context<Self>) {
        slog::info!(self.log, "trial boot stable and healthy: confirming it");
        self.trial.watching = false;
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.jobs.send(Job::Report { bad: false, reply: Some(tx) }).is_err() {
            return slog::error!(self.log, "cannot confirm: the ota worker is gone");
        }
        ctx.spawn(rx.into_actor(self).map(|res, act, _| match res {
            Ok(Ok(slots)) => {
                act.slots = slots;
                act.emit_trial(Some(TrialOutcome::Confirmed), None);
            }
            Ok(Err(e)) => {
                slog::error!(act.log, "confirm failed"; "error" => crate::LogSafe(&e.to_string()));
            }
            Err(_) => slog::error!(act.log, "confirm failed: the ota worker is gone"),
        }));
    }

    /// Rolls the trial back for `cause`, recording it, then reboots into
    /// the previous good slot.
    fn roll_back_trial(
        &mut self,
        cause: RollbackCause,
        check: Option<&str>,
        state: Option<&str>,
        message: &str,
        ctx: &mut Context<Self>,
    ) {
        if !std::mem::take(&mut self.trial.watching) {
            return;
        }
        if let Some(h) = self.trial.stable.take() {
            ctx.cancel_future(h);
        }
        let release = self.slots.attempted_unixtime;
        let now = crate::time::unix_us() / 1_000_000;
        let reason: RollbackRecord =
            super::rollback::record(cause, release, now, check, state, message);
        slog::warn!(self.log, "trial boot rolled back"; "cause" => ?cause,
                    "reason" => crate::LogSafe(&reason.message));
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.jobs.send(Job::RollBack { reason: reason.clone(), reply: tx }).is_err() {
            slog::error!(self.log, "cannot roll back: the ota worker is gone");
            return;
        }
        ctx.spawn(rx.into_actor(self).map(|res, act, _| match res {
            Ok(Ok(slots)) => {
                act.slots = slots;
                act.emit_trial(Some(TrialOutcome::RolledBack), Some(reason));
                slog::info!(act.log, "rebooting into the previous good slot");
                (act.links.reboot)();
            }
            Ok(Err(e)) => {
                slog::error!(act.log, "rollback failed"; "error" => crate::LogSafe(&e.to_string()));
            }
            Err(_) => slog::error!(act.log, "rollback failed: the ota worker is gone"),
        }));
    }
}

impl Handler<HealthDone> for OtaService {
    type Result = ();

    fn handle(&mut self, msg: HealthDone, ctx: &mut Context<Self>) {
        self.health_done(msg, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_check_passes_on_exit_0_and_fails_otherwise_or_at_its_timeout() {
        assert_eq!(run_check(&argv(&["/bin/true"]), Duration::from_secs(5)), Ok(()));
        let e = run_check(&argv(&["/bin/false"]), Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("failed"), "{e}");
        let e = run_check(&argv(&["/nonexistent/check"]), Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("cannot run"), "{e}");
        // A hung check is killed at its timeout (here 200 ms), not waited for.
        let t = Instant::now();
        let e = run_check(&argv(&["/bin/sleep", "30"]), Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }
}
