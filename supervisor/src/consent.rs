//! The consent round as a plain state machine: whom to ask next, what each
//! verdict means for the round, and when and how it ends. It holds no
//! actors and sends nothing; the `Supervisor` drives it (asks inline
//! notifiers on the spot, sends `Consent` to actor ones, times them out)
//! and feeds back what it hears. Keeping it free of actix lets its rules
//! be tested without a runtime.
//!
//! Rules (DESIGN §3): notifiers are asked one at a time in registration
//! order; the first verdict that is not `Allow` ends the round, unless the
//! round is forced (a shutdown), where every notifier is still asked and
//! told but none can stop it. A notifier registered during the round is
//! asked too when its turn comes; one that leaves is skipped, and if it was
//! being asked the round goes on without it.

use std::sync::Arc;

use lwsys_messages::state::{RoundOutcome, SystemState, Verdict};

use crate::journal::{Buffers, Detail, Record};

/// The notifiers of a round, in consent order, as the machine sees them:
/// ids only, increasing with registration.
pub trait Roster {
    /// The first notifier registered after id `after`, as (index, id).
    /// `hint` is the index the caller expects it at (the one after the
    /// last asked); a roster may use it to skip a search.
    fn next_after(&self, after: u64, hint: usize) -> Option<(usize, u64)>;
}

impl Roster for [u64] {
    fn next_after(&self, after: u64, _hint: usize) -> Option<(usize, u64)> {
        let i = self.partition_point(|id| *id <= after);
        self.get(i).map(|id| (i, *id))
    }
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Ask the notifier `id` (at `index` in the roster).
    Ask {
        /// Where it is in the roster.
        index: usize,
        /// Its registry id.
        id: u64,
    },
    /// Everyone was asked and none stopped the round: commit.
    Commit,
}

/// What a verdict did to the round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ask the next one ([`Round::next`]).
    Continue,
    /// The round ends without the transition: `by` did not allow it.
    Stop {
        /// Who stopped it.
        by: Arc<str>,
        /// Its verdict (`Defer` or `Deny`).
        verdict: Verdict,
    },
    /// The verdict was not for the notifier being asked (a stale reply, or
    /// from one that already left): ignore it.
    Stale,
}

/// One consent round for (current, target). See the module docs.
#[derive(Debug)]
pub struct Round {
    current: SystemState,
    target: SystemState,
    forced: bool,
    /// A `Defer` (or timeout) does not stop the round; a `Deny` does.
    past_defer: bool,
    /// Notifiers with an id at or below this have been asked.
    asked_upto: u64,
    /// Where the next one probably is in the roster (a hint).
    next_index: usize,
    /// The notifier whose verdict is awaited.
    asking: Option<u64>,
    /// Who was asked and what they said beyond an inline `Allow`.
    verdicts: Buffers,
    /// Those that left during the round (not told `Aborted`).
    gone: Vec<u64>,
    inline_ns: u64,
    at_us: u64,
    /// A `Resume` from the notifier being asked arrived before its verdict.
    early_resume: bool,
    /// An actor's answer was awaited (time passed since `at_us`).
    waited: bool,
}

impl Round {
    /// A round for `current` -> `target` begun at `at_us` (Unix µs);
    /// `forced` rounds cannot be stopped; it writes its verdicts into
    /// `verdicts` (empty; see [`crate::journal::Journal::buffers`]).
    pub fn new(
        current: SystemState,
        target: SystemState,
        forced: bool,
        at_us: u64,
        verdicts: Buffers,
    ) -> Self {
        Self {
            current,
            target,
            forced,
            past_defer: false,
            asked_upto: 0,
            next_index: 0,
            asking: None,
            verdicts,
            gone: Vec::new(),
            inline_ns: 0,
            at_us,
            early_resume: false,
            waited: false,
        }
    }

    /// This round goes on past `Defer` verdicts (and timeouts); only a
    /// `Deny` stops it (a release whose deferral budget is spent).
    pub fn past_defer(mut self) -> Self {
        self.past_defer = true;
        self
    }

    /// Whether `v` lets the round go on.
    fn goes_on(&self, v: &Verdict) -> bool {
        v.is_allow() || self.forced || (self.past_defer && matches!(v, Verdict::Defer { .. }))
    }

    /// The state the round starts from.
    pub fn current(&self) -> SystemState {
        self.current
    }

    /// The state the round is for.
    pub fn target(&self) -> SystemState {
        self.target
    }

    /// Whether no verdict can stop the round.
    pub fn forced(&self) -> bool {
        self.forced
    }

    /// The notifier whose verdict is awaited, if any.
    pub fn asking(&self) -> Option<u64> {
        self.asking
    }

    /// Those that allowed so far and are still registered (told `Aborted`
    /// if the round does not commit), in the order they allowed.
    pub fn allowed(&self) -> Vec<u64> {
        self.verdicts
            .each()
            .filter(|(id, d)| d.is_none_or(|d| d.verdict.is_allow()) && !self.gone.contains(id))
            .map(|(id, _)| id)
            .collect()
    }

    /// The ids asked so far, in order.
    pub fn asked(&self) -> &[u64] {
        &self.verdicts.asked
    }

    /// Whether a forced (or past-defer) round went through a verdict that
    /// would have stopped it.
    pub fn overridden(&self) -> bool {
        self.verdicts.detail.iter().any(|d| !d.verdict.is_allow() && self.goes_on(&d.verdict))
    }

    /// Whom to ask next in `roster`, or that everyone has been asked.
    #[inline]
    pub fn next(&mut self, roster: &(impl Roster + ?Sized)) -> Next {
        match roster.next_after(self.asked_upto, self.next_index) {
            Some((index, id)) => {
                self.asked_upto = id;
                self.next_index = index + 1;
                self.asking = Some(id);
                Next::Ask { index, id }
            }
            None => {
                self.asking = None;
                Next::Commit
            }
        }
    }

    /// The inline notifier `id`, at `index` in the roster, is asked now,
    /// right after the one before it in the roster: the fast path of a run
    /// of inline notifiers, without [`Round::next`]'s lookup.
    #[inline]
    pub fn asking_inline(&mut self, id: u64, index: usize) {
        self.asked_upto = id;
        self.next_index = index + 1;
        self.asking = Some(id);
    }

    /// The inline notifiers `ids`, the next in the roster after the last
    /// one asked, allowed: the fast path of a run of inline notifiers,
    /// their ids written to the journal's list in one go. The run ends
    /// with [`Round::ran_upto`].
    #[inline]
    pub fn allowed_in_run(&mut self, ids: impl IntoIterator<Item = u64>) {
        self.verdicts.asked.extend(ids);
    }

    /// A run of inline notifiers that allowed ended with `id`, at `index`
    /// in the roster: the next one asked is after it.
    #[inline]
    pub fn ran_upto(&mut self, id: u64, index: usize) {
        self.asked_upto = id;
        self.next_index = index + 1;
        self.asking = None;
    }

    /// The verdict of `id` (named `name`), which took `latency_us` (`None`
    /// for an inline notifier, answered on the spot). An inline `Allow`
    /// costs one id written to the journal's list (as
    /// [`Round::allowed_in_run`]).
    pub fn verdict(
        &mut self,
        id: u64,
        name: &Arc<str>,
        verdict: Verdict,
        latency_us: Option<u64>,
    ) -> Step {
        if self.asking != Some(id) {
            return Step::Stale;
        }
        self.asking = None;
        let at = self.verdicts.asked.len();
        self.verdicts.asked.push(id);
        if verdict.is_allow() && latency_us.is_none() {
            return Step::Continue;
        }
        self.waited |= latency_us.is_some();
        let step = if self.goes_on(&verdict) {
            Step::Continue
        } else {
            Step::Stop { by: name.clone(), verdict: verdict.clone() }
        };
        let at = u32::try_from(at).unwrap_or(u32::MAX);
        self.verdicts.detail.push(Detail { at, verdict, latency_us });
        step
    }

    /// `id` missed its deadline: its silence counts as `Defer { reason:
    /// "timeout" }`.
    pub fn timed_out(&mut self, id: u64, name: &Arc<str>, latency_us: u64) -> Step {
        self.verdict(id, name, Verdict::defer("timeout"), Some(latency_us))
    }

    /// `id` left the registry (unregistered, or its actor stopped). Returns
    /// whether its verdict was awaited: then the driver goes on with
    /// [`Round::next`].
    pub fn gone(&mut self, id: u64) -> bool {
        self.gone.push(id);
        let was_asked = self.asking == Some(id);
        if was_asked {
            self.asking = None;
        }
        was_asked
    }

    /// The notifier being asked said `Resume` before its verdict came.
    pub fn note_early_resume(&mut self) {
        self.early_resume = true;
    }

    /// Whether a `Resume` from the one asked came before its verdict.
    pub fn resumed_early(&self) -> bool {
        self.early_resume
    }

    /// When the round began (Unix µs), if nothing was awaited since: a
    /// round of inline notifiers commits within microseconds of its start,
    /// so its commit can be stamped without reading the clock again.
    pub fn began_us_if_unwaited(&self) -> Option<u64> {
        (!self.waited).then_some(self.at_us)
    }

    /// Count `ns` spent running inline notifiers.
    pub fn add_inline_ns(&mut self, ns: u64) {
        self.inline_ns = self.inline_ns.saturating_add(ns);
    }

    /// The journal record of a round that ended with `outcome`; takes the
    /// verdicts (a round is recorded once).
    pub fn record(&mut self, outcome: RoundOutcome) -> Record {
        Record {
            at_us: self.at_us,
            current: self.current,
            target: self.target,
            verdicts: std::mem::take(&mut self.verdicts),
            inline_ns: self.inline_ns,
            outcome,
        }
    }
}

/// The journal outcome of a round stopped by `by` with `verdict`.
pub fn stopped_outcome(by: Arc<str>, verdict: &Verdict) -> RoundOutcome {
    match verdict {
        Verdict::Deny { reason } => RoundOutcome::Denied { by, reason: reason.clone() },
        Verdict::Defer { reason } => RoundOutcome::Deferred { by, reason: reason.clone() },
        Verdict::Allow => RoundOutcome::Deferred { by, reason: String::new() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SystemState::*;

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    /// Drive a round over `roster` with `answer` giving each id's verdict,
    /// until it commits or stops.
    fn run(round: &mut Round, roster: &[u64], answer: impl Fn(u64) -> Verdict) -> Step {
        loop {
            match round.next(roster) {
                Next::Commit => return Step::Continue,
                Next::Ask { id, .. } => {
                    let step = round.verdict(id, &name(&format!("n{id}")), answer(id), None);
                    if step != Step::Continue {
                        return step;
                    }
                }
            }
        }
    }

    #[test]
    fn a_round_every_notifier_allows_asks_each_once_in_order_then_commits() {
        let mut r = Round::new(Initialized, IfaceColdplug, false, 7, Buffers::default());
        let roster = [1, 2, 5];
        let mut asked = Vec::new();
        while let Next::Ask { id, .. } = r.next(&roster[..]) {
            asked.push(id);
            assert_eq!(r.verdict(id, &name("n"), Verdict::Allow, Some(3)), Step::Continue);
        }
        assert_eq!(asked, [1, 2, 5]);
        assert_eq!(r.allowed(), [1, 2, 5]);
        let j = r.record(RoundOutcome::Committed);
        assert_eq!(
            (j.at_us, j.current, j.target, j.verdicts.asked.len()),
            (7, Initialized, IfaceColdplug, 3)
        );
    }

    #[test]
    fn a_deny_stops_the_round_at_once_and_names_who_and_why() {
        let mut r = Round::new(Initialized, IfaceColdplug, false, 0, Buffers::default());
        let step = run(&mut r, &[1, 2, 3], |id| {
            if id == 2 {
                Verdict::Deny { reason: "no".into() }
            } else {
                Verdict::Allow
            }
        });
        let Step::Stop { by, verdict } = step else { panic!("{step:?}") };
        assert_eq!(&*by, "n2");
        assert_eq!(
            stopped_outcome(by, &verdict),
            RoundOutcome::Denied { by: name("n2"), reason: "no".into() }
        );
        // Notifier 3 was never asked; 1, which allowed, is told Aborted.
        assert_eq!(r.allowed(), [1]);
        assert_eq!(r.record(RoundOutcome::Committed).verdicts.asked.len(), 2);
    }

    #[test]
    fn a_defer_stops_the_round_and_a_fresh_round_after_the_resume_commits() {
        let mut r = Round::new(CollectingStdin, IfaceColdplug, false, 0, Buffers::default());
        let step =
            run(
                &mut r,
                &[1, 2],
                |id| if id == 1 { Verdict::defer("wait") } else { Verdict::Allow },
            );
        assert!(
            matches!(&step, Step::Stop { by, verdict: Verdict::Defer { .. } } if &**by == "n1")
        );
        assert!(r.allowed().is_empty());
        // The notifier resumed: the driver starts a fresh round, now allowed.
        let mut again = Round::new(CollectingStdin, IfaceColdplug, false, 1, Buffers::default());
        assert_eq!(run(&mut again, &[1, 2], |_| Verdict::Allow), Step::Continue);
        assert_eq!(again.allowed(), [1, 2]);
    }

    #[test]
    fn a_missed_deadline_counts_as_a_timeout_defer_with_its_latency() {
        let mut r = Round::new(Initialized, IfaceColdplug, false, 0, Buffers::default());
        let Next::Ask { id, .. } = r.next(&[4][..]) else { panic!("nobody to ask") };
        let step = r.timed_out(id, &name("slow"), 5_000_000);
        assert_eq!(step, Step::Stop { by: name("slow"), verdict: Verdict::defer("timeout") });
        let j = r.record(RoundOutcome::Deferred { by: name("slow"), reason: "timeout".into() });
        assert_eq!(j.verdicts.detail[0].latency_us, Some(5_000_000));
        // A verdict arriving after the deadline is stale.
        assert_eq!(r.verdict(id, &name("slow"), Verdict::Allow, None), Step::Stale);
    }

    #[test]
    fn a_notifier_leaving_mid_round_is_skipped_and_no_longer_told_aborted() {
        let mut r = Round::new(Initialized, IfaceColdplug, false, 0, Buffers::default());
        let Next::Ask { id: first, .. } = r.next(&[1, 2, 3][..]) else { panic!() };
        assert_eq!(r.verdict(first, &name("a"), Verdict::Allow, None), Step::Continue);
        let Next::Ask { id: second, .. } = r.next(&[1, 2, 3][..]) else { panic!() };
        assert_eq!(second, 2);
        // 1 and then 2 (being asked) unregister: the round goes on to 3.
        assert!(!r.gone(1));
        assert!(r.gone(2));
        assert_eq!(r.verdict(2, &name("b"), Verdict::Allow, None), Step::Stale);
        assert_eq!(r.next(&[3][..]), Next::Ask { index: 0, id: 3 });
        assert_eq!(r.verdict(3, &name("c"), Verdict::Allow, None), Step::Continue);
        assert_eq!(r.next(&[3][..]), Next::Commit);
        assert_eq!(r.allowed(), [3]);
    }

    #[test]
    fn a_forced_round_asks_everyone_and_cannot_be_stopped() {
        let mut r = Round::new(Operational, ContextDestroying, true, 0, Buffers::default());
        let step = run(&mut r, &[1, 2], |_| Verdict::Deny { reason: "busy".into() });
        assert_eq!(step, Step::Continue);
        assert!(r.overridden());
        assert_eq!(r.record(RoundOutcome::Forced).verdicts.asked.len(), 2);
    }

    #[test]
    fn a_past_defer_round_goes_on_past_defers_and_timeouts_but_stops_at_a_deny() {
        let mut r = Round::new(Operational, AwaitingModalUpdating, false, 0, Buffers::default())
            .past_defer();
        let step = run(&mut r, &[1, 2], |_| Verdict::defer("later"));
        assert_eq!(step, Step::Continue);
        assert!(r.overridden());
        assert_eq!(r.allowed(), [] as [u64; 0]);
        let mut r = Round::new(Operational, AwaitingModalUpdating, false, 0, Buffers::default())
            .past_defer();
        let Next::Ask { id, .. } = r.next(&[1, 2][..]) else { panic!() };
        assert_eq!(r.timed_out(id, &name("slow"), 9), Step::Continue);
        let Next::Ask { id, .. } = r.next(&[1, 2][..]) else { panic!() };
        let step = r.verdict(id, &name("n2"), Verdict::Deny { reason: "no".into() }, None);
        assert!(matches!(step, Step::Stop { verdict: Verdict::Deny { .. }, .. }), "{step:?}");
        // An ordinary round is not overridden by its allows.
        let mut r = Round::new(Operational, AwaitingModalUpdating, false, 0, Buffers::default());
        assert_eq!(run(&mut r, &[1], |_| Verdict::Allow), Step::Continue);
        assert!(!r.overridden());
    }

    #[test]
    fn a_notifier_registered_mid_round_is_asked_in_its_turn() {
        let mut r = Round::new(Initialized, IfaceColdplug, false, 0, Buffers::default());
        let Next::Ask { id, .. } = r.next(&[1][..]) else { panic!() };
        assert_eq!(r.verdict(id, &name("a"), Verdict::Allow, None), Step::Continue);
        assert_eq!(r.next(&[1, 9][..]), Next::Ask { index: 1, id: 9 });
    }
}
