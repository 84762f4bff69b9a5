//! `StateService`: the sole owner of the current system state, when it was
//! entered, the bounded journal of consent rounds, and the observers and
//! waiters that follow the state. It changes state only on a [`Commit`]
//! whose `from` is the current state.

use std::collections::VecDeque;

use actix::prelude::*;
use lwsys_messages::state::{
    Changed, Commit, CommitRefused, GetJournal, GetState, Journal, JournalEntry, Observe,
    RecordRound, StateReading, SystemState, WaitFor, WaitTimedOut,
};
use slog::{debug, Logger};
use tokio::sync::{oneshot, watch};

use crate::time::unix_us;

/// How many consent rounds the journal keeps unless configured otherwise.
pub const DEFAULT_JOURNAL_LEN: usize = 256;

/// Owns the current state. See the module docs.
pub struct StateService {
    state: SystemState,
    since_us: u64,
    journal: VecDeque<JournalEntry>,
    journal_len: usize,
    observers: Vec<Recipient<Changed>>,
    waiters: Vec<Waiter>,
    /// The current reading, for readers that must not wait for a turn of
    /// this actor's mailbox (`state.get` on a busy daemon).
    snapshot: watch::Sender<StateReading>,
    log: Logger,
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
            snapshot: watch::Sender::new(StateReading { state, since_us }),
            log: log.new(slog::o!("service" => "state")),
        }
    }

    /// The current reading, kept up to date by this service: updated
    /// before a commit is answered, so whoever saw a commit's reply reads
    /// the new state here.
    pub fn snapshot(&self) -> watch::Receiver<StateReading> {
        self.snapshot.subscribe()
    }

    fn reading(&self) -> StateReading {
        StateReading { state: self.state, since_us: self.since_us }
    }
}

impl Actor for StateService {
    type Context = Context<Self>;
}

impl Handler<Commit> for StateService {
    type Result = Result<StateReading, CommitRefused>;

    fn handle(&mut self, msg: Commit, _ctx: &mut Self::Context) -> Self::Result {
        if msg.from != self.state {
            return Err(CommitRefused { expected: msg.from, current: self.state });
        }
        self.state = msg.to;
        self.since_us = unix_us();
        self.snapshot.send_replace(self.reading());
        debug!(self.log, "state committed"; "from" => %msg.from, "to" => %msg.to);
        let changed = Changed { from: msg.from, to: msg.to };
        // An observer whose actor stopped is dropped here rather than kept
        // forever: do_send to it would be silently lost anyway.
        self.observers.retain(|o| o.connected());
        for o in &self.observers {
            o.do_send(changed);
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
        Ok(self.reading())
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

impl Handler<RecordRound> for StateService {
    type Result = ();

    fn handle(&mut self, msg: RecordRound, _ctx: &mut Self::Context) {
        if self.journal.len() == self.journal_len {
            self.journal.pop_front();
        }
        self.journal.push_back(msg.0);
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

    /// Test-only: how many waiters are kept.
    #[derive(Message)]
    #[rtype(result = "usize")]
    struct CountWaiters;

    impl Handler<CountWaiters> for StateService {
        type Result = usize;
        fn handle(&mut self, _: CountWaiters, _: &mut Self::Context) -> usize {
            self.waiters.len()
        }
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
