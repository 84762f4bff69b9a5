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
use lwsys::messages::state::SystemState;
use lwsys::SystemHandle;

#[path = "../benches/support/boot_walk.rs"]
mod boot_walk;
use boot_walk::{build, settle, Yes};

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
