//! A system built by the library is freed when its last `SystemHandle` goes
//! (or a shutdown through it commits): its actors stop, the blob service's
//! thread ends and its memory is given back. Built and dropped 1,000 times
//! in one process, the thread count and RSS stay flat.
//!
//! One test in this file, so that no other test's threads or memory move
//! the process-wide figures it reads from /proc/self/status.
// Unwrap is fine in tests, but clippy's allow-unwrap-in-tests only covers
// `#[test]` functions, not this file's helpers.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use lwsys::messages::state::{SystemState, Verdict};
use lwsys::services::{ServiceConfig, Services};
use lwsys::{Builder, SystemHandle};

/// Systems built and dropped in all.
const SYSTEMS: usize = 1000;
/// Systems built before the baseline is taken: allocator pools, lazily
/// created statics and the runtime's own threads have settled by then.
const WARM_UP: usize = 100;
/// How much RSS may grow over the 900 systems after the baseline.
/// Measured in a debug build: before the fix each system kept its actors
/// and its blob thread (102 -> 1002 threads, 19,120 -> 101,372 KiB); after
/// it, 2 -> 2 threads and 36 to 116 KiB of allocator noise. A failed build
/// that left its actors running cost about 12 KiB each, so the 180 failed
/// builds below would also break this bound.
const RSS_BOUND_KIB: u64 = 1024;
/// How long a torn-down system may take to be gone (normally well under a
/// millisecond; the bound only turns a leak into a failure, not a hang).
const GONE_WITHIN: Duration = Duration::from_secs(10);

/// A field of /proc/self/status, in its own unit (kB for VmRSS).
fn status(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = text.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn threads() -> u64 {
    status("Threads:")
}

fn rss_kib() -> u64 {
    status("VmRSS:")
}

/// Waits until `done` holds, giving the loop turns meanwhile (the teardown
/// runs on it); fails with `what` after [`GONE_WITHIN`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + GONE_WITHIN;
    while !done() {
        assert!(Instant::now() < deadline, "{what} after {GONE_WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Whether every service actor of a system has stopped.
fn stopped(s: &Services) -> bool {
    !s.blobs.connected() && !s.clock.connected() && !s.trust.connected()
}

/// Builds system `i`, uses it in one of several ways, drops every handle
/// and waits until its services have stopped.
async fn one_system(i: usize) {
    if i % 5 == 2 {
        // A build that fails after its services started (the clock is a
        // notifier named "clock" already) stops what it started.
        let failed = Builder::new()
            .services(ServiceConfig::default())
            .inline_notifier("clock", |_: SystemState, _: SystemState| Verdict::Allow)
            .start();
        assert!(failed.is_err(), "system {i}: a duplicate notifier name was accepted");
    }
    let mut b = Builder::new().services(ServiceConfig::default());
    if i % 2 == 0 {
        b = b.inline_notifier("n", |_: SystemState, _: SystemState| Verdict::Allow);
    }
    let h = b.start().unwrap();
    let services = h.services().unwrap();
    let weak = h.downgrade();
    match i % 4 {
        // An attach callback that reaches the handle, as callbacks may.
        0 => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            h.attach(SystemState::Operational, move |ctx| {
                let _ = tx.send(ctx.system::<SystemHandle>().is_some());
            })
            .unwrap();
            assert!(rx.await.unwrap(), "system {i}: the callback did not see the handle");
            drop(h);
        }
        // A plain thread with the blocking API holds the last handle.
        1 => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let thread = std::thread::spawn(move || {
                let state = h.blocking().wait_for(SystemState::Operational, None);
                drop(h);
                let _ = tx.send(());
                state
            });
            rx.await.unwrap();
            assert_eq!(thread.join().unwrap(), Ok(SystemState::Operational), "system {i}");
        }
        // Shut down while a handle is still held: that frees it too.
        2 => {
            let r = h.shutdown().await.unwrap().unwrap();
            assert_eq!(r.state, SystemState::ContextDestroying, "system {i}");
            wait_until(&format!("system {i} still runs after its shutdown"), || stopped(&services))
                .await;
            assert!(h.is_torn_down(), "system {i}");
            drop(h);
        }
        // Dropped at once, mid boot walk.
        _ => drop(h),
    }
    assert!(weak.upgrade().is_none(), "system {i}: something internal kept a strong handle");
    wait_until(&format!("system {i}'s services still run with no handle left"), || {
        stopped(&services)
    })
    .await;
}

#[actix_rt::test]
async fn a_thousand_dropped_systems_leave_threads_and_rss_flat() {
    let started = Instant::now();
    for i in 0..WARM_UP {
        one_system(i).await;
    }
    let before = threads();
    // The blob threads of the last systems end a little after their
    // services report stopped.
    wait_until("the warm-up's blob threads did not end", || threads() <= before).await;
    let (base_threads, base_rss) = (threads(), rss_kib());
    for i in WARM_UP..SYSTEMS {
        one_system(i).await;
    }
    wait_until(
        &format!("threads stayed above the baseline of {base_threads} (now {})", threads()),
        || threads() <= base_threads,
    )
    .await;
    let (end_threads, end_rss) = (threads(), rss_kib());
    eprintln!(
        "after {WARM_UP} systems: {base_threads} threads, {base_rss} KiB RSS; after {SYSTEMS}: \
         {end_threads} threads, {end_rss} KiB RSS; {:?}",
        started.elapsed()
    );
    assert_eq!(end_threads, base_threads, "threads after {SYSTEMS} systems");
    let grown = end_rss.saturating_sub(base_rss);
    assert!(
        grown < RSS_BOUND_KIB,
        "RSS grew {grown} KiB over {} systems (bound {RSS_BOUND_KIB} KiB)",
        SYSTEMS - WARM_UP
    );
}
