//! Tests for `AttachService` and its handles.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use lwsys_messages::attach::{AttachError, GetAttachStats, SetSystem};
use lwsys_messages::state::{Changed, SystemState};
use tokio::sync::mpsc;

use super::{AttachConfig, AttachHandle, AttachService};

use SystemState::*;

fn log() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn start(state: SystemState, config: AttachConfig) -> (Addr<AttachService>, AttachHandle) {
    AttachService::start_with_handle(&log(), state, config)
}

/// Counts its drops, to see that a closure's destructor ran.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Attaches an item that reports `tag` on `tx` when it runs.
#[track_caller]
fn report(h: &AttachHandle, state: SystemState, tx: &mpsc::UnboundedSender<u32>, tag: u32) {
    let tx = tx.clone();
    h.attach(state, move |_| {
        let _ = tx.send(tag);
    })
    .unwrap();
}

async fn take(rx: &mut mpsc::UnboundedReceiver<u32>, n: usize) -> Vec<u32> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        got.push(rx.recv().await.unwrap());
    }
    got
}

async fn change(addr: &Addr<AttachService>, from: SystemState, to: SystemState) {
    addr.send(Changed { from, to }).await.unwrap();
}

#[actix_rt::test]
async fn ready_items_run_in_the_order_they_were_queued() {
    let (_addr, h) = start(Operational, AttachConfig::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let states = [Operational, ContextCreated, TimeValid, Operational, Dhcp];
    for i in 0..100u32 {
        report(&h, states[i as usize % states.len()], &tx, i);
    }
    assert_eq!(take(&mut rx, 100).await, (0..100).collect::<Vec<_>>());
}

#[actix_rt::test]
async fn waiting_items_run_when_their_state_comes_in_submission_order() {
    let (addr, h) = start(Initialized, AttachConfig::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    report(&h, Operational, &tx, 1);
    report(&h, Dhcp, &tx, 2);
    let stats = addr.send(GetAttachStats).await.unwrap();
    assert_eq!((stats.waiting, stats.pending, stats.run), (2, 2, 0));
    report(&h, Operational, &tx, 3);
    report(&h, Dhcp, &tx, 4);
    report(&h, Initialized, &tx, 5);
    assert_eq!(take(&mut rx, 1).await, [5], "an item for the current state runs at once");
    change(&addr, Initialized, Dhcp).await;
    assert_eq!(take(&mut rx, 2).await, [2, 4]);
    report(&h, Dhcp, &tx, 6);
    assert_eq!(take(&mut rx, 1).await, [6]);
    change(&addr, Dhcp, Operational).await;
    assert_eq!(take(&mut rx, 2).await, [1, 3]);
    let stats = addr.send(GetAttachStats).await.unwrap();
    assert_eq!((stats.waiting, stats.pending, stats.run), (0, 0, 6));
}

#[actix_rt::test]
async fn items_released_together_run_in_global_submission_order() {
    let (addr, h) = start(Initialized, AttachConfig::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    report(&h, Operational, &tx, 1);
    report(&h, Dhcp, &tx, 2);
    report(&h, Operational, &tx, 3);
    report(&h, TimeValid, &tx, 4);
    // Straight to OPERATIONAL: every queue is released at once.
    change(&addr, Initialized, Operational).await;
    assert_eq!(take(&mut rx, 4).await, [1, 2, 3, 4]);
}

#[actix_rt::test]
async fn numeric_rule_runs_operational_items_at_policy_invalid() {
    let (addr, h) = start(PolicyInvalid, AttachConfig::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    report(&h, Operational, &tx, 1);
    report(&h, ContextDestroying, &tx, 2);
    assert_eq!(take(&mut rx, 1).await, [1]);
    // Policy invalid sends the system back down: OPERATIONAL items wait
    // again for the way back up.
    change(&addr, PolicyInvalid, Initialized).await;
    report(&h, Operational, &tx, 3);
    let stats = addr.send(GetAttachStats).await.unwrap();
    assert_eq!(stats.waiting, 2);
    change(&addr, Initialized, ContextDestroying).await;
    assert_eq!(take(&mut rx, 2).await, [2, 3]);
}

#[actix_rt::test]
async fn cancel_stops_an_item_not_yet_run_and_drops_its_closure() {
    let (addr, h) = start(Initialized, AttachConfig::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let drops = Arc::new(AtomicUsize::new(0));
    let guard = DropCount(drops.clone());
    let tx2 = tx.clone();
    let ticket = h
        .attach(Operational, move |_| {
            let _keep = &guard;
            let _ = tx2.send(1);
        })
        .unwrap();
    assert!(ticket.is_pending());
    assert!(ticket.cancel());
    assert_eq!(drops.load(Ordering::SeqCst), 1, "the closure was dropped by cancel");
    assert!(!ticket.cancel(), "a second cancel does nothing");
    assert!(!ticket.is_pending());

    let ran = h
        .attach(Initialized, {
            let tx = tx.clone();
            move |_| {
                let _ = tx.send(2);
            }
        })
        .unwrap();
    assert_eq!(take(&mut rx, 1).await, [2]);
    assert!(!ran.cancel(), "an item that ran cannot be cancelled");

    change(&addr, Initialized, Operational).await;
    report(&h, Operational, &tx, 3);
    assert_eq!(take(&mut rx, 1).await, [3], "the cancelled item never ran");
    let stats = addr.send(GetAttachStats).await.unwrap();
    assert_eq!((stats.cancelled, stats.run, stats.pending), (1, 2, 0));
}

#[actix_rt::test]
async fn flush_waits_for_the_calling_threads_items_only() {
    let (_addr, h) = start(Operational, AttachConfig::default());
    let mut threads = Vec::new();
    for t in 0..4 {
        let h = h.clone();
        threads.push(std::thread::spawn(move || {
            let count = Arc::new(AtomicUsize::new(0));
            for _ in 0..1000 {
                let c = count.clone();
                h.attach(Operational, move |_| {
                    c.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            }
            h.flush(Duration::from_secs(30)).unwrap();
            assert_eq!(count.load(Ordering::SeqCst), 1000, "thread {t}");
        }));
    }
    // A thread whose own item waits for a state never reached times out,
    // while the others' flushes (above) are not held up by it.
    let blocked = {
        let h = h.clone();
        std::thread::spawn(move || {
            h.attach(ModalUpdating, |_| {}).unwrap();
            h.flush(Duration::from_millis(50))
        })
    };
    let results = tokio::task::spawn_blocking(move || {
        let others: Vec<_> = threads.into_iter().map(|t| t.join().is_ok()).collect();
        (others, blocked.join().unwrap())
    })
    .await
    .unwrap();
    assert_eq!(results.0, [true; 4]);
    assert_eq!(results.1, Err(AttachError::FlushTimeout { outstanding: 1 }));
}

#[actix_rt::test]
async fn flush_on_the_loop_thread_is_refused() {
    let (addr, h) = start(Operational, AttachConfig::default());
    addr.send(GetAttachStats).await.unwrap();
    assert_eq!(h.flush(Duration::from_secs(1)), Err(AttachError::OnLoop));
}

#[actix_rt::test]
async fn bound_reached_refuses_attach_and_loses_nothing() {
    let (addr, h) = start(Initialized, AttachConfig { bound: 100, ..Default::default() });
    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..100 {
        report(&h, Operational, &tx, i);
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let guard = DropCount(drops.clone());
    let refused = h.attach(Operational, move |_| drop(guard));
    assert_eq!(refused.unwrap_err(), AttachError::Full { bound: 100 });
    assert_eq!(drops.load(Ordering::SeqCst), 1, "the refused closure was dropped");
    let stats = addr.send(GetAttachStats).await.unwrap();
    assert_eq!((stats.pending, stats.rejected), (100, 1));

    change(&addr, Initialized, Operational).await;
    assert_eq!(take(&mut rx, 100).await, (0..100).collect::<Vec<_>>());
    // Room again once they ran.
    report(&h, Operational, &tx, 100);
    assert_eq!(take(&mut rx, 1).await, [100]);
}

#[actix_rt::test]
async fn a_panicking_callback_is_caught_and_counted() {
    let (addr, h) = start(Operational, AttachConfig::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    h.attach(Operational, |_| panic!("callback bug")).unwrap();
    report(&h, Operational, &tx, 1);
    assert_eq!(take(&mut rx, 1).await, [1]);
    let stats = addr.send(GetAttachStats).await.unwrap();
    assert_eq!((stats.run, stats.panicked, stats.pending), (2, 1, 0));
}

#[actix_rt::test]
async fn eight_threads_of_ten_thousand_items_run_exactly_once_in_order() {
    const THREADS: usize = 8;
    const ITEMS: u32 = 10_000;
    let (addr, h) = start(Operational, AttachConfig::default());
    // Only the loop thread touches this; the mutex is for Send.
    let seen = Arc::new(Mutex::new(vec![Vec::<u32>::new(); THREADS]));
    let mut threads = Vec::new();
    for t in 0..THREADS {
        let (h, seen) = (h.clone(), seen.clone());
        threads.push(std::thread::spawn(move || {
            let mut full = 0u64;
            for i in 0..ITEMS {
                loop {
                    let seen = seen.clone();
                    match h.attach(Operational, move |_| seen.lock().unwrap()[t].push(i)) {
                        Ok(_) => break,
                        Err(AttachError::Full { .. }) => {
                            full += 1;
                            std::thread::yield_now();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            h.flush(Duration::from_secs(60)).unwrap();
            full
        }));
    }
    let full: u64 =
        tokio::task::spawn_blocking(move || threads.into_iter().map(|t| t.join().unwrap()).sum())
            .await
            .unwrap();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    for (t, items) in seen.iter().enumerate() {
        assert_eq!(items.len(), ITEMS as usize, "thread {t}");
        assert!(items.iter().copied().eq(0..ITEMS), "thread {t} out of order");
    }
    let stats = addr.send(GetAttachStats).await.unwrap();
    assert_eq!(stats.run, THREADS as u64 * u64::from(ITEMS));
    assert_eq!((stats.pending, stats.rejected), (0, full));
}

#[actix_rt::test]
async fn shutdown_drops_pending_items_and_releases_flush() {
    let (addr, h) = start(Initialized, AttachConfig::default());
    let drops = Arc::new(AtomicUsize::new(0));
    let (queued_tx, queued_rx) = tokio::sync::oneshot::channel();
    let flusher = {
        let (h, drops) = (h.clone(), drops.clone());
        std::thread::spawn(move || {
            for _ in 0..10 {
                let guard = DropCount(drops.clone());
                h.attach(Operational, move |_| drop(guard)).unwrap();
            }
            let _ = queued_tx.send(());
            h.flush(Duration::from_secs(60))
        })
    };
    queued_rx.await.unwrap();
    // Stop the service from a callback on its own loop.
    h.attach(Initialized, |ctx| ctx.context().stop()).unwrap();
    let flushed = tokio::task::spawn_blocking(move || flusher.join().unwrap()).await.unwrap();
    assert_eq!(flushed, Err(AttachError::Shutdown));
    assert_eq!(drops.load(Ordering::SeqCst), 10, "every pending closure was dropped, none run");
    assert!(h.is_closed());
    assert_eq!(h.attach(Operational, |_| {}).unwrap_err(), AttachError::Shutdown);
    assert!(!addr.connected());
}

#[actix_rt::test]
async fn callbacks_reach_state_system_and_spawn() {
    let (addr, h) = start(Operational, AttachConfig::default());
    addr.send(SetSystem::fixed(Arc::new(42u32))).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    h.attach(TimeValid, move |ctx| {
        assert_eq!(ctx.state(), Operational);
        assert_eq!(ctx.system::<u32>(), Some(&42));
        assert_eq!(ctx.system::<String>(), None);
        assert!(ctx.origin().file().ends_with("tests.rs"));
        ctx.spawn(async move {
            tokio::task::yield_now().await;
            let _ = tx.send(7);
        });
    })
    .unwrap();
    assert_eq!(take(&mut rx, 1).await, [7]);
}

#[actix_rt::test]
async fn a_flood_yields_the_thread_between_batches() {
    const N: u64 = 100_000;
    let (addr, h) = start(Initialized, AttachConfig { bound: 1 << 20, batch: 64 });
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..N {
        let ran = ran.clone();
        h.attach(Operational, move |_| {
            ran.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    }
    while addr.send(GetAttachStats).await.unwrap().waiting < N {}
    // Releases every item at once; the handler runs one batch and replies.
    change(&addr, Initialized, Operational).await;
    // This task got the thread back while the flood was still draining:
    // the loop yields between batches instead of running them all.
    let done_when_we_ran = ran.load(Ordering::Relaxed);
    assert!(done_when_we_ran < 1000, "{done_when_we_ran} items ran before other tasks");
    while addr.send(GetAttachStats).await.unwrap().pending > 0 {}
    assert_eq!(ran.load(Ordering::Relaxed) as u64, N);
}

#[actix_rt::test]
async fn detached_items_keep_order_bound_flush_and_panic_report_with_ticketed_ones() {
    let (addr, h) = start(Initialized, AttachConfig { bound: 4, ..Default::default() });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let send = |tag: u32| {
        let tx = tx.clone();
        move |_: &mut super::AttachCtx<'_>| {
            let _ = tx.send(tag);
        }
    };
    h.attach_detached(Operational, send(1)).unwrap();
    h.attach(Operational, send(2)).unwrap();
    h.attach_detached(Operational, |_| panic!("detached bug")).unwrap();
    h.attach_detached(Operational, send(3)).unwrap();
    // The bound (4) counts detached items too; the refused closure is
    // dropped here, unrun.
    let drops = Arc::new(AtomicUsize::new(0));
    let guard = DropCount(drops.clone());
    let refused = h.attach_detached(Operational, move |_| drop(guard));
    assert_eq!(refused, Err(AttachError::Full { bound: 4 }));
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    change(&addr, Initialized, Operational).await;
    assert_eq!(take(&mut rx, 3).await, [1, 2, 3], "FIFO across both kinds");
    let stats = addr.send(GetAttachStats).await.unwrap();
    assert_eq!((stats.run, stats.panicked, stats.pending, stats.rejected), (4, 1, 0, 1));
    // flush waits for this thread's detached items as for ticketed ones.
    let flushed = {
        let h = h.clone();
        tokio::task::spawn_blocking(move || {
            let count = Arc::new(AtomicUsize::new(0));
            for _ in 0..3 {
                let c = count.clone();
                h.attach_detached(Operational, move |_| {
                    c.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            }
            h.flush(Duration::from_secs(30)).map(|()| count.load(Ordering::SeqCst))
        })
        .await
        .unwrap()
    };
    assert_eq!(flushed, Ok(3));
}

#[actix_rt::test]
async fn shutdown_drops_detached_items_unrun() {
    let (addr, h) = start(Initialized, AttachConfig::default());
    let drops = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let guard = DropCount(drops.clone());
        h.attach_detached(Operational, move |_| drop(guard)).unwrap();
    }
    h.attach_detached(Initialized, |ctx| ctx.context().stop()).unwrap();
    while addr.connected() {
        tokio::task::yield_now().await;
    }
    assert_eq!(drops.load(Ordering::SeqCst), 10, "every pending closure was dropped, none run");
    assert_eq!(h.attach_detached(Operational, |_| {}), Err(AttachError::Shutdown));
}

#[actix_rt::test]
async fn a_threads_reserve_counts_against_the_bound_and_goes_back_when_it_exits() {
    // 4,096 slots are claimed 4 at a time (`credit_chunk`).
    const BOUND: usize = 4096;
    assert_eq!(super::handle::credit_chunk(BOUND), 4);
    let (addr, h) = start(Initialized, AttachConfig { bound: BOUND, ..Default::default() });
    let other = h.clone();
    // A thread of its own (not tokio's blocking pool, which keeps its
    // threads), so that it exits before the join returns.
    let reserve_while_alive = std::thread::spawn(move || {
        other.attach_detached(Operational, |_| {}).unwrap();
        // One item pending; this thread holds 3 more slots in reserve.
        other.shared.claimed.0.load(Ordering::SeqCst) - other.pending()
    })
    .join()
    .unwrap();
    assert_eq!(reserve_while_alive, 3);
    // The thread has exited and given its reserve back: everything but
    // its one item is free again, for this thread to fill exactly.
    assert_eq!(h.pending(), 1);
    let mut accepted = 0;
    while h.attach_detached(Operational, |_| {}).is_ok() {
        accepted += 1;
    }
    assert_eq!(accepted, BOUND - 1);
    let stats = addr.send(GetAttachStats).await.unwrap();
    assert_eq!((stats.pending, stats.rejected), (BOUND as u64, 1));
    change(&addr, Initialized, Operational).await;
    while addr.send(GetAttachStats).await.unwrap().run < BOUND as u64 {}
    assert_eq!(h.pending(), 0);
}

#[actix_rt::test]
async fn attaching_while_the_service_stops_runs_or_drops_every_accepted_item() {
    const THREADS: usize = 4;
    let (addr, h) = start(Operational, AttachConfig::default());
    let ran = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (h, ran, dropped, accepted, refused) =
                (h.clone(), ran.clone(), dropped.clone(), accepted.clone(), refused.clone());
            std::thread::spawn(move || loop {
                let (ran, guard) = (ran.clone(), DropCount(dropped.clone()));
                match h.attach_detached(Operational, move |_| {
                    ran.fetch_add(1, Ordering::SeqCst);
                    drop(guard);
                }) {
                    Ok(()) => accepted.fetch_add(1, Ordering::SeqCst),
                    Err(AttachError::Full { .. }) => refused.fetch_add(1, Ordering::SeqCst),
                    Err(AttachError::Shutdown) => {
                        refused.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    Err(e) => panic!("{e}"),
                };
            })
        })
        .collect();
    // Stop from a callback once the producers are well under way.
    while ran.load(Ordering::SeqCst) < 10_000 {
        tokio::task::yield_now().await;
    }
    h.attach(Operational, |ctx| ctx.context().stop()).unwrap();
    tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| t.join().unwrap()))
        .await
        .unwrap();
    while addr.connected() {
        tokio::task::yield_now().await;
    }
    // Each closure that ran was dropped too; one that did not was dropped
    // by the loop's shutdown or by the attach that found it closed, and a
    // refused one by its attach.
    let accepted = accepted.load(Ordering::SeqCst);
    let refused = refused.load(Ordering::SeqCst);
    assert_eq!(dropped.load(Ordering::SeqCst), accepted + refused, "every closure is gone");
    assert!(ran.load(Ordering::SeqCst) <= accepted);
    assert_eq!(h.pending(), 0, "no slot is left claimed");
    assert_eq!(h.attach_detached(Operational, |_| {}), Err(AttachError::Shutdown));
}

#[actix_rt::test]
async fn an_item_sent_after_the_loop_closed_is_dropped_by_its_sender() {
    let (addr, h) = start(Operational, AttachConfig::default());
    h.attach(Operational, |ctx| ctx.context().stop()).unwrap();
    while addr.connected() {
        tokio::task::yield_now().await;
    }
    // The tail of an attach that was admitted just before the loop closed
    // and sends just after its last drain: nothing will read the channel
    // again, so the sender must drop the item itself.
    let drops = Arc::new(AtomicUsize::new(0));
    let guard = DropCount(drops.clone());
    let s = &h.shared;
    s.claimed.0.fetch_add(1, Ordering::SeqCst);
    let job = super::job::Work::Owned(Box::new(move |_: &mut super::AttachCtx<'_>| drop(guard)));
    let item = super::handle::Item {
        job,
        state: Operational,
        track: 0,
        origin: std::panic::Location::caller(),
    };
    assert!(s.tx.send(item).is_ok(), "the handles keep the channel open");
    s.wake();
    assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped, unrun");
    assert!(s.rx.is_empty());
    assert_eq!(h.pending(), 0);
}
