//! `StateService`: the sole owner of the current system state, when it was
//! entered, and the observers and waiters that follow the state. It
//! changes state only on a [`Commit`] whose `from` is the current state.
//!
//! The Supervisor commits with [`CommitRounds`], which it does not wait
//! for; so that a reader who saw a walk answered also reads its state,
//! it publishes the reading it commits at once through a
//! [`StatePublisher`] (the same value this service publishes when the
//! message arrives). The journal of consent rounds is the Supervisor's:
//! it is the only one that writes or reads it.
//!
//! A waiter whose asker went away (a client that hung up) is forgotten
//! without waiting for a commit that may never come: [`AddWaiter`] hands
//! the service only the sending half of a oneshot, so a dropped receiver
//! shows as a closed sender, and closed senders are swept when waiters are
//! added (amortised) and on a timer while any are kept.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use lwsys_messages::state::{
    Changed, Commit, CommitRefused, CommitRounds, GetState, Observe, StateChanges, StateReading,
    SystemState, WaitFor, WaitTimedOut,
};
use slog::{debug, warn, Logger};
use tokio::sync::{oneshot, watch};

use crate::time::unix_us;

/// How often waiters whose askers went away are swept while any are kept.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Registers a waiter: `tx` is sent the current state once it is at or
/// past `state`. Dropping the receiving half cancels the wait; the
/// service then forgets it within half a second or at the next add.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddWaiter {
    /// The state to wait for.
    pub state: SystemState,
    /// Where to answer.
    pub tx: oneshot::Sender<SystemState>,
}

/// How many waiters the service keeps (for `system.info` and tests of
/// cancellation); swept first, so closed ones are not counted.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountWaiters;

/// Owns the current state. See the module docs.
pub struct StateService {
    state: SystemState,
    since_us: u64,
    observers: Vec<Recipient<StateChanges>>,
    /// Applied and not yet told to the observers.
    changes: Vec<Changed>,
    waiters: Vec<Waiter>,
    /// Waiters kept after the last sweep: the next add-time sweep runs
    /// once the list has doubled, so sweeping stays amortised O(1).
    swept_len: usize,
    /// A sweep timer is armed.
    sweeping: bool,
    /// The current reading, for readers that must not wait for a turn of
    /// this actor's mailbox (`state.get` on a busy daemon).
    snapshot: Arc<watch::Sender<StateReading>>,
    log: Logger,
}

/// Publishes the reading the Supervisor commits before `StateService` has
/// handled the [`CommitRounds`] (see the module docs). Only the Supervisor
/// holds one.
#[derive(Clone)]
pub struct StatePublisher(Arc<watch::Sender<StateReading>>);

impl StatePublisher {
    /// Make `reading` what `SystemHandle::state_now` and `state.get` read.
    pub fn publish(&self, reading: StateReading) {
        self.0.send_replace(reading);
    }
}

struct Waiter {
    wanted: SystemState,
    tx: oneshot::Sender<SystemState>,
}

impl StateService {
    /// A service at `CONTEXT_CREATED`.
    pub fn new(log: &Logger) -> Self {
        let since_us = unix_us();
        let state = SystemState::ContextCreated;
        Self {
            state,
            since_us,
            observers: Vec::new(),
            // A boot walk's worth, so the first walk does not grow it.
            changes: Vec::with_capacity(16),
            waiters: Vec::new(),
            swept_len: 0,
            sweeping: false,
            snapshot: Arc::new(watch::Sender::new(StateReading { state, since_us })),
            log: log.new(slog::o!("service" => "state")),
        }
    }

    /// The current reading, kept up to date by this service: updated
    /// before a commit is answered, so whoever saw a commit's reply reads
    /// the new state here.
    pub fn snapshot(&self) -> watch::Receiver<StateReading> {
        self.snapshot.subscribe()
    }

    /// The publisher the Supervisor uses (see the module docs).
    pub fn publisher(&self) -> StatePublisher {
        StatePublisher(self.snapshot.clone())
    }

    fn reading(&self) -> StateReading {
        StateReading { state: self.state, since_us: self.since_us }
    }

    /// Forget waiters nobody listens to any more.
    fn sweep(&mut self) {
        self.waiters.retain(|w| !w.tx.is_closed());
        self.swept_len = self.waiters.len();
    }

    /// Keep a timer sweeping while waiters are kept, so those of clients
    /// that left go even when no commit and no new wait comes.
    fn arm_sweep(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping || self.waiters.is_empty() {
            return;
        }
        self.sweeping = true;
        ctx.run_later(SWEEP_EVERY, |act, ctx| {
            act.sweeping = false;
            act.sweep();
            act.arm_sweep(ctx);
        });
    }
}

impl Actor for StateService {
    type Context = Context<Self>;
}

impl Handler<lwsys_messages::lifecycle::Stop> for StateService {
    type Result = ();

    /// Its system is torn down: stop; waiters see the service gone.
    fn handle(&mut self, _msg: lwsys_messages::lifecycle::Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl StateService {
    /// Enter `to` from the current state at `since_us`: publish the reading,
    /// tell observers, answer the waiters it satisfies.
    /// `publish`: false when the committer published it already.
    fn apply(&mut self, from: SystemState, to: SystemState, since_us: u64, publish: bool) {
        self.state = to;
        self.since_us = since_us;
        if publish {
            self.snapshot.send_replace(self.reading());
        }
        debug!(self.log, "state committed"; "from" => %from, "to" => %to);
        if !self.observers.is_empty() {
            self.changes.push(Changed { from, to });
        }
        if self.waiters.is_empty() {
            return;
        }
        let now = self.state;
        let mut i = 0;
        while i < self.waiters.len() {
            if self.waiters[i].wanted <= now || self.waiters[i].tx.is_closed() {
                let w = self.waiters.swap_remove(i);
                let _ = w.tx.send(now);
            } else {
                i += 1;
            }
        }
    }
}

impl StateService {
    /// Tell the observers what [`StateService::apply`] applied since they
    /// were last told, in one message each.
    fn tell_observers(&mut self) {
        if self.changes.is_empty() {
            return;
        }
        let changes = StateChanges(Arc::from(std::mem::take(&mut self.changes)));
        // An observer whose actor stopped is dropped here rather than kept
        // forever: do_send to it would be silently lost anyway.
        self.observers.retain(|o| o.connected());
        for o in &self.observers {
            o.do_send(changes.clone());
        }
    }
}

impl Handler<Commit> for StateService {
    type Result = Result<StateReading, CommitRefused>;

    fn handle(&mut self, msg: Commit, _ctx: &mut Self::Context) -> Self::Result {
        if msg.from != self.state {
            return Err(CommitRefused { expected: msg.from, current: self.state });
        }
        self.apply(msg.from, msg.to, unix_us(), true);
        self.tell_observers();
        Ok(self.reading())
    }
}

impl Handler<CommitRounds> for StateService {
    type Result = ();

    fn handle(&mut self, msg: CommitRounds, _ctx: &mut Self::Context) {
        for c in msg.rounds {
            if c.from == self.state {
                self.apply(c.from, c.to, c.since_us, !msg.published);
            } else {
                // Only the Supervisor commits, in order: this is a bug. Keep
                // the state and say so rather than follow a stale writer.
                warn!(self.log, "commit refused"; "from" => %c.from, "to" => %c.to,
                      "current" => %self.state);
            }
        }
        self.tell_observers();
    }
}

impl Handler<GetState> for StateService {
    type Result = MessageResult<GetState>;

    fn handle(&mut self, _msg: GetState, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.reading())
    }
}

impl Handler<WaitFor> for StateService {
    type Result = ResponseActFuture<Self, Result<SystemState, WaitTimedOut>>;

    fn handle(&mut self, msg: WaitFor, _ctx: &mut Self::Context) -> Self::Result {
        if self.state >= msg.state {
            let now = self.state;
            return Box::pin(fut::ready(Ok(now)));
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(Waiter { wanted: msg.state, tx });
        let wanted = msg.state;
        let timeout = msg.timeout;
        let wait = async move {
            match timeout {
                Some(t) => tokio::time::timeout(t, rx).await.ok().and_then(Result::ok),
                None => rx.await.ok(),
            }
        };
        Box::pin(wait.into_actor(self).map(move |got, act, _ctx| {
            // A wait that timed out has dropped its receiver: forget it now
            // rather than at the next commit, which may never come.
            act.waiters.retain(|w| !w.tx.is_closed());
            got.filter(|s| *s >= wanted).ok_or(WaitTimedOut { wanted, current: act.state })
        }))
    }
}

impl Handler<AddWaiter> for StateService {
    type Result = ();

    fn handle(&mut self, msg: AddWaiter, ctx: &mut Self::Context) {
        if self.state >= msg.state {
            let _ = msg.tx.send(self.state);
            return;
        }
        if msg.tx.is_closed() {
            return;
        }
        if self.waiters.len() >= (self.swept_len * 2).max(64) {
            self.sweep();
        }
        self.waiters.push(Waiter { wanted: msg.state, tx: msg.tx });
        self.arm_sweep(ctx);
    }
}

impl Handler<CountWaiters> for StateService {
    type Result = usize;

    fn handle(&mut self, _msg: CountWaiters, _ctx: &mut Self::Context) -> usize {
        self.sweep();
        self.waiters.len()
    }
}

impl Handler<Observe> for StateService {
    type Result = ();

    fn handle(&mut self, msg: Observe, _ctx: &mut Self::Context) {
        self.observers.push(msg.0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lwsys_messages::state::CommitRound;

    use super::*;

    fn log() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    #[actix_rt::test]
    async fn commit_changes_state_only_from_the_current_one() {
        let s = StateService::new(&log()).start();
        let ok = s
            .send(Commit { from: SystemState::ContextCreated, to: SystemState::PrePrivDrop })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ok.state, SystemState::PrePrivDrop);
        let refused = s
            .send(Commit { from: SystemState::ContextCreated, to: SystemState::Operational })
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(refused.current, SystemState::PrePrivDrop);
        assert_eq!(s.send(GetState).await.unwrap().state, SystemState::PrePrivDrop);
    }

    #[actix_rt::test]
    async fn wait_for_resolves_once_current_reaches_the_state() {
        let s = StateService::new(&log()).start();
        let wait = s.send(WaitFor { state: SystemState::Initialized, timeout: None });
        for (from, to) in [
            (SystemState::ContextCreated, SystemState::PrePrivDrop),
            (SystemState::PrePrivDrop, SystemState::Operational),
        ] {
            s.send(Commit { from, to }).await.unwrap().unwrap();
        }
        assert_eq!(wait.await.unwrap(), Ok(SystemState::Operational));
        // Already past: answers at once.
        let again = s.send(WaitFor { state: SystemState::Dhcp, timeout: None }).await.unwrap();
        assert_eq!(again, Ok(SystemState::Operational));
    }

    #[actix_rt::test]
    async fn wait_for_times_out_with_the_current_state() {
        tokio::time::pause();
        let s = StateService::new(&log()).start();
        let got = s
            .send(WaitFor {
                state: SystemState::Operational,
                timeout: Some(Duration::from_millis(500)),
            })
            .await
            .unwrap();
        assert_eq!(
            got,
            Err(WaitTimedOut {
                wanted: SystemState::Operational,
                current: SystemState::ContextCreated
            })
        );
    }

    #[actix_rt::test]
    async fn the_snapshot_follows_commits_before_they_are_answered() {
        let svc = StateService::new(&log());
        let snap = svc.snapshot();
        let s = svc.start();
        assert_eq!(snap.borrow().state, SystemState::ContextCreated);
        let r = s
            .send(Commit { from: SystemState::ContextCreated, to: SystemState::PrePrivDrop })
            .await;
        let reading = r.unwrap().unwrap();
        assert_eq!(*snap.borrow(), reading);
        // A refused commit leaves it alone.
        let _ = s
            .send(Commit { from: SystemState::ContextCreated, to: SystemState::Initialized })
            .await;
        assert_eq!(snap.borrow().state, SystemState::PrePrivDrop);
    }

    #[actix_rt::test]
    async fn timed_out_waits_are_forgotten_without_a_commit() {
        tokio::time::pause();
        let s = StateService::new(&log()).start();
        for _ in 0..100 {
            let w = WaitFor {
                state: SystemState::Operational,
                timeout: Some(Duration::from_millis(1)),
            };
            assert!(s.send(w).await.unwrap().is_err());
        }
        let pending = s.send(CountWaiters).await.unwrap();
        assert_eq!(pending, 0);
    }

    #[actix_rt::test]
    async fn a_waiter_whose_asker_left_is_forgotten_without_a_commit() {
        let s = StateService::new(&log()).start();
        let mut kept = Vec::new();
        for i in 0..1000 {
            let (tx, rx) = oneshot::channel();
            s.send(AddWaiter { state: SystemState::Operational, tx }).await.unwrap();
            // Every tenth asker stays; the rest hang up at once.
            if i % 10 == 0 {
                kept.push(rx);
            }
        }
        assert_eq!(s.send(CountWaiters).await.unwrap(), 100);
        drop(kept);
        // No count asked: the timer alone must sweep them.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let n = s.send(ProbeLen).await.unwrap();
            if n == 0 {
                break;
            }
            assert!(std::time::Instant::now() < until, "{n} waiters still kept");
        }
    }

    #[actix_rt::test]
    async fn add_waiter_answers_at_once_when_already_there_and_on_commit_otherwise() {
        let s = StateService::new(&log()).start();
        let (tx, rx) = oneshot::channel();
        s.send(AddWaiter { state: SystemState::PrePrivDrop, tx }).await.unwrap();
        s.send(Commit { from: SystemState::ContextCreated, to: SystemState::PrePrivDrop })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rx.await.unwrap(), SystemState::PrePrivDrop);
        let (tx, rx) = oneshot::channel();
        s.send(AddWaiter { state: SystemState::ContextCreated, tx }).await.unwrap();
        assert_eq!(rx.await.unwrap(), SystemState::PrePrivDrop);
    }

    /// Test-only: the raw length of the waiter list, without a sweep.
    #[derive(Message)]
    #[rtype(result = "usize")]
    struct ProbeLen;

    impl Handler<ProbeLen> for StateService {
        type Result = usize;
        fn handle(&mut self, _: ProbeLen, _: &mut Self::Context) -> usize {
            self.waiters.len()
        }
    }

    #[actix_rt::test]
    async fn commits_travel_together_in_order_and_never_move_readers_back() {
        let svc = StateService::new(&log());
        let (snap, publisher) = (svc.snapshot(), svc.publisher());
        let observed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = svc.start();
        s.send(Observe(Recorder(observed.clone()).start().recipient())).await.unwrap();
        // The committer published a newer reading already: the service's
        // handling of the older commits must not replace it.
        let newer = StateReading { state: SystemState::Operational, since_us: 9 };
        publisher.publish(newer);
        let (a, b, c) =
            (SystemState::ContextCreated, SystemState::PrePrivDrop, SystemState::Initialized);
        let rounds = vec![
            CommitRound { from: a, to: b, since_us: 7 },
            CommitRound { from: b, to: c, since_us: 8 },
            // Not from the current state: changes nothing.
            CommitRound { from: a, to: SystemState::Operational, since_us: 9 },
        ];
        s.send(CommitRounds { rounds, published: true }).await.unwrap();
        assert_eq!(*snap.borrow(), newer);
        assert_eq!(s.send(GetState).await.unwrap(), StateReading { state: c, since_us: 8 });
        // Observers heard each transition, in order.
        let heard = async {
            loop {
                let seen = observed.lock().map(|v| v.clone()).unwrap_or_default();
                if seen.len() >= 2 {
                    break seen;
                }
                tokio::task::yield_now().await;
            }
        };
        let seen = tokio::time::timeout(Duration::from_secs(10), heard).await.unwrap();
        assert_eq!(seen, vec![Changed { from: a, to: b }, Changed { from: b, to: c }]);
        // Unpublished commits are published by the service.
        let rounds = vec![CommitRound { from: c, to: SystemState::IfaceColdplug, since_us: 10 }];
        s.send(CommitRounds { rounds, published: false }).await.unwrap();
        assert_eq!(snap.borrow().state, SystemState::IfaceColdplug);
    }

    struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<Changed>>>);

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Handler<StateChanges> for Recorder {
        type Result = ();
        fn handle(&mut self, msg: StateChanges, _: &mut Self::Context) {
            if let Ok(mut v) = self.0.lock() {
                v.extend(msg.0.iter().copied());
            }
        }
    }
}
