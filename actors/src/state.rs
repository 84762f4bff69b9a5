//! `StateService`: the sole owner of the current system state, when it was
//! entered, the bounded journal of consent rounds, and the observers and
//! waiters that follow the state. It changes state only on a [`Commit`]
//! whose `from` is the current state.
//!
//! The Supervisor commits with [`CommitRound`], which it does not wait
//! for; so that a reader who saw a walk answered also reads its state,
//! it publishes the reading it commits at once through a
//! [`StatePublisher`] (the same value this service publishes when the
//! message arrives).
//!
//! A waiter whose asker went away (a client that hung up) is forgotten
//! without waiting for a commit that may never come: [`AddWaiter`] hands
//! the service only the sending half of a oneshot, so a dropped receiver
//! shows as a closed sender, and closed senders are swept when waiters are
//! added (amortised) and on a timer while any are kept.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use lwsys_messages::state::{
    Changed, Commit, CommitRefused, CommitRound, GetJournal, GetState, Journal, JournalEntry,
    Observe, RecordRound, StateReading, SystemState, WaitFor, WaitTimedOut,
};
use slog::{debug, warn, Logger};
use tokio::sync::{oneshot, watch};

use crate::time::unix_us;

/// How many consent rounds the journal keeps unless configured otherwise.
pub const DEFAULT_JOURNAL_LEN: usize = 256;

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
    journal: VecDeque<JournalEntry>,
    journal_len: usize,
    observers: Vec<Recipient<Changed>>,
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
/// handled the [`CommitRound`] (see the module docs). Only the Supervisor
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
    /// A service at `CONTEXT_CREATED` keeping at most `journal_len` rounds
    /// (at least one).
    pub fn new(log: &Logger, journal_len: usize) -> Self {
        let since_us = unix_us();
        let state = SystemState::ContextCreated;
        Self {
            state,
            since_us,
            journal: VecDeque::with_capacity(journal_len.clamp(1, 1024)),
            journal_len: journal_len.max(1),
            observers: Vec::new(),
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
        let changed = Changed { from, to };
        // An observer whose actor stopped is dropped here rather than kept
        // forever: do_send to it would be silently lost anyway.
        self.observers.retain(|o| o.connected());
        for o in &self.observers {
            o.do_send(changed);
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

    fn record(&mut self, entry: JournalEntry) {
        if self.journal.len() == self.journal_len {
            self.journal.pop_front();
        }
        self.journal.push_back(entry);
    }
}

impl Handler<Commit> for StateService {
    type Result = Result<StateReading, CommitRefused>;

    fn handle(&mut self, msg: Commit, _ctx: &mut Self::Context) -> Self::Result {
        if msg.from != self.state {
            return Err(CommitRefused { expected: msg.from, current: self.state });
        }
        self.apply(msg.from, msg.to, unix_us(), true);
        Ok(self.reading())
    }
}

impl Handler<CommitRound> for StateService {
    type Result = ();

    fn handle(&mut self, msg: CommitRound, _ctx: &mut Self::Context) {
        if msg.from == self.state {
            self.apply(msg.from, msg.to, msg.since_us, !msg.published);
        } else {
            // Only the Supervisor commits, in order: this is a bug. Keep
            // the state and say so rather than follow a stale writer.
            warn!(self.log, "commit refused"; "from" => %msg.from, "to" => %msg.to,
                  "current" => %self.state);
        }
        self.record(msg.round);
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

impl Handler<RecordRound> for StateService {
    type Result = ();

    fn handle(&mut self, msg: RecordRound, _ctx: &mut Self::Context) {
        self.record(msg.0);
    }
}

impl Handler<GetJournal> for StateService {
    type Result = MessageResult<GetJournal>;

    fn handle(&mut self, _msg: GetJournal, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(Journal {
            state: Some(self.reading()),
            rounds: self.journal.iter().cloned().collect(),
        })
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

    use lwsys_messages::state::{RoundOutcome, Verdict};

    use super::*;

    fn log() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    #[actix_rt::test]
    async fn commit_changes_state_only_from_the_current_one() {
        let s = StateService::new(&log(), 8).start();
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
        let s = StateService::new(&log(), 8).start();
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
        let s = StateService::new(&log(), 8).start();
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
        let svc = StateService::new(&log(), 8);
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
        let s = StateService::new(&log(), 8).start();
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
        let s = StateService::new(&log(), 8).start();
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
        let s = StateService::new(&log(), 8).start();
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
    async fn commit_round_commits_and_journals_in_one_message_and_never_moves_readers_back() {
        let svc = StateService::new(&log(), 8);
        let (snap, publisher) = (svc.snapshot(), svc.publisher());
        let s = svc.start();
        let entry = |target| JournalEntry {
            at_us: 5,
            current: SystemState::ContextCreated,
            target,
            verdicts: Vec::new(),
            inline_ns: 0,
            outcome: RoundOutcome::Committed,
        };
        // The committer published a newer reading already: the service's
        // handling of the older commit must not replace it.
        let newer = StateReading { state: SystemState::Initialized, since_us: 9 };
        publisher.publish(newer);
        let (from, to) = (SystemState::ContextCreated, SystemState::PrePrivDrop);
        let round = entry(to);
        s.send(CommitRound { from, to, since_us: 7, round, published: true }).await.unwrap();
        assert_eq!(*snap.borrow(), newer);
        let reading = s.send(GetState).await.unwrap();
        assert_eq!(reading, StateReading { state: to, since_us: 7 });
        // A commit from a state that is not current changes nothing but is
        // still journalled.
        let (from, to) = (SystemState::ContextCreated, SystemState::Operational);
        let round = entry(to);
        s.send(CommitRound { from, to, since_us: 8, round, published: false }).await.unwrap();
        assert_eq!(s.send(GetState).await.unwrap().state, SystemState::PrePrivDrop);
        assert_eq!(s.send(GetJournal).await.unwrap().rounds.len(), 2);
    }

    #[actix_rt::test]
    async fn journal_keeps_the_newest_rounds_up_to_its_bound() {
        let s = StateService::new(&log(), 3).start();
        for i in 0..5u64 {
            s.send(RecordRound(JournalEntry {
                at_us: i,
                current: SystemState::ContextCreated,
                target: SystemState::PrePrivDrop,
                verdicts: vec![lwsys_messages::NotifierVerdict {
                    name: "n".into(),
                    verdict: Verdict::Allow,
                    latency_us: None,
                }],
                inline_ns: 0,
                outcome: RoundOutcome::Committed,
            }))
            .await
            .unwrap();
        }
        let j = s.send(GetJournal).await.unwrap();
        let at: Vec<u64> = j.rounds.iter().map(|r| r.at_us).collect();
        assert_eq!(at, vec![2, 3, 4]);
    }
}
