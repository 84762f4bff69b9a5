//! The Supervisor commits without waiting for the state service (issue
//! 19): a walk's answer still implies its state is what every reader sees
//! (`state_now`, `state`, the journal), and a long queue of inline-only
//! walks runs without the stack growing with it.
// Unwrap is fine in tests, but clippy's allow-unwrap-in-tests only covers
// `#[test]` functions, not this file's helpers.
#![allow(clippy::unwrap_used)]

use lwsys::messages::state::{RoundOutcome, SystemState, Verdict};
use lwsys::messages::supervisor::Cycle;
use lwsys::{Builder, NotifierSpec, SystemHandle};

fn held(n: usize) -> SystemHandle {
    let specs = (0..n).map(|i| NotifierSpec::inline(&format!("gate{i}"), |_, _| Verdict::Allow));
    Builder::new()
        .boot_target(SystemState::ContextCreated)
        .journal_len(64)
        .notifiers(specs)
        .start()
        .unwrap()
}

#[actix_rt::test]
async fn a_walk_answered_is_what_every_reader_sees_at_once() {
    let h = held(2);
    let r = h.steps(SystemState::Operational).await.unwrap().unwrap();
    assert!(r.reached);
    // No await between the answer and the reading: the commit was
    // published before the walk was answered.
    let now = h.state_now();
    assert_eq!(now.state, SystemState::Operational);
    let read = h.state().await.unwrap();
    assert_eq!(read, now, "the state service agrees with the published reading");
    let journal = h.explain().await.unwrap().journal;
    // CONTEXT_CREATED -> OPERATIONAL is 14 transitions, each one round.
    assert_eq!(journal.len(), 14);
    assert!(journal.iter().all(|e| e.outcome == RoundOutcome::Committed));
    assert!(journal.iter().all(|e| {
        let names: Vec<&str> = e.verdicts.iter().map(|v| &*v.name).collect();
        names == ["gate0", "gate1"]
    }));
    assert_eq!(journal.last().unwrap().target, SystemState::Operational);
    // Each commit is stamped no earlier than the round before it.
    assert!(journal.windows(2).all(|w| w[0].at_us <= w[1].at_us));
    assert!(now.since_us >= journal.last().unwrap().at_us);
}

#[actix_rt::test]
async fn a_long_queue_of_inline_walks_runs_in_one_turn_without_deepening_the_stack() {
    // 400 policy cycles of 13 transitions each are queued at once and all
    // run inline (5,200 commits): were each commit to recurse into the
    // queue, the test thread's stack would overflow.
    const CYCLES: usize = 400;
    let h = held(1);
    h.steps(SystemState::Operational).await.unwrap().unwrap();
    let walks: Vec<_> = (0..CYCLES).map(|_| h.cycle(Cycle::PolicyInvalidate)).collect();
    let results = futures::future::join_all(walks).await;
    assert_eq!(results.len(), CYCLES);
    for r in results {
        let r = r.unwrap().unwrap();
        assert!(r.reached);
        assert_eq!(r.state, SystemState::Operational);
    }
    assert_eq!(h.state_now().state, SystemState::Operational);
    assert_eq!(h.state().await.unwrap().state, SystemState::Operational);
}
