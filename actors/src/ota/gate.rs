//! `OtaService`'s side of the update policy ([`super::policy`]): what a
//! found release waits for, how MODAL_UPDATING is asked for it
//! (`Cycle::EnterModal`, `EnterModalPastDefer` or `ForceModal`), counting
//! its deferrals, and telling subscribers and `ota.status` about each
//! decision. The release's first sighting and deferral count are saved
//! in the OTA state dir, so a restart neither resets a budget nor a
//! security deadline.

use std::time::Duration;

use actix::prelude::*;
use lwsys_messages::ota::{CheckOutcome, OtaPhase, PolicyDecision, WaitFor, Waiting};
use lwsys_messages::supervisor::Cycle;

use super::policy::{Decision, Entry};
use super::{Manifest, OtaService, Stage};

/// Now on lwsys's clock (soft clock included), Unix seconds.
pub(super) fn now_unix() -> u64 {
    crate::time::unix_us() / 1_000_000
}

/// How `entry` is asked of the supervisor.
pub(super) fn entry_cycle(entry: Entry) -> Cycle {
    match entry {
        Entry::Normal => Cycle::EnterModal,
        Entry::PastDefer => Cycle::EnterModalPastDefer,
        Entry::Forced => Cycle::ForceModal,
    }
}

fn entry_decision(entry: Entry) -> PolicyDecision {
    match entry {
        Entry::Normal => PolicyDecision::Install,
        Entry::PastDefer => PolicyDecision::InstallPastDefer,
        Entry::Forced => PolicyDecision::InstallForced,
    }
}

impl OtaService {
    fn save_policy(&self) {
        if let Err(e) = self.cfg.policy_store.save(&self.policy_rec) {
            slog::warn!(self.log, "cannot save the update policy state"; "error" => crate::LogSafe(&e));
        }
    }

    fn decide(&self, m: &Manifest, now: u64) -> Decision {
        self.cfg.update_policy.decide(&self.policy_rec, m.urgency.unwrap_or_default(), now)
    }

    /// A newer release `m` was found: wait for a window, or ask for
    /// MODAL_UPDATING the way the policy says.
    pub(super) fn offer(&mut self, m: Manifest, ctx: &mut Context<Self>) {
        if self.trial.watching {
            // Entering MODAL_UPDATING would leave OPERATIONAL and so roll
            // the trial back; nothing can be written over it anyway.
            let reason = format!(
                "the running release {} is an unconfirmed trial; release {} waits until it is confirmed",
                self.slots.attempted_unixtime, m.unixtime
            );
            let outcome = CheckOutcome {
                updated: false,
                unixtime: Some(m.unixtime),
                reboot: false,
                reason: Some(reason),
            };
            return self.finish(Ok(outcome), ctx);
        }
        let now = now_unix();
        let rec = self.policy_rec.for_release(m.unixtime, now);
        if rec != self.policy_rec {
            self.policy_rec = rec;
            self.save_policy();
        }
        match self.decide(&m, now) {
            Decision::Wait { until_unix } => self.wait_for_window(&m, until_unix, ctx),
            Decision::Enter(entry) => {
                slog::info!(self.log, "update policy: install"; "release" => m.unixtime,
                            "entry" => ?entry, "deferrals" => self.policy_rec.deferrals);
                if let Some(run) = &mut self.run {
                    run.stage = Stage::AwaitingConsent;
                    run.manifest = Some(m);
                    run.entry = entry;
                }
                self.decision = Some(entry_decision(entry));
                self.set_phase(OtaPhase::AwaitingConsent, 0, 0);
                self.ask_consent(ctx);
            }
        }
    }

    /// Outside the windows: settle the check, and look again when the
    /// next window opens (or at the next periodic check, if sooner).
    fn wait_for_window(&mut self, m: &Manifest, until: u64, ctx: &mut Context<Self>) {
        slog::info!(self.log, "update policy: outside the maintenance windows; waiting";
                    "release" => m.unixtime, "until_unix" => until);
        self.waiting = Some(Waiting {
            waits_for: WaitFor::Window,
            until_unix: Some(until),
            release: m.unixtime,
        });
        self.decision = Some(PolicyDecision::WaitWindow);
        let outcome = CheckOutcome {
            updated: false,
            unixtime: Some(m.unixtime),
            reboot: false,
            reason: Some(format!(
                "release {} waits for a maintenance window (until unix {until})",
                m.unixtime
            )),
        };
        self.finish(Ok(outcome), ctx);
        self.arm_until(until, ctx);
    }

    /// Arms the next check at `until` (lwsys's clock) if that comes
    /// before the periodic one.
    pub(super) fn arm_until(&mut self, until: u64, ctx: &mut Context<Self>) {
        let delay = Duration::from_secs(until.saturating_sub(now_unix()).max(1));
        if self.operational_seen && delay < self.periodic {
            self.arm(delay, ctx);
        }
    }

    /// An attempt to enter MODAL_UPDATING for the run's release was
    /// refused (`deferred`: by a `Defer`, which spends budget). Returns
    /// the entry to try next, or `None` if the release must now wait for
    /// a window.
    pub(super) fn refused(&mut self, deferred: bool) -> Option<Entry> {
        let (m, was) = {
            let run = self.run.as_ref()?;
            (run.manifest.clone()?, run.entry)
        };
        if deferred {
            self.policy_rec.deferrals = self.policy_rec.deferrals.saturating_add(1);
            // Durable only where it decides something: no fsync a second
            // for a count no budget reads.
            if self.cfg.update_policy.max_deferrals.is_some() {
                self.save_policy();
            }
        }
        let urgency = m.urgency.unwrap_or_default();
        let until = self.cfg.update_policy.defer_until(&self.policy_rec, urgency);
        self.waiting =
            Some(Waiting { waits_for: WaitFor::Consent, until_unix: until, release: m.unixtime });
        let entry = match self.decide(&m, now_unix()) {
            Decision::Wait { until_unix } => {
                self.waiting = Some(Waiting {
                    waits_for: WaitFor::Window,
                    until_unix: Some(until_unix),
                    release: m.unixtime,
                });
                return None;
            }
            Decision::Enter(e) => e,
        };
        if entry != was {
            slog::info!(self.log, "update policy: no longer waiting for deferring notifiers";
                        "release" => m.unixtime, "entry" => ?entry,
                        "deferrals" => self.policy_rec.deferrals);
            self.decision = Some(entry_decision(entry));
            if let Some(run) = &mut self.run {
                run.entry = entry;
            }
        }
        Some(entry)
    }
}
