//! `AttachService`: runs callbacks that other threads attach (through an
//! [`AttachHandle`]) on the supervisor's event loop once the system state
//! is at or past the state each asked for: upstream's `lws_system` attach.
//!
//! How it works:
//! - Foreign threads push items into a crossbeam channel and wake the loop
//!   only when no wake is pending: one flag, set by producers with
//!   `swap(true)` (only the one that flips it sends the `Drain` message;
//!   producers that read it set skip the swap), cleared by the loop with an
//!   acquire-release `swap(false)` before it drains, so no item is left
//!   behind without a wake on its way (`Shared::wake` has the argument).
//! - An item from `attach_detached` carries its boxed closure, owned by
//!   the loop; only `attach`, whose ticket may cancel, shares a locked node
//!   with the ticket. Not keeping a ticket nobody uses saves a lock and two
//!   reference counts per item (measured: about 15 % more callbacks/s).
//! - The loop drains at most `batch` items per turn. If more remain it
//!   re-wakes itself through `tokio::task::yield_now`, not `ctx.notify`:
//!   actix keeps polling an actor while its own messages or spawned items
//!   are ready, so only a real yield lets other actors on the thread run
//!   between batches.
//! - The state is learnt by observing `StateChanges`. Ready items run in the
//!   order they were queued; an item for a state not yet reached waits in a
//!   per-state FIFO and, when the state comes, runs before items queued
//!   after it. "Reached" is upstream's numeric compare: an item for
//!   `OPERATIONAL` also runs at `POLICY_INVALID` (16) and later. Upstream
//!   runs ready items newest first; we run them oldest first, so a flood
//!   cannot starve the items queued first.
//! - Pending items (queued plus waiting) are bounded; past the bound
//!   `attach` fails with `AttachError::Full`. Threads claim slots of the
//!   bound a chunk at a time, so no counter is shared by every attach;
//!   the slots a thread holds in reserve (at most 63; none for bounds
//!   under 2,048) count against the bound, so `Full` can come that many
//!   items early per attaching thread, never late. A panicking callback is
//!   caught, logged with its state, origin and thread, and counted. When
//!   the service stops, pending items are dropped (their closures'
//!   destructors run), blocked `flush` calls fail, and `attach` fails.

mod ctx;
mod handle;
mod job;
#[cfg(test)]
mod tests;

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use actix::fut::ActorFutureExt;
use actix::prelude::*;
use lwsys_messages::attach::{AttachStats, GetAttachStats, SetSystem, SystemRef};
use lwsys_messages::lifecycle::Stop;
use lwsys_messages::state::{Changed, StateChanges, SystemState, ALL_STATES};
use serde::{Deserialize, Serialize};
use slog::{error, info, Logger};

pub use ctx::AttachCtx;
use handle::{credit_chunk, Item, Padded, Shared, Track};
pub use handle::{AttachHandle, AttachTicket};

/// How many items may be pending unless configured otherwise.
pub const DEFAULT_BOUND: usize = 65_536;
/// How many items the loop runs per turn unless configured otherwise.
pub const DEFAULT_BATCH: usize = 1024;

/// The attach service's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttachConfig {
    /// The most items pending at once, queued and waiting together
    /// (default 65,536); 0 refuses every attach.
    pub bound: usize,
    /// The most items run per loop turn before other work gets a turn
    /// (default 1024, at least 1).
    pub batch: usize,
}

impl Default for AttachConfig {
    fn default() -> Self {
        Self { bound: DEFAULT_BOUND, batch: DEFAULT_BATCH }
    }
}

/// Runs attached callbacks on its loop. See the module docs.
pub struct AttachService {
    shared: Arc<Shared>,
    state: SystemState,
    /// Items whose state was reached while they waited, oldest first.
    ready: VecDeque<Item>,
    /// Per state number, the items waiting for it with their arrival order.
    waiting: Vec<VecDeque<(u64, Item)>>,
    waiting_len: usize,
    seq: u64,
    batch: usize,
    /// A yield-and-drain continuation is spawned.
    continuation: bool,
    /// The loop's copy of the shared track list.
    tracks: Vec<Arc<Track>>,
    /// Per track, items finished in the current batch.
    finished: Vec<u64>,
    run: u64,
    panicked: u64,
    /// `shared.cancelled` when the waiting queues were last swept.
    swept_at: u64,
    /// How callbacks reach the system; upgraded per batch, never kept (see
    /// `SetSystem`).
    system: Option<SystemRef>,
    shut: bool,
    log: Logger,
}

/// The wake: drain the channel. Sent by producers and never by the lead.
struct Drain;

impl Message for Drain {
    type Result = ();
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl AttachService {
    /// A service for `ctx` (use inside `AttachService::create`) that
    /// believes the state is `initial` until told otherwise by `Changed`.
    pub fn new(
        ctx: &mut Context<Self>,
        log: &Logger,
        initial: SystemState,
        config: AttachConfig,
    ) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            wake_pending: Padded(AtomicBool::new(false)),
            claimed: Padded(AtomicUsize::new(0)),
            bound: config.bound,
            chunk: credit_chunk(config.bound),
            closed: AtomicBool::new(false),
            tx,
            rx,
            wake: ctx.address().recipient(),
            cancelled: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            tracks: Mutex::new(Vec::new()),
            free: Mutex::new(Vec::new()),
            loop_thread: OnceLock::new(),
        });
        Self {
            shared,
            state: initial,
            ready: VecDeque::new(),
            waiting: (0..=ALL_STATES.len()).map(|_| VecDeque::new()).collect(),
            waiting_len: 0,
            seq: 0,
            batch: config.batch.max(1),
            continuation: false,
            tracks: Vec::new(),
            finished: Vec::new(),
            run: 0,
            panicked: 0,
            swept_at: 0,
            system: None,
            shut: false,
            log: log.new(slog::o!("service" => "attach")),
        }
    }

    /// Starts a service on the current arbiter and returns its address and
    /// a first handle for foreign threads.
    pub fn start_with_handle(
        log: &Logger,
        initial: SystemState,
        config: AttachConfig,
    ) -> (Addr<Self>, AttachHandle) {
        let mut handle = None;
        let addr = Self::create(|ctx| {
            let s = Self::new(ctx, log, initial, config);
            handle = Some(s.handle());
            s
        });
        match handle {
            Some(h) => (addr, h),
            // `create` calls the closure before returning.
            None => unreachable!("Actor::create did not run its closure"),
        }
    }

    /// A handle for foreign threads.
    pub fn handle(&self) -> AttachHandle {
        AttachHandle { shared: self.shared.clone() }
    }

    /// Runs up to one batch: the released items first, then the channel.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        // Before reading the channel: a producer that pushes after this
        // sees the flag clear and sends a new wake (see `Shared::wake` for
        // the fence pairing).
        self.shared.wake_pending.0.swap(false, Ordering::AcqRel);
        std::sync::atomic::fence(Ordering::SeqCst);
        self.sweep_cancelled();
        // Held for this batch only: if it is the last handle when dropped
        // here, the system is torn down, this service with it.
        let system = self.system.as_ref().and_then(|upgrade| upgrade());
        let mut budget = self.batch;
        let mut ran = 0usize;
        while budget > 0 {
            let Some(item) = self.ready.pop_front() else { break };
            budget -= 1;
            ran += usize::from(self.run_item(item, ctx, system.as_ref()));
        }
        while budget > 0 {
            let Ok(item) = self.shared.rx.try_recv() else { break };
            budget -= 1;
            if item.state <= self.state {
                ran += usize::from(self.run_item(item, ctx, system.as_ref()));
            } else {
                self.seq += 1;
                if let Some(q) = self.waiting.get_mut(usize::from(item.state.number())) {
                    q.push_back((self.seq, item));
                    self.waiting_len += 1;
                }
            }
        }
        if ran > 0 {
            self.shared.claimed.0.fetch_sub(ran, Ordering::AcqRel);
            self.publish_finished();
        }
        if !self.ready.is_empty() || !self.shared.rx.is_empty() {
            self.schedule(ctx);
        }
    }

    /// Lets the rest of the thread run, then drains again. Producers are
    /// told a wake is pending so they do not send one meanwhile.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if self.continuation {
            return;
        }
        self.continuation = true;
        self.shared.wake_pending.0.store(true, Ordering::Release);
        ctx.spawn(actix::fut::wrap_future::<_, Self>(tokio::task::yield_now()).map(
            |(), act, ctx| {
                act.continuation = false;
                act.drain(ctx);
            },
        ));
    }

    /// Runs one item unless its ticket cancelled it; returns whether it
    /// counted as finished here (a cancelled item was counted by the ticket).
    fn run_item(
        &mut self,
        item: Item,
        ctx: &mut Context<Self>,
        system: Option<&Arc<dyn Any + Send + Sync>>,
    ) -> bool {
        let Item { job, state: wanted, track, origin } = item;
        let mut actx = AttachCtx { state: self.state, origin, ctx, system };
        let ran = match catch_unwind(AssertUnwindSafe(|| job.run(&mut actx))) {
            Ok(ran) => ran,
            Err(payload) => {
                self.panicked += 1;
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                let thread = self.track(track).map(|t| t.thread_name()).unwrap_or_default();
                error!(self.log, "attached callback panicked";
                    "panic" => what, "wanted" => %wanted, "state" => %self.state,
                    "origin" => %origin, "thread" => thread);
                true
            }
        };
        if ran {
            self.run += 1;
            let idx = track as usize;
            if idx >= self.finished.len() {
                self.finished.resize(idx + 1, 0);
            }
            if let Some(n) = self.finished.get_mut(idx) {
                *n += 1;
            }
        }
        ran
    }

    /// Tells each thread's track how many of its items finished in this
    /// batch: once per batch rather than a locked add per item.
    fn publish_finished(&mut self) {
        for idx in 0..self.finished.len() {
            let n = self.finished.get_mut(idx).map_or(0, std::mem::take);
            if n > 0 {
                if let Some(t) = self.track(idx as u32) {
                    t.finish(n);
                }
            }
        }
    }

    fn track(&mut self, idx: u32) -> Option<&Arc<Track>> {
        let idx = idx as usize;
        if idx >= self.tracks.len() {
            self.tracks = self.shared.tracks.lock().unwrap_or_else(PoisonError::into_inner).clone();
        }
        self.tracks.get(idx)
    }

    /// Drops the husks of cancelled waiting items once enough cancels have
    /// happened, so attach-and-cancel for a far state cannot grow the
    /// waiting queues past the bound.
    fn sweep_cancelled(&mut self) {
        let cancelled = self.shared.cancelled.load(Ordering::Relaxed);
        if self.waiting_len == 0
            || cancelled - self.swept_at < (self.waiting_len as u64 / 2).max(64)
        {
            return;
        }
        self.swept_at = cancelled;
        for q in &mut self.waiting {
            q.retain(|(_, it)| it.job.is_pending());
        }
        self.waiting_len = self.waiting.iter().map(VecDeque::len).sum();
    }

    /// Closes the handles and drops every pending item. Idempotent.
    fn shutdown(&mut self) {
        if self.shut {
            return;
        }
        self.shut = true;
        self.shared.close();
        let mut dropped = 0usize;
        let mut discard = |item: Item| dropped += usize::from(item.discard());
        self.ready.drain(..).for_each(&mut discard);
        for q in &mut self.waiting {
            q.drain(..).for_each(|(_, it)| discard(it));
        }
        self.waiting_len = 0;
        self.shared.claimed.0.fetch_sub(dropped, Ordering::AcqRel);
        // What is still in the channel; an attach that sends after this
        // finds the service closed and drops its item itself.
        dropped += self.shared.drop_leftovers();
        info!(self.log, "attach service stopped";
            "dropped" => dropped, "run" => self.run, "panicked" => self.panicked);
    }
}

impl Drop for AttachService {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Actor for AttachService {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        let _ = self.shared.loop_thread.set(std::thread::current().id());
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.shutdown();
    }
}

impl Handler<Drain> for AttachService {
    type Result = ();

    fn handle(&mut self, _msg: Drain, ctx: &mut Self::Context) {
        self.drain(ctx);
    }
}

impl Handler<StateChanges> for AttachService {
    type Result = ();

    fn handle(&mut self, msg: StateChanges, ctx: &mut Self::Context) {
        for c in msg.0.iter() {
            <Self as Handler<Changed>>::handle(self, *c, ctx);
        }
    }
}

impl Handler<Changed> for AttachService {
    type Result = ();

    fn handle(&mut self, msg: Changed, ctx: &mut Self::Context) {
        self.state = msg.to;
        if self.waiting_len == 0 {
            // Nothing waits for a state: the common case at every commit.
            return;
        }
        let upto = usize::from(msg.to.number());
        let mut released: Vec<(u64, Item)> = Vec::new();
        let mut queues = 0;
        for q in self.waiting.iter_mut().take(upto + 1).filter(|q| !q.is_empty()) {
            queues += 1;
            released.extend(q.drain(..));
        }
        if released.is_empty() {
            return;
        }
        self.waiting_len -= released.len();
        if queues > 1 {
            // Each queue is in arrival order; a stable sort merges the runs.
            released.sort_by_key(|(seq, _)| *seq);
        }
        self.ready.extend(released.into_iter().map(|(_, it)| it));
        self.drain(ctx);
    }
}

impl Handler<GetAttachStats> for AttachService {
    type Result = MessageResult<GetAttachStats>;

    fn handle(&mut self, _msg: GetAttachStats, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(AttachStats {
            run: self.run,
            cancelled: self.shared.cancelled.load(Ordering::Relaxed),
            panicked: self.panicked,
            rejected: self.shared.rejected.load(Ordering::Relaxed),
            pending: self.shared.pending() as u64,
            waiting: self.waiting_len as u64,
        })
    }
}

impl Handler<Stop> for AttachService {
    type Result = ();

    /// Its system is torn down: stop; pending items are dropped unrun.
    fn handle(&mut self, _msg: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<SetSystem> for AttachService {
    type Result = ();

    fn handle(&mut self, msg: SetSystem, _ctx: &mut Self::Context) {
        self.system = Some(msg.0);
    }
}
