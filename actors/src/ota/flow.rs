//! `OtaService`'s flow between messages: starting a check, what its
//! outcome leads to, asking for consent (with retries, the way the update
//! policy says), leaving MODAL_UPDATING, settling a check and arming the
//! next one, and telling subscribers.

use std::time::Duration;

use actix::prelude::*;
use lwsys_messages::ota::{CheckOutcome, OtaError, OtaEvent, OtaPhase, OtaStatus};
use lwsys_messages::protocol::OtaProgress;
use lwsys_messages::protocol::SystemEvent;
use lwsys_messages::state::SystemState;
use lwsys_messages::supervisor::{Cycle, WalkResult};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::gate::entry_cycle;
use super::policy::Entry;
use super::worker::{Checked, Installed, Job};
use super::{OtaService, Run, Stage};

impl OtaService {
    pub(super) fn status(&self) -> OtaStatus {
        let mut s = self.slots.clone();
        s.phase = self.progress.phase;
        s.percent = self.progress.percent;
        s.bytes = self.progress.bytes;
        s.last_error = self.progress.last_error.clone();
        s.last_error_kind = self.progress.last_error_kind.clone();
        s.resumed_from = self.progress.resumed_from;
        s.trusted_kids = self.progress.trusted_kids.clone();
        s.min_unixtime = self.progress.min_unixtime;
        s.counts = self.progress.counts;
        s.waiting = self.waiting;
        s
    }

    /// Takes the install's counters from a worker event.
    pub(super) fn take_counts(&mut self, e: &OtaEvent) {
        let p = &mut self.progress;
        p.resumed_from = e.resumed_from;
        p.counts = e.counts;
    }

    /// Sets the phase and tells the subscribers.
    pub(super) fn set_phase(&mut self, phase: OtaPhase, percent: u8, bytes: u64) {
        self.progress.phase = phase;
        self.progress.percent = percent;
        self.progress.bytes = bytes;
        self.emit();
    }

    pub(super) fn emit(&self) {
        self.emit_trial(None, None);
    }

    /// Tells the subscribers, with how a trial boot just ended if it did.
    pub(super) fn emit_trial(
        &self,
        trial: Option<lwsys_messages::ota::TrialOutcome>,
        rollback: Option<lwsys_messages::ota::RollbackRecord>,
    ) {
        let Some(to) = &self.links.events else { return };
        let p = &self.progress;
        let ev = OtaProgress {
            progress: OtaEvent {
                phase: p.phase,
                percent: p.percent,
                bytes: p.bytes,
                resumed_from: p.resumed_from,
                counts: p.counts,
            },
            error: p.last_error.clone(),
            // The kind goes with the error it names, never alone.
            error_kind: p.last_error.as_ref().and(p.last_error_kind.clone()),
            policy: self.decision,
            waiting: self.waiting,
            trial,
            rollback,
        };
        to.do_send(SystemEvent::Ota(ev));
    }

    pub(super) fn arm(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        let delay = delay.saturating_sub(self.cfg.wake_latency);
        slog::debug!(self.log, "next check"; "in_s" => delay.as_secs());
        self.timer = Some(ctx.run_later(delay, |act, ctx| {
            act.timer = None;
            act.start_check(None, ctx);
        }));
    }

    pub(super) fn start_check(
        &mut self,
        waiter: Option<oneshot::Sender<Result<CheckOutcome, OtaError>>>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(run) = &mut self.run {
            run.waiters.extend(waiter);
            return;
        }
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        // From here on a MODAL_UPDATING is this service's own.
        self.predecessor_walk = false;
        self.run = Some(Run {
            stage: Stage::Checking,
            waiters: waiter.into_iter().collect(),
            manifest: None,
            consent_since: None,
            entry: Entry::Normal,
        });
        self.decision = None;
        self.progress.last_error = None;
        self.progress.last_error_kind = None;
        // A new attempt: the last one's counters no longer apply.
        self.take_counts(&OtaEvent::default());
        self.set_phase(OtaPhase::Checking, 0, 0);
        if self.jobs.send(Job::Check).is_err() {
            self.finish(Err(OtaError::Io("ota worker is gone".into())), ctx);
        }
    }

    /// The check settled: answer its waiters, arm the next periodic check.
    pub(super) fn finish(&mut self, res: Result<CheckOutcome, OtaError>, ctx: &mut Context<Self>) {
        let Some(run) = self.run.take() else { return };
        match &res {
            Ok(o) if o.updated => {}
            Ok(_) => self.set_phase(OtaPhase::Idle, 0, 0),
            Err(e) => {
                self.progress.last_error = Some(e.to_string());
                self.progress.last_error_kind = Some(e.kind().to_owned());
                self.set_phase(OtaPhase::Failed, 0, 0);
            }
        }
        for w in run.waiters {
            let _ = w.send(res.clone());
        }
        if self.operational_seen {
            let periodic = self.periodic;
            self.arm(periodic, ctx);
        }
    }

    pub(super) fn ask_consent(&mut self, ctx: &mut Context<Self>) {
        let entry = self.run.as_ref().map_or(Entry::Normal, |r| r.entry);
        let fut = self.links.modal.send(entry_cycle(entry));
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| act.on_consent(res, ctx)));
    }

    pub(super) fn on_consent(
        &mut self,
        res: Result<WalkResult, MailboxError>,
        ctx: &mut Context<Self>,
    ) {
        // Only an attempt still waiting counts (a parked walk that went on
        // by itself may have started the install already).
        let Some(run) = self.run.as_mut().filter(|r| r.stage == Stage::AwaitingConsent) else {
            return;
        };
        let (refused, deferred) = match res {
            Ok(Ok(r)) if r.reached && r.state == SystemState::ModalUpdating => {
                return self.consent_given(ctx);
            }
            Ok(Ok(r)) => match r.pending {
                Some(p) => (format!("{} deferred: {}", p.by, p.reason), true),
                None => (format!("MODAL_UPDATING not reached (at {})", r.state), false),
            },
            Ok(Err(lwsys_messages::supervisor::WalkError::ShuttingDown)) | Err(_) => {
                return self.finish(Err(OtaError::Cancelled), ctx);
            }
            Ok(Err(e)) => (e.to_string(), false),
        };
        let since = *run.consent_since.get_or_insert_with(Instant::now);
        let was = run.entry;
        let next = self.refused(deferred);
        self.progress.last_error = Some(format!("waiting for consent: {refused}"));
        self.progress.last_error_kind = Some("consent_refused".into());
        self.emit();
        let escalated = next.is_some_and(|e| e != was);
        if next.is_none() || (!escalated && since.elapsed() >= self.cfg.consent_window) {
            slog::warn!(self.log, "consent refused; waiting for the next check"; "why" => crate::LogSafe(&refused.to_string()));
            self.leave_modal(ctx);
            self.finish(Err(OtaError::ConsentRefused(refused)), ctx);
            // A budget or deadline (or window) may come before the next
            // periodic check.
            if let Some(until) = self.waiting.and_then(|w| w.until_unix) {
                self.arm_until(until, ctx);
            }
        } else if escalated {
            // The budget ran out or the deadline came: ask at once, past
            // what held the release.
            self.ask_consent(ctx);
        } else {
            slog::info!(self.log, "consent refused; retrying"; "why" => crate::LogSafe(&refused.to_string()));
            ctx.run_later(self.cfg.consent_retry, |act, ctx| {
                if act.run.as_ref().is_some_and(|r| r.stage == Stage::AwaitingConsent) {
                    act.ask_consent(ctx);
                }
            });
        }
    }

    /// MODAL_UPDATING is entered while a release waits for it: install.
    pub(super) fn consent_given(&mut self, ctx: &mut Context<Self>) {
        let Some(run) = self.run.as_mut().filter(|r| r.stage == Stage::AwaitingConsent) else {
            return;
        };
        let Some(m) = run.manifest.clone() else { return };
        run.stage = Stage::Installing;
        self.waiting = None;
        self.progress.last_error = None;
        self.progress.last_error_kind = None;
        slog::info!(self.log, "consent given; installing"; "unixtime" => m.unixtime, "size" => m.size);
        self.set_phase(OtaPhase::Downloading, 0, 0);
        if self.jobs.send(Job::Install(Box::new(m))).is_err() {
            self.leave_modal(ctx);
            self.finish(Err(OtaError::Io("ota worker is gone".into())), ctx);
        }
    }

    /// Back to OPERATIONAL after an update that did not happen.
    pub(super) fn leave_modal(&mut self, ctx: &mut Context<Self>) {
        let fut = self.links.modal.send(Cycle::LeaveModal);
        ctx.spawn(fut.into_actor(self).map(|res, act, _| match res {
            Ok(Ok(r)) if r.reached => {}
            Ok(Ok(r)) => slog::warn!(act.log, "could not leave modal"; "state" => %r.state),
            Ok(Err(e)) => slog::warn!(act.log, "could not leave modal"; "error" => %e),
            Err(e) => slog::warn!(act.log, "could not leave modal"; "error" => %e),
        }));
    }
}

impl Handler<Checked> for OtaService {
    type Result = ();

    fn handle(&mut self, msg: Checked, ctx: &mut Context<Self>) {
        match msg.0 {
            Ok(m) => {
                slog::info!(self.log, "newer release found"; "unixtime" => m.unixtime, "size" => m.size);
                self.offer(m, ctx);
            }
            Err(e @ (OtaError::NotNewer { .. } | OtaError::RolledBack(_))) => {
                slog::debug!(self.log, "no update"; "why" => crate::LogSafe(&e.to_string()));
                self.waiting = None;
                let unixtime = match e {
                    OtaError::NotNewer { manifest, .. } | OtaError::RolledBack(manifest) => {
                        Some(manifest)
                    }
                    _ => None,
                };
                let outcome = CheckOutcome {
                    updated: false,
                    unixtime,
                    reboot: false,
                    reason: Some(e.to_string()),
                };
                self.finish(Ok(outcome), ctx);
            }
            Err(e) => {
                slog::warn!(self.log, "update check failed"; "error" => crate::LogSafe(&e.to_string()));
                self.finish(Err(e), ctx);
            }
        }
    }
}

impl Handler<Installed> for OtaService {
    type Result = ();

    fn handle(&mut self, msg: Installed, ctx: &mut Context<Self>) {
        match msg.0 {
            Ok(m) => {
                slog::info!(self.log, "update installed"; "unixtime" => m.unixtime, "reset" => m.reset,
                            "selected" => %self.slots.selected);
                let outcome = CheckOutcome {
                    updated: true,
                    unixtime: Some(m.unixtime),
                    reboot: m.reset,
                    reason: None,
                };
                self.finish(Ok(outcome), ctx);
                if m.reset {
                    slog::info!(self.log, "rebooting into the new release");
                    (self.links.reboot)();
                } else {
                    self.leave_modal(ctx);
                }
            }
            Err(e) => {
                slog::warn!(self.log, "update failed; the active slot is untouched"; "error" => crate::LogSafe(&e.to_string()));
                self.leave_modal(ctx);
                self.finish(Err(e), ctx);
            }
        }
    }
}
