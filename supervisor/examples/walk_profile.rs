//! The boot walk of `benches/transitions.rs`, for an instruction count:
//! each walk runs inside [`walk_once`], so that
//! `valgrind --tool=callgrind --toggle-collect='*walk_once*'` counts the
//! walk alone (the supervisor and the notifier actors run on the same
//! thread, inside that call), not the building and settling around it.
//!
//! `cargo build --profile bench -p lwsys-supervisor --example walk_profile`,
//! then run it under callgrind with `inline|actor N WALKS` and divide the
//! total by WALKS.
// The walk count on stderr is this example's whole output.
#![allow(clippy::print_stderr)]

use actix::prelude::*;
use lwsys::messages::state::{Aborted, Changed, Consent, SystemState, Verdict};
use lwsys::{Builder, NotifierSpec, SystemHandle};

/// An actor notifier that allows everything, answering synchronously.
struct Yes;

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

fn build(actor: bool, actors: &[Addr<Yes>], n: usize) -> SystemHandle {
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

async fn settle(h: &SystemHandle) {
    for _ in 0..4 {
        let _ = h.state().await;
        tokio::task::yield_now().await;
    }
}

/// The measured span: one `steps(OPERATIONAL)`.
#[inline(never)]
fn walk_once(sys: &actix_rt::SystemRunner, h: &SystemHandle) -> bool {
    let r = sys.block_on(h.steps(SystemState::Operational));
    matches!(r, Ok(Ok(ref w)) if w.reached)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let actor = args.next().as_deref() == Some("actor");
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let walks: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    let sys = actix_rt::System::new();
    let actors: Vec<Addr<Yes>> = sys.block_on(async { (0..n).map(|_| Yes.start()).collect() });
    let mut ok = 0;
    for _ in 0..walks {
        let h = sys.block_on(async {
            let h = build(actor, &actors, n);
            settle(&h).await;
            h
        });
        ok += usize::from(walk_once(&sys, &h));
        sys.block_on(async {
            settle(&h).await;
            drop(h);
            tokio::task::yield_now().await;
        });
    }
    eprintln!("{ok}/{walks} walks reached OPERATIONAL");
    // scripts/test runs every example: a walk that fell short fails it.
    if ok != walks {
        std::process::exit(1);
    }
}
