//! Benchmark of foreign-thread attach, measured the way upstream's was:
//! T foreign threads queue 100k callbacks (in all) for OPERATIONAL while
//! the loop runs; wall time from their release to the last callback, and
//! attach-to-callback latency p50/p99; then the latency of one item waking
//! an idle loop. Issue 19's figures too: the 4-thread timed run is a 100k
//! burst, whose drain time is the bound on its p99 and whose per-thread
//! order must hold (FIFO); and a sustained offered load of 1 M/s from 4
//! threads (paced, not a burst), with its attach-to-callback p99. The
//! producers use `attach_detached` (they never cancel); the `ticket` row
//! (`attach_callbacks_per_s_untimed_t4_ticket`) is the same run with
//! `attach` and its ticket dropped, the price of a ticket. Run with
//! `cargo bench --bench attach`; it takes a few seconds and prints medians
//! over several runs.
// A benchmark's output is its point.
#![allow(clippy::print_stdout)]

use std::cell::RefCell;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use lwsys_actors::attach::{AttachConfig, AttachHandle, AttachService};
use lwsys_messages::state::SystemState;

/// Callbacks per run, split over the producing threads.
const TOTAL: usize = 100_000;
/// Runs per configuration; the medians are reported.
const RUNS: usize = 7;
/// Idle-wake samples.
const WAKES: usize = 2_000;

/// What the callbacks record, on the loop thread only.
#[derive(Default)]
struct Recorder {
    lat_ns: Vec<u64>,
    remaining: usize,
    done: Option<crossbeam_channel::Sender<Instant>>,
    /// Per producer, the sequence number of its last item run.
    last_seq: Vec<Option<u32>>,
    /// Items that ran before an item their producer queued earlier.
    out_of_order: u64,
}

thread_local! {
    static REC: RefCell<Recorder> = RefCell::new(Recorder::default());
}

fn record(t0: Option<Instant>, producer: usize, seq: u32) {
    let now = Instant::now();
    REC.with(|r| {
        let mut r = r.borrow_mut();
        if let Some(t0) = t0 {
            r.lat_ns.push(u64::try_from((now - t0).as_nanos()).unwrap_or(u64::MAX));
        }
        if producer >= r.last_seq.len() {
            r.last_seq.resize(producer + 1, None);
        }
        if r.last_seq[producer].is_some_and(|last| last >= seq) {
            r.out_of_order += 1;
        }
        r.last_seq[producer] = Some(seq);
        r.remaining -= 1;
        if r.remaining == 0 {
            if let Some(tx) = r.done.take() {
                let _ = tx.send(now);
            }
        }
    });
}

fn start_loop() -> (AttachHandle, actix::System, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("attach-loop".into())
        .spawn(move || {
            let sys = actix::System::new();
            sys.block_on(async {
                let log = slog::Logger::root(slog::Discard, slog::o!());
                // The bound covers a whole run, so that the figures are
                // the drain's and not the producers' retries.
                let config = AttachConfig { bound: 1 << 18, ..AttachConfig::default() };
                let (_addr, h) =
                    AttachService::start_with_handle(&log, SystemState::Operational, config);
                let _ = tx.send((h, actix::System::current()));
            });
            let _ = sys.run();
        })
        .expect("spawn loop thread");
    let (h, sys) = rx.recv().expect("loop started");
    (h, sys, thread)
}

struct Run {
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    drain_us: f64,
    out_of_order: u64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Resets the recorder on the loop for `total` items.
fn arm(h: &AttachHandle, total: usize, timed: bool) -> crossbeam_channel::Receiver<Instant> {
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    h.attach(SystemState::Operational, move |_| {
        REC.with(|r| {
            *r.borrow_mut() = Recorder {
                lat_ns: Vec::with_capacity(if timed { total } else { 0 }),
                remaining: total,
                done: Some(done_tx),
                ..Recorder::default()
            }
        })
    })
    .expect("attach setup");
    h.flush(Duration::from_secs(10)).expect("setup ran");
    done_rx
}

/// The latencies recorded (sorted) and the out-of-order count.
fn collect(h: &AttachHandle) -> (Vec<u64>, u64) {
    let (lat_tx, lat_rx) = crossbeam_channel::bounded(1);
    h.attach(SystemState::Operational, move |_| {
        let _ = lat_tx.send(REC.with(|r| {
            let mut r = r.borrow_mut();
            (std::mem::take(&mut r.lat_ns), r.out_of_order)
        }));
    })
    .expect("attach collect");
    let (mut lat, ooo) = lat_rx.recv_timeout(Duration::from_secs(10)).expect("latencies");
    lat.sort_unstable();
    (lat, ooo)
}

/// How the producers attach.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `attach_detached`, latency recorded.
    Timed,
    /// `attach_detached`, no clock read.
    Untimed,
    /// `attach`, its ticket dropped, no clock read: the ticket's cost.
    Ticket,
}

fn one_run(h: &AttachHandle, threads: usize, mode: Mode) -> Run {
    let timed = mode == Mode::Timed;
    let done_rx = arm(h, TOTAL, timed);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let producers: Vec<_> = (0..threads)
        .map(|t| {
            let (h, barrier) = (h.clone(), barrier.clone());
            let n = TOTAL / threads + usize::from(t < TOTAL % threads);
            std::thread::spawn(move || {
                barrier.wait();
                for seq in 0..n as u32 {
                    let r = match mode {
                        Mode::Timed => {
                            let t0 = Instant::now();
                            h.attach_detached(SystemState::Operational, move |_| {
                                record(Some(t0), t, seq)
                            })
                        }
                        Mode::Untimed => h.attach_detached(SystemState::Operational, move |_| {
                            record(None, t, seq)
                        }),
                        Mode::Ticket => h
                            .attach(SystemState::Operational, move |_| record(None, t, seq))
                            .map(drop),
                    };
                    r.expect("attach");
                }
            })
        })
        .collect();
    // Let every producer reach the barrier first, so release is ours.
    std::thread::sleep(Duration::from_millis(20));
    let released = Instant::now();
    barrier.wait();
    let last = done_rx.recv_timeout(Duration::from_secs(60)).expect("all callbacks ran");
    for p in producers {
        p.join().expect("producer");
    }
    let wall = last - released;
    let (lat, out_of_order) = collect(h);
    Run {
        per_sec: TOTAL as f64 / wall.as_secs_f64(),
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        drain_us: wall.as_secs_f64() * 1e6,
        out_of_order,
    }
}

/// Offered load: `rate` items/s in all from `threads` threads, paced over
/// `secs` (each thread attaches its share of every 100 us slice, then
/// sleeps to the next slice), latency from each attach call to its
/// callback. Returns (p50, p99) in us and the items offered.
fn sustained(h: &AttachHandle, threads: usize, rate: f64, secs: f64) -> (f64, f64, usize) {
    const SLICE: Duration = Duration::from_micros(100);
    let slices = (secs / SLICE.as_secs_f64()) as usize;
    let per_slice = ((rate * SLICE.as_secs_f64()) as usize / threads).max(1);
    let total = slices * per_slice * threads;
    let done_rx = arm(h, total, true);
    let start = Instant::now() + Duration::from_millis(5);
    let producers: Vec<_> = (0..threads)
        .map(|t| {
            let h = h.clone();
            std::thread::spawn(move || {
                let mut seq = 0u32;
                for s in 0..slices {
                    let at = start + SLICE * s as u32;
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep(at - now);
                    }
                    for _ in 0..per_slice {
                        let t0 = Instant::now();
                        h.attach_detached(SystemState::Operational, move |_| {
                            record(Some(t0), t, seq)
                        })
                        .expect("attach");
                        seq += 1;
                    }
                }
            })
        })
        .collect();
    done_rx.recv_timeout(Duration::from_secs(60)).expect("all callbacks ran");
    for p in producers {
        p.join().expect("producer");
    }
    let (lat, _) = collect(h);
    (percentile(&lat, 0.50), percentile(&lat, 0.99), total)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn idle_wake(h: &AttachHandle) -> (f64, f64) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let mut lat = Vec::with_capacity(WAKES);
    for _ in 0..WAKES {
        // Long enough for the loop to park in epoll again.
        std::thread::sleep(Duration::from_micros(300));
        let tx = tx.clone();
        let t0 = Instant::now();
        h.attach(SystemState::Operational, move |_| {
            let _ = tx.send(t0.elapsed());
        })
        .expect("attach");
        let d: Duration = rx.recv_timeout(Duration::from_secs(10)).expect("wake ran");
        lat.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
    lat.sort_unstable();
    (percentile(&lat, 0.5), percentile(&lat, 0.99))
}

fn main() {
    let (h, sys, thread) = start_loop();
    println!("attach: {TOTAL} callbacks for OPERATIONAL per run, median of {RUNS} runs");
    println!(
        "{:<8} {:>3} {:>14} {:>10} {:>10}   (per run: callbacks/s)",
        "mode", "T", "callbacks/s", "p50 us", "p99 us"
    );
    let plan = [
        (Mode::Timed, 1),
        (Mode::Timed, 4),
        (Mode::Untimed, 1),
        (Mode::Untimed, 4),
        (Mode::Ticket, 4),
    ];
    for (kind, threads) in plan {
        let timed = kind == Mode::Timed;
        {
            // One warm-up run, not counted.
            let _ = one_run(&h, threads, kind);
            let runs: Vec<Run> = (0..RUNS).map(|_| one_run(&h, threads, kind)).collect();
            let rates: Vec<String> =
                runs.iter().map(|r| format!("{:.2}M", r.per_sec / 1e6)).collect();
            let (mode, metric) = match kind {
                Mode::Timed => ("timed", format!("timed_t{threads}")),
                Mode::Untimed => ("untimed", format!("untimed_t{threads}")),
                Mode::Ticket => ("ticket", format!("untimed_t{threads}_ticket")),
            };
            let rate = median(runs.iter().map(|r| r.per_sec).collect());
            // One JSON line per metric, for scripts/bench.
            println!("{{\"metric\": \"attach_callbacks_per_s_{metric}\", \"value\": {rate:.0}, \"unit\": \"callbacks/s\"}}");
            if timed {
                let p99 = median(runs.iter().map(|r| r.p99_us).collect());
                println!("{{\"metric\": \"attach_latency_p99_t{threads}\", \"value\": {p99:.1}, \"unit\": \"us\"}}");
                if threads == 4 {
                    // The 100k burst: FIFO per producer, and no item waits
                    // longer than the burst takes to drain.
                    let drain = median(runs.iter().map(|r| r.drain_us).collect());
                    let ooo: u64 = runs.iter().map(|r| r.out_of_order).sum();
                    println!("{{\"metric\": \"attach_burst_drain\", \"value\": {drain:.1}, \"unit\": \"us\", \"items\": {TOTAL}}}");
                    println!("{{\"metric\": \"attach_burst_p99\", \"value\": {p99:.1}, \"unit\": \"us\", \"items\": {TOTAL}}}");
                    println!("{{\"metric\": \"attach_burst_out_of_order\", \"value\": {ooo}, \"unit\": \"items\", \"goal\": 0, \"better\": \"lower\", \"runs\": {RUNS}}}");
                }
                println!(
                    "{mode:<8} {threads:>3} {:>13.2}M {:>10.1} {:>10.1}   [{}]",
                    rate / 1e6,
                    median(runs.iter().map(|r| r.p50_us).collect()),
                    median(runs.iter().map(|r| r.p99_us).collect()),
                    rates.join(" ")
                );
            } else {
                println!(
                    "{mode:<8} {threads:>3} {:>13.2}M {:>10} {:>10}   [{}]",
                    rate / 1e6,
                    "-",
                    "-",
                    rates.join(" ")
                );
            }
        }
    }
    let secs = if std::env::var_os("LWSYS_BENCH_QUICK").is_some() { 0.3 } else { 1.0 };
    let runs: Vec<(f64, f64, usize)> = (0..3).map(|_| sustained(&h, 4, 1e6, secs)).collect();
    let p99 = median(runs.iter().map(|r| r.1).collect());
    let p50 = median(runs.iter().map(|r| r.0).collect());
    println!("{{\"metric\": \"attach_sustained_p99_t4\", \"value\": {p99:.1}, \"unit\": \"us\", \"offered_per_s\": 1000000, \"items\": {}, \"p50_us\": {p50:.1}}}", runs[0].2);
    println!("sustained: 1 M/s offered from 4 threads for {secs} s: p50 {p50:.1} us, p99 {p99:.1} us (median of 3)");
    let (p50, p99) = idle_wake(&h);
    println!("{{\"metric\": \"attach_idle_wake_p50\", \"value\": {p50:.1}, \"unit\": \"us\"}}");
    println!(
        "idle wake: one item into an idle loop, {WAKES} samples: p50 {p50:.1} us, p99 {p99:.1} us"
    );
    sys.stop();
    let _ = thread.join();
}
