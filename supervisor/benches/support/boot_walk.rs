//! The boot walk's set-up, shared by `benches/transitions.rs` (timed) and
//! `examples/walk_profile.rs` (instruction counts), so that both measure
//! the same walk: a fresh system held at CONTEXT_CREATED with `n`
//! notifiers that allow everything, inline or actor.

use actix::prelude::*;
use lwsys::messages::state::{Aborted, Changed, Consent, SystemState, Verdict};
use lwsys::{Builder, NotifierSpec, SystemHandle};

/// An actor notifier that allows everything, answering synchronously.
pub struct Yes;

impl Actor for Yes {
    type Context = Context<Self>;
}

impl Handler<Consent> for Yes {
    type Result = Verdict;

    fn handle(&mut self, _: Consent, _: &mut Context<Self>) -> Verdict {
        Verdict::Allow
    }
}

impl Handler<Changed> for Yes {
    type Result = ();

    fn handle(&mut self, _: Changed, _: &mut Context<Self>) {}
}

impl Handler<Aborted> for Yes {
    type Result = ();

    fn handle(&mut self, _: Aborted, _: &mut Context<Self>) {}
}

/// A system held at CONTEXT_CREATED with `n` notifiers that allow
/// everything: the first `n` of `actors` when `actor`, else inline ones.
pub fn build(actor: bool, actors: &[Addr<Yes>], n: usize) -> SystemHandle {
    let specs = (0..n).map(|i| {
        let name = format!("n{i}");
        if actor {
            NotifierSpec::actor(&name, &actors[i])
        } else {
            NotifierSpec::inline(&name, |_, _| Verdict::Allow)
        }
    });
    Builder::new()
        .boot_target(SystemState::ContextCreated)
        .journal_len(16)
        .notifiers(specs)
        .start()
        .expect("build")
}

/// Lets the new system's actors start, or the last walk's `Changed`
/// messages drain, so that neither is billed to the next walk.
pub async fn settle(h: &SystemHandle) {
    for _ in 0..4 {
        let _ = h.state().await;
        tokio::task::yield_now().await;
    }
}
