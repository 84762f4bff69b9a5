//! Walk requests to the supervisor (steps, jump, the built-in cycles,
//! shutdown and its grace period) and the teardown of its system.

use actix::prelude::*;
use lwsys_messages::state::SystemState;
use lwsys_messages::supervisor::{
    Cycle, Explanation, Jump, Shutdown, Steps, WalkError, WalkResult,
};
use slog::{info, warn};
use tokio::sync::oneshot;

use super::walk::{Leg, Mode, Override, Walk};
use super::{RunState, Supervisor};

impl Supervisor {
    /// A new request for a target a parked walk is waiting for continues
    /// that walk, with the new requester added.
    pub(super) fn take_parked_for(&mut self, mode: Mode, target: SystemState) -> Option<Walk> {
        let pos = self.parked.iter().position(|w| w.leg.mode == mode && w.leg.target == target)?;
        let mut w = self.parked.remove(pos);
        w.unpark();
        Some(w)
    }

    pub(super) fn walk_request(
        &mut self,
        leg: Leg,
        rest: Vec<Leg>,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<WalkResult> {
        self.walk_request_past(leg, rest, Override::Nothing, ctx)
    }

    /// As `walk_request`, for a walk whose rounds go past `overrides`
    /// (never merged into another walk, nor another into it).
    pub(super) fn walk_request_past(
        &mut self,
        leg: Leg,
        rest: Vec<Leg>,
        overrides: Override,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<WalkResult> {
        let (tx, rx) = oneshot::channel();
        self.take_walk(leg, rest, overrides, tx, ctx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| Err(WalkError::Internal("supervisor stopped".into())))
        })
    }

    /// Take a walk request answered through `tx`: merge it into a walk
    /// under way or parked for the same target, or queue it.
    fn take_walk(
        &mut self,
        leg: Leg,
        rest: Vec<Leg>,
        overrides: Override,
        tx: oneshot::Sender<WalkResult>,
        ctx: &mut Context<Self>,
    ) {
        let single = rest.is_empty() && overrides == Override::Nothing;
        if self.shutting_down {
            let _ = tx.send(Err(WalkError::ShuttingDown));
        } else if let Some(w) = self.active.as_mut().filter(|w| single && w.can_extend(leg)) {
            w.extend(leg.target, tx);
            self.pump(ctx);
        } else if let Some(mut w) =
            single.then(|| self.take_parked_for(leg.mode, leg.target)).flatten()
        {
            w.add_waiter(leg, tx);
            self.queue.push_front(w);
            self.pump(ctx);
        } else {
            let mut w = Walk::new(leg, rest, tx);
            w.overrides = overrides;
            self.enqueue(w, ctx);
        }
    }

    pub(super) fn grace_expired(&mut self, ctx: &mut Context<Self>) {
        self.grace_over = true;
        if self.current == SystemState::ContextDestroying {
            return;
        }
        warn!(self.log, "shutdown grace period over; forcing CONTEXT_DESTROYING";
              "grace_ms" => self.cfg.shutdown_grace.as_millis());
        if self.awaiting.take().is_some() {
            let forced = self.active.as_ref().is_some_and(|w| w.leg.mode == Mode::Forced);
            if forced && self.round.is_some() {
                self.commit();
            } else {
                self.round = None;
                if let Some(w) = self.active.take() {
                    w.fail(WalkError::ShuttingDown);
                }
            }
        }
        self.pump(ctx);
    }
}

/// Ends the system: sent when its last `SystemHandle` is dropped, or after
/// a shutdown has committed CONTEXT_DESTROYING. The actors of a system hold
/// one another's addresses (the services report to the supervisor, which
/// holds them, and the clock reads the address book that names it), so
/// they would never stop by themselves: the supervisor stops them, then
/// itself. Idempotent; no reply.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Teardown;

impl Handler<Teardown> for Supervisor {
    type Result = ();

    fn handle(&mut self, _msg: Teardown, ctx: &mut Self::Context) {
        if std::mem::replace(&mut self.torn_down, true) {
            return;
        }
        info!(self.log, "system torn down"; "state" => %self.current);
        self.round = None;
        self.awaiting = None;
        let walks = self.active.take().into_iter();
        for w in walks.chain(self.queue.drain(..)).chain(self.parked.drain(..)) {
            w.fail(WalkError::ShuttingDown);
        }
        // Taken first, so that the deaths the stops cause restart nothing.
        if let Some(mut s) = self.supervision.take() {
            s.stop_all();
            // Dropping the factory ends the blob service's thread.
        }
        // Kept, so that a handle kept after a shutdown can still explain
        // how it ended.
        let _ = self.last_words.set(Explanation {
            state: self.current,
            since_us: self.since_us,
            pending: None,
            parked: Vec::new(),
            journal: self.journal_entries(),
        });
        self.state.do_send(lwsys_messages::lifecycle::Stop);
        ctx.stop();
    }
}

/// A `Steps` or `Jump` request that brings its own reply channel: how a
/// [`SystemHandle`](crate::SystemHandle) asks. The walk answers `tx`
/// itself, where an actix request would answer through a reply future
/// spawned as a task of its own, which then forwards the result over a
/// second channel: that is most of what a request costs beside the walk.
/// It goes through the mailbox like any other request, so it keeps its
/// place among them. If the supervisor is gone, `tx` is dropped unanswered.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(crate) struct WalkTo {
    /// `Jump` rather than `Steps`.
    pub(crate) jump: bool,
    pub(crate) target: SystemState,
    pub(crate) tx: oneshot::Sender<WalkResult>,
}

impl Handler<WalkTo> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: WalkTo, ctx: &mut Self::Context) {
        let mode = if msg.jump { Mode::Jump } else { Mode::Steps };
        self.take_walk(
            Leg { mode, target: msg.target },
            Vec::new(),
            Override::Nothing,
            msg.tx,
            ctx,
        );
    }
}

impl Handler<Steps> for Supervisor {
    type Result = ResponseFuture<WalkResult>;

    fn handle(&mut self, msg: Steps, ctx: &mut Self::Context) -> Self::Result {
        self.walk_request(Leg { mode: Mode::Steps, target: msg.target }, Vec::new(), ctx)
    }
}

impl Handler<Jump> for Supervisor {
    type Result = ResponseFuture<WalkResult>;

    fn handle(&mut self, msg: Jump, ctx: &mut Self::Context) -> Self::Result {
        self.walk_request(Leg { mode: Mode::Jump, target: msg.target }, Vec::new(), ctx)
    }
}

impl Handler<Cycle> for Supervisor {
    type Result = ResponseFuture<WalkResult>;

    fn handle(&mut self, msg: Cycle, ctx: &mut Self::Context) -> Self::Result {
        let jump = |target| Leg { mode: Mode::Jump, target };
        let enter_modal =
            || (jump(SystemState::AwaitingModalUpdating), vec![jump(SystemState::ModalUpdating)]);
        let overrides = match msg {
            Cycle::EnterModalPastDefer => Override::Defers,
            Cycle::ForceModal => Override::All,
            _ => Override::Nothing,
        };
        let (first, rest) = match msg {
            Cycle::PolicyInvalidate => (
                jump(SystemState::PolicyInvalid),
                vec![
                    jump(SystemState::Initialized),
                    Leg { mode: Mode::Steps, target: SystemState::Operational },
                ],
            ),
            Cycle::EnterModal | Cycle::EnterModalPastDefer | Cycle::ForceModal => enter_modal(),
            Cycle::HealthCheck => {
                let leg = Leg { mode: Mode::Check, target: SystemState::Operational };
                let (tx, rx) = oneshot::channel();
                if self.shutting_down {
                    let _ = tx.send(Err(WalkError::ShuttingDown));
                } else {
                    // Its own walk, queued like any other: one round at a
                    // time, so a notifier is never asked twice at once.
                    self.enqueue(Walk::new(leg, Vec::new(), tx), ctx);
                }
                return Box::pin(async move {
                    rx.await
                        .unwrap_or_else(|_| Err(WalkError::Internal("supervisor stopped".into())))
                });
            }
            Cycle::LeaveModal => (jump(SystemState::Operational), Vec::new()),
        };
        self.walk_request_past(first, rest, overrides, ctx)
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseFuture<WalkResult>;

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let leg = Leg { mode: Mode::Forced, target: SystemState::ContextDestroying };
        if !self.shutting_down {
            info!(self.log, "shutting down"; "from" => %self.current,
                  "grace_ms" => self.cfg.shutdown_grace.as_millis());
            self.shutting_down = true;
            self.shutdown_tx.send_if_modified(|st| {
                let begin = *st == RunState::Running;
                if begin {
                    *st = RunState::ShuttingDown;
                }
                begin
            });
            for w in self.queue.drain(..).chain(self.parked.drain(..)) {
                w.fail(WalkError::ShuttingDown);
            }
            self.queue.push_front(Walk::new(leg, Vec::new(), tx));
            ctx.run_later(self.cfg.shutdown_grace, |act, ctx| act.grace_expired(ctx));
        } else if let Some(w) =
            self.active.iter_mut().chain(self.queue.iter_mut()).find(|w| w.leg.mode == Mode::Forced)
        {
            w.add_waiter(leg, tx);
        } else {
            let _ = tx.send(Ok(lwsys_messages::supervisor::WalkReport {
                state: self.current,
                reached: self.current == SystemState::ContextDestroying,
                pending: None,
            }));
        }
        self.pump(ctx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| Err(WalkError::Internal("supervisor stopped".into())))
        })
    }
}
