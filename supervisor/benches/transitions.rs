//! Criterion benchmark of the boot walk CONTEXT_CREATED -> OPERATIONAL (14
//! transitions) with 1, 10 and 100 consenting notifiers, inline and actor.
//! Only `steps(OPERATIONAL)` is timed: each iteration builds a fresh system
//! held at CONTEXT_CREATED first, outside the measured span, and lets its
//! actors start (and the previous system's teardown run) before the clock
//! starts, so that neither is billed to the walk.

use std::time::{Duration, Instant};

use actix::prelude::*;
use criterion::{BenchmarkId, Criterion};
use lwsys::messages::state::SystemState;

#[path = "support/boot_walk.rs"]
mod boot_walk;
use boot_walk::{build, settle, Yes};

fn boot_walk(c: &mut Criterion) {
    let sys = actix_rt::System::new();
    let actors: Vec<Addr<Yes>> = sys.block_on(async { (0..100).map(|_| Yes.start()).collect() });
    let mut group = c.benchmark_group("boot_walk");
    group.sample_size(25).measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for (label, actor) in [("inline", false), ("actor", true)] {
        for n in [1usize, 10, 100] {
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, &n| {
                b.iter_custom(|iters| {
                    sys.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let h = build(actor, &actors, n);
                            // The new system's actors start, and the last
                            // one's teardown runs, before the clock starts.
                            settle(&h).await;
                            let t = Instant::now();
                            let r = h.steps(SystemState::Operational).await;
                            total += t.elapsed();
                            assert!(matches!(r, Ok(Ok(ref w)) if w.reached), "walk: {r:?}");
                            settle(&h).await;
                            drop(h);
                            tokio::task::yield_now().await;
                        }
                        total
                    })
                });
            });
        }
    }
    group.finish();
}

// Written out rather than through `criterion_group!`, whose generated
// public function has no doc comment for the workspace's missing_docs lint.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    boot_walk(&mut c);
    c.final_summary();
}
