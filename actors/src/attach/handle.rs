//! The foreign side of attach: [`AttachHandle`] (what other threads hold),
//! [`AttachTicket`], and the state both share with the loop: the channel,
//! the wake flag, the slots claimed from the bound and the per-thread
//! tracks (flush counts and each thread's reserve of slots).
//!
//! No counter is touched by every attach. A thread claims slots from the
//! bound a chunk at a time ([`credit_chunk`]) and spends them from its own
//! track, so the shared count sees one atomic add per chunk rather than one
//! per item; the loop gives slots back once per batch. Shutdown needs no
//! count either: an attach that sends after the loop closed the service
//! sees it closed (a fence on each side pairs the two) and drops what is
//! left in the channel itself.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe, Location};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use actix::Recipient;
use crossbeam_channel::{Receiver, Sender};
use lwsys_messages::attach::AttachError;
use lwsys_messages::state::SystemState;

use super::job::{Job, Node, Work};
use super::{AttachCtx, Drain};

/// Keeps a hot atomic on its own cache line, so that producers bumping one
/// counter do not slow the loop reading another.
#[derive(Default)]
#[repr(align(128))]
pub(super) struct Padded<T>(pub T);

/// How many slots of the bound a thread claims at once: enough that the
/// shared count is touched once per many items, few enough that the slots
/// threads hold in reserve are a small part of the bound (at most 1/1024 of
/// it each, at most 64), and exactly one for bounds under 2,048, whose
/// `Full` therefore comes at the item it always did.
pub(super) fn credit_chunk(bound: usize) -> usize {
    (bound / 1024).clamp(1, 64)
}

/// One accepted attach request on its way to the loop.
pub(super) struct Item {
    pub job: Work,
    pub state: SystemState,
    /// The attaching thread's track index (see [`Track`]).
    pub track: u32,
    pub origin: &'static Location<'static>,
}

impl Item {
    /// Drops the closure unrun, at shutdown, unless a ticket took it
    /// first; returns whether it was here to drop. A closure whose
    /// destructor panics was still taken and dropped.
    pub fn discard(self) -> bool {
        catch_unwind(AssertUnwindSafe(|| self.job.cancel())).unwrap_or(true)
    }
}

/// What the handles and the loop share for one `AttachService`.
pub(super) struct Shared {
    /// Tells the thread-local track leases which service they belong to.
    pub id: u64,
    /// Set while a wake (a `Drain` message or the loop's own continuation)
    /// is on its way; only the producer that flips it false -> true sends.
    pub wake_pending: Padded<AtomicBool>,
    /// Slots taken from the bound: items accepted and not yet run,
    /// cancelled or dropped, plus the slots threads hold in reserve for
    /// their next items (see [`Track`]).
    pub claimed: Padded<AtomicUsize>,
    pub bound: usize,
    /// [`credit_chunk`] of `bound`.
    pub chunk: usize,
    pub closed: AtomicBool,
    pub tx: Sender<Item>,
    /// For an attach that finds the service closed after sending: it
    /// drops whatever the loop's shutdown could not have seen.
    pub rx: Receiver<Item>,
    pub wake: Recipient<Drain>,
    pub cancelled: AtomicU64,
    pub rejected: AtomicU64,
    /// Every track ever leased; indices are stable, slots are reused.
    pub tracks: Mutex<Vec<Arc<Track>>>,
    pub free: Mutex<Vec<u32>>,
    pub loop_thread: OnceLock<ThreadId>,
}

/// Per (thread, service) counters behind `flush`: the owning thread counts
/// the items it queued, whoever finishes one (the loop running it, a
/// ticket cancelling it) counts it done. A thread that exits gives its slot
/// back and the next thread continues the counts, which keeps them equal or
/// at worst makes the new owner's first flush also wait for the old
/// owner's leftovers. The track also holds the thread's reserve of slots
/// claimed from the bound, which it gives back when it exits.
pub(super) struct Track {
    own: Padded<Own>,
    done: Padded<AtomicU64>,
    /// The `queued` value a blocked `flush` waits for; 0 when none waits.
    flush_target: AtomicU64,
    /// The owning thread's name (for panic reports); also the condvar lock.
    name: Mutex<String>,
    cv: Condvar,
    service: Weak<Shared>,
}

/// What only the owning thread writes (others read it), on one line.
#[derive(Default)]
struct Own {
    queued: AtomicU64,
    /// Slots claimed from the bound and not yet spent on an item.
    credit: AtomicUsize,
}

impl Track {
    fn new(service: Weak<Shared>) -> Self {
        Self {
            own: Padded::default(),
            done: Padded::default(),
            flush_target: AtomicU64::new(0),
            name: Mutex::new(current_thread_name()),
            cv: Condvar::new(),
            service,
        }
    }

    fn lock(&self) -> MutexGuard<'_, String> {
        self.name.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The name of the thread that owns this track.
    pub fn thread_name(&self) -> String {
        self.lock().clone()
    }

    /// Counts `n` of this thread's items as finished and wakes a flush that
    /// waits for them. SeqCst pairs with `flush`: either it sees our count,
    /// or we see its target and take the lock to notify.
    pub fn finish(&self, n: u64) {
        let done = self.done.0.fetch_add(n, Ordering::SeqCst) + n;
        let target = self.flush_target.load(Ordering::SeqCst);
        if target != 0 && done >= target {
            let _g = self.lock();
            self.cv.notify_all();
        }
    }

    /// Releases a blocked flush so that it sees the service closed.
    pub fn release(&self) {
        let _g = self.lock();
        self.cv.notify_all();
    }

    /// Spends one slot of the bound for an item from the owning thread,
    /// claiming a new chunk from the shared count when the reserve is
    /// empty. Plain loads and stores suffice for the reserve: only its
    /// owner writes it.
    fn admit(&self, s: &Shared) -> Result<(), AttachError> {
        let credit = self.own.0.credit.load(Ordering::Relaxed);
        if credit > 0 {
            self.own.0.credit.store(credit - 1, Ordering::Relaxed);
            return Ok(());
        }
        let mut claimed = s.claimed.0.load(Ordering::Relaxed);
        loop {
            let take = s.bound.saturating_sub(claimed).min(s.chunk);
            if take == 0 {
                s.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(AttachError::Full { bound: s.bound });
            }
            match s.claimed.0.compare_exchange_weak(
                claimed,
                claimed + take,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.own.0.credit.store(take - 1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(now) => claimed = now,
            }
        }
    }

    /// Counts one more item queued by the owning thread; `flush` waits
    /// for `done` to reach it.
    fn queued_one(&self) {
        // Only this thread writes `queued` (flush reads it here too), so
        // a plain store does; no locked instruction needed.
        let q = self.own.0.queued.load(Ordering::Relaxed);
        self.own.0.queued.store(q + 1, Ordering::Relaxed);
    }

    /// The slots the owning thread holds in reserve.
    pub fn credit(&self) -> usize {
        self.own.0.credit.load(Ordering::Relaxed)
    }
}

fn current_thread_name() -> String {
    let t = std::thread::current();
    match t.name() {
        Some(n) => n.to_owned(),
        None => format!("{:?}", t.id()),
    }
}

/// This thread's claim on a track of one service; gives the slot back when
/// the thread exits.
struct Lease {
    service: u64,
    idx: u32,
    track: Arc<Track>,
    shared: Weak<Shared>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The reserve goes back with the slot, so the next owner starts
        // with none and the bound gets the slots back.
        let credit = self.track.own.0.credit.swap(0, Ordering::Relaxed);
        if let Some(s) = self.shared.upgrade() {
            s.claimed.0.fetch_sub(credit, Ordering::AcqRel);
            s.free.lock().unwrap_or_else(PoisonError::into_inner).push(self.idx);
        }
    }
}

thread_local! {
    static LEASES: RefCell<Vec<Lease>> = const { RefCell::new(Vec::new()) };
}

impl Shared {
    /// This thread's track for this service, leased on first use.
    fn with_track<R>(self: &Arc<Self>, f: impl FnOnce(u32, &Arc<Track>) -> R) -> R {
        LEASES.with(|cell| {
            let mut leases = cell.borrow_mut();
            if let Some(l) = leases.iter().find(|l| l.service == self.id) {
                return f(l.idx, &l.track);
            }
            // A miss is rare (once per thread and service): forget services
            // that are gone while here.
            leases.retain(|l| l.shared.strong_count() > 0);
            let lease = self.lease();
            let r = f(lease.idx, &lease.track);
            leases.push(lease);
            r
        })
    }

    fn lease(self: &Arc<Self>) -> Lease {
        let mut tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        let reused = self.free.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let (idx, track) = match reused.and_then(|i| Some((i, tracks.get(i as usize)?.clone()))) {
            Some((i, t)) => {
                *t.lock() = current_thread_name();
                (i, t)
            }
            None => {
                let t = Arc::new(Track::new(Arc::downgrade(self)));
                // More than 4 billion live threads is not a thing; saturate
                // rather than wrap should it ever happen.
                let i = u32::try_from(tracks.len()).unwrap_or(u32::MAX);
                tracks.push(t.clone());
                (i, t)
            }
        };
        Lease { service: self.id, idx, track, shared: Arc::downgrade(self) }
    }

    /// Sends the wake unless one is already on its way, or, if the
    /// service has closed meanwhile, drops what is left in the channel;
    /// called after the item is in the channel.
    ///
    /// Only a producer that sees the flag clear tries `swap(true)`, and
    /// only the one that flips it sends: under a flood the flag stays set
    /// and producers merely read it, instead of bouncing its cache line
    /// with a locked swap each. The fence pairs with the loop's fence after
    /// it clears the flag: either the loop's drain sees our item, or we see
    /// the flag clear (or set again by a producer whose wake comes after).
    /// It pairs likewise with the fence in [`Shared::close`]: either the
    /// loop's last drain sees our item, or we see `closed`.
    pub fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.closed.load(Ordering::Relaxed) {
            self.drop_leftovers();
            return;
        }
        if !self.wake_pending.0.load(Ordering::Relaxed)
            && !self.wake_pending.0.swap(true, Ordering::AcqRel)
        {
            self.wake.do_send(Drain);
        }
    }

    /// Marks the service closed and releases every blocked flush. The
    /// caller then drops every item it holds and [`drop_leftovers`]: an
    /// attach that sends after that drops its own (see [`Shared::wake`]).
    ///
    /// [`drop_leftovers`]: Shared::drop_leftovers
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for t in tracks {
            t.release();
        }
    }

    /// Drops, unrun, the items in the channel of a closed service and
    /// gives their slots back; returns how many it took. Loop and
    /// producers may both do this at once: each item is taken once.
    pub fn drop_leftovers(&self) -> usize {
        let mut dropped = 0;
        while let Ok(item) = self.rx.try_recv() {
            // No lock is held here, so a destructor that attaches is
            // refused as shut down.
            dropped += usize::from(item.discard());
        }
        self.claimed.0.fetch_sub(dropped, Ordering::AcqRel);
        dropped
    }

    /// Items accepted and not yet run, cancelled or dropped, from every
    /// thread: the claimed slots less the reserves.
    pub fn pending(&self) -> usize {
        let reserved: usize = self
            .tracks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|t| t.credit())
            .sum();
        self.claimed.0.load(Ordering::Acquire).saturating_sub(reserved)
    }
}

/// What foreign threads hold to ask for callbacks on the loop of an
/// `AttachService`. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct AttachHandle {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for AttachHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachHandle")
            .field("pending", &self.pending())
            .field("bound", &self.shared.bound)
            .finish()
    }
}

impl AttachHandle {
    /// Asks for `f` to run on the service's event loop once the system
    /// state is at or past `state`, by upstream's numeric rule: an item for
    /// `OPERATIONAL` also runs at `POLICY_INVALID`, `CONTEXT_DESTROYING` and
    /// later. Items whose state is reached run in the order they were
    /// queued (upstream runs the newest first); an item waiting for a later
    /// state runs when it is reached, before items queued after it.
    ///
    /// The caller's source location is recorded (`#[track_caller]`) and
    /// reported with the thread's name if `f` panics; wrappers should be
    /// `#[track_caller]` too.
    ///
    /// Fails with [`AttachError::Full`] when the configured number of
    /// items is already pending, and [`AttachError::Shutdown`] once the
    /// service has stopped; `f` is then dropped here, unrun.
    #[track_caller]
    pub fn attach<F>(&self, state: SystemState, f: F) -> Result<AttachTicket, AttachError>
    where
        F: FnOnce(&mut AttachCtx<'_>) + Send + 'static,
    {
        let origin = Location::caller();
        // Admitted before the closure is boxed: a refused one costs nothing
        // and is dropped here, on the caller's thread.
        let (idx, track) = self.admit(Arc::clone)?;
        let job: Arc<dyn Job> = Arc::new(Node::new(f));
        self.enqueue(Item { job: Work::Shared(job.clone()), state, track: idx, origin })?;
        Ok(AttachTicket { job, track })
    }

    /// [`attach`](Self::attach) for a caller that will never cancel the
    /// item: the same rules, order, bound, errors and panic report, and the
    /// item counts for [`flush`](Self::flush) the same way, but no ticket
    /// is made. That saves the state a ticket shares with the loop (a lock
    /// around the closure and two reference counts per item), so it is the
    /// cheaper call when the ticket would be dropped anyway.
    #[track_caller]
    pub fn attach_detached<F>(&self, state: SystemState, f: F) -> Result<(), AttachError>
    where
        F: FnOnce(&mut AttachCtx<'_>) + Send + 'static,
    {
        let origin = Location::caller();
        let (idx, ()) = self.admit(|_| ())?;
        self.enqueue(Item { job: Work::Owned(Box::new(f)), state, track: idx, origin })
    }

    /// Takes a slot of the bound for one more item from this thread and
    /// counts it for this thread's `flush`, or refuses it past the bound
    /// or after shutdown; returns the thread's track index and what `keep`
    /// takes from the track (a ticket keeps the track itself).
    fn admit<R>(&self, keep: impl FnOnce(&Arc<Track>) -> R) -> Result<(u32, R), AttachError> {
        let s = &self.shared;
        if s.closed.load(Ordering::Acquire) {
            return Err(AttachError::Shutdown);
        }
        s.with_track(|idx, track| {
            track.admit(s)?;
            track.queued_one();
            Ok((idx, keep(track)))
        })
    }

    /// Queues an admitted item and wakes the loop.
    fn enqueue(&self, item: Item) -> Result<(), AttachError> {
        let s = &self.shared;
        if let Err(refused) = s.tx.send(item) {
            // Not while `Shared` keeps a receiver; should it ever happen,
            // the item is dropped and accounted for like a refused one.
            // The closure is dropped before the track is touched again:
            // its destructor may attach.
            drop(refused);
            s.claimed.0.fetch_sub(1, Ordering::AcqRel);
            s.with_track(|_, track| track.finish(1));
            return Err(AttachError::Shutdown);
        }
        s.wake();
        Ok(())
    }

    /// Blocks this thread until every item it attached to this service
    /// (through any handle) before the call has run or been cancelled, or
    /// `timeout` passes.
    ///
    /// The rule is per thread, not per handle: items other threads queued,
    /// even through the same handle, are not waited for. Items waiting for
    /// a state not yet reached keep the flush waiting. Fails with
    /// [`AttachError::FlushTimeout`], with [`AttachError::Shutdown`] if the
    /// service stops first (its pending items are then dropped), and with
    /// [`AttachError::OnLoop`] on the loop's own thread, where waiting would
    /// deadlock.
    pub fn flush(&self, timeout: Duration) -> Result<(), AttachError> {
        let s = &self.shared;
        if s.loop_thread.get() == Some(&std::thread::current().id()) {
            return Err(AttachError::OnLoop);
        }
        let deadline = Instant::now() + timeout;
        s.with_track(|_, track| {
            let target = track.own.0.queued.load(Ordering::Relaxed);
            if track.done.0.load(Ordering::SeqCst) >= target {
                return Ok(());
            }
            let mut guard = track.lock();
            track.flush_target.store(target, Ordering::SeqCst);
            let result = loop {
                let done = track.done.0.load(Ordering::SeqCst);
                if done >= target {
                    break Ok(());
                }
                if s.closed.load(Ordering::SeqCst) {
                    break Err(AttachError::Shutdown);
                }
                let now = Instant::now();
                if now >= deadline {
                    break Err(AttachError::FlushTimeout { outstanding: target - done });
                }
                guard = track
                    .cv
                    .wait_timeout(guard, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            };
            track.flush_target.store(0, Ordering::SeqCst);
            result
        })
    }

    /// Items accepted and not yet run, cancelled or dropped, from every
    /// thread.
    pub fn pending(&self) -> usize {
        self.shared.pending()
    }

    /// Whether the service has stopped (attach then fails).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

/// The receipt for one attached item; dropping it does not cancel.
pub struct AttachTicket {
    job: Arc<dyn Job>,
    track: Arc<Track>,
}

impl std::fmt::Debug for AttachTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachTicket").field("pending", &self.is_pending()).finish()
    }
}

impl AttachTicket {
    /// Cancels the item if it has not started running; returns whether it
    /// did. A cancelled item's closure is dropped here, on this thread.
    pub fn cancel(&self) -> bool {
        if !self.job.cancel() {
            return false;
        }
        if let Some(s) = self.track.service.upgrade() {
            s.claimed.0.fetch_sub(1, Ordering::AcqRel);
            s.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        self.track.finish(1);
        true
    }

    /// Whether the item is still waiting to run (neither run, nor
    /// cancelled, nor dropped at shutdown).
    pub fn is_pending(&self) -> bool {
        self.job.is_pending()
    }
}
