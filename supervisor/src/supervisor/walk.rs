//! A walk: one request to move the system (steps, jump, a cycle of legs, or
//! the forced shutdown jump) and the requesters waiting for its outcome.

use std::collections::VecDeque;

use lwsys_messages::state::SystemState;
use lwsys_messages::supervisor::{Pending, WalkError, WalkReport, WalkResult};
use tokio::sync::oneshot;

/// How a leg moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One state at a time up to the target; a no-op at or past it.
    Steps,
    /// One transition straight to the target.
    Jump,
    /// The shutdown jump: notifiers are asked but cannot stop it.
    Forced,
    /// A health round at the target (OPERATIONAL): one round for target
    /// -> target, never committed.
    Check,
}

/// One leg of a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leg {
    pub(crate) mode: Mode,
    pub(crate) target: SystemState,
}

struct Waiter {
    /// For steps requesters: answer as soon as the state is at or past
    /// this. `None`: answer when the walk ends.
    want: Option<SystemState>,
    tx: oneshot::Sender<WalkResult>,
}

/// A request in the queue, running, or parked by a `Defer`.
pub(crate) struct Walk {
    pub(crate) leg: Leg,
    rest: VecDeque<Leg>,
    waiters: Vec<Waiter>,
    parked: Option<Pending>,
    /// The state when the walk parked, while it is resumed and has not
    /// moved since.
    parked_at: Option<SystemState>,
    early_resumes: u32,
    /// Which verdicts its rounds go past (the OTA policy's entries).
    pub(crate) overrides: Override,
    /// A `Check` walk whose round every notifier allowed.
    pub(crate) passed: bool,
}

/// Which verdicts a walk's rounds go past, besides a shutdown's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Override {
    /// None: any `Defer` or `Deny` stops it.
    #[default]
    Nothing,
    /// `Defer` and timeouts (`Cycle::EnterModalPastDefer`).
    Defers,
    /// Every verdict (`Cycle::ForceModal`).
    All,
}

impl Walk {
    pub(crate) fn new(leg: Leg, rest: Vec<Leg>, tx: oneshot::Sender<WalkResult>) -> Self {
        let want = (leg.mode == Mode::Steps && rest.is_empty()).then_some(leg.target);
        Self {
            leg,
            rest: rest.into(),
            waiters: vec![Waiter { want, tx }],
            parked: None,
            parked_at: None,
            early_resumes: 0,
            overrides: Override::Nothing,
            passed: false,
        }
    }

    /// Whether a steps request for a higher target may extend this walk.
    pub(crate) fn can_extend(&self, leg: Leg) -> bool {
        leg.mode == Mode::Steps && self.leg.mode == Mode::Steps && self.rest.is_empty()
    }

    /// Raise the target to `target` if higher, and answer `tx` once the
    /// state reaches `target`.
    pub(crate) fn extend(&mut self, target: SystemState, tx: oneshot::Sender<WalkResult>) {
        self.leg.target = self.leg.target.max(target);
        self.waiters.push(Waiter { want: Some(target), tx });
    }

    /// Add a requester whose request merges into this walk.
    pub(crate) fn add_waiter(&mut self, leg: Leg, tx: oneshot::Sender<WalkResult>) {
        let want = (leg.mode == Mode::Steps).then_some(leg.target);
        self.waiters.push(Waiter { want, tx });
    }

    /// Whether [`Walk::answer_reached`] would answer anyone at `current`.
    pub(crate) fn answers_at(&self, current: SystemState) -> bool {
        self.leg.mode == Mode::Steps
            && self.waiters.iter().any(|w| w.want.is_some_and(|s| current >= s))
    }

    /// Answer the steps requesters whose target the state has reached.
    pub(crate) fn answer_reached(&mut self, current: SystemState) {
        if !self.answers_at(current) {
            return;
        }
        let mut i = 0;
        while i < self.waiters.len() {
            if self.waiters[i].want.is_some_and(|s| current >= s) {
                let w = self.waiters.swap_remove(i);
                let _ = w.tx.send(Ok(WalkReport { state: current, reached: true, pending: None }));
            } else {
                i += 1;
            }
        }
    }

    /// The next state to propose, or `None` when this leg is done. A
    /// resumed walk goes on from the state current now, and only if that is
    /// still below its target, unless nothing moved while it was parked (a
    /// cycle's downward jump, deferred and resumed, still happens).
    pub(crate) fn next_transition(&self, current: SystemState) -> Option<SystemState> {
        match self.leg.mode {
            Mode::Steps => (current < self.leg.target).then(|| current.next()).flatten(),
            Mode::Jump if self.parked_at.is_some_and(|at| at != current) => {
                (current < self.leg.target).then_some(self.leg.target)
            }
            Mode::Jump | Mode::Forced => (current != self.leg.target).then_some(self.leg.target),
            Mode::Check => (current == self.leg.target && !self.passed).then_some(current),
        }
    }

    /// Move on to the next leg; false when there is none.
    pub(crate) fn advance_leg(&mut self) -> bool {
        match self.rest.pop_front() {
            Some(leg) => {
                self.leg = leg;
                self.parked_at = None;
                true
            }
            None => false,
        }
    }

    /// The walk ended at `current`: answer everyone still waiting.
    pub(crate) fn finish(self, current: SystemState) {
        let reached = match self.leg.mode {
            Mode::Steps => current >= self.leg.target,
            Mode::Jump | Mode::Forced => current == self.leg.target,
            Mode::Check => self.passed,
        };
        for w in self.waiters {
            let _ = w.tx.send(Ok(WalkReport { state: current, reached, pending: None }));
        }
    }

    /// The walk failed: answer everyone with `err`.
    pub(crate) fn fail(self, err: WalkError) {
        for w in self.waiters {
            let _ = w.tx.send(Err(err.clone()));
        }
    }

    /// A notifier deferred: answer everyone (not reached, pending) and keep
    /// the walk to continue later.
    pub(crate) fn park(&mut self, current: SystemState, pending: Pending) {
        for w in self.waiters.drain(..) {
            let _ = w.tx.send(Ok(WalkReport {
                state: current,
                reached: false,
                pending: Some(pending.clone()),
            }));
        }
        self.parked = Some(pending);
        self.parked_at = Some(current);
    }

    /// Count a re-ask caused by a resume that beat its defer; returns the
    /// count so far (reset when the walk commits a transition).
    pub(crate) fn note_early_resume(&mut self) -> u32 {
        self.early_resumes += 1;
        self.early_resumes
    }

    /// A transition was committed.
    pub(crate) fn committed(&mut self) {
        self.early_resumes = 0;
        self.parked_at = None;
    }

    /// Who holds this walk, if it is parked.
    pub(crate) fn parked_by(&self) -> Option<&Pending> {
        self.parked.as_ref()
    }

    /// The walk continues (from the state current then; see
    /// [`Walk::next_transition`]).
    pub(crate) fn unpark(&mut self) {
        self.parked = None;
    }
}
