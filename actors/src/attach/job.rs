//! One attached closure on its way to the loop. Without a ticket the loop
//! owns it outright (one box, no lock, no shared count). With a ticket it
//! is shared by the loop and the ticket: whoever takes the closure out
//! first (the loop to run it, the ticket to cancel it, the shutdown to drop
//! it) owns it, so it runs or is dropped exactly once.

use std::sync::{Arc, Mutex, PoisonError};

use super::AttachCtx;

/// A closure nobody else can reach: `attach_detached`'s.
pub(super) type Owned = Box<dyn FnOnce(&mut AttachCtx<'_>) + Send>;

/// What an item carries: its closure, owned or shared with a ticket.
pub(super) enum Work {
    /// No ticket: the loop runs or drops it, nobody else can.
    Owned(Owned),
    /// A ticket may take it first.
    Shared(Arc<dyn Job>),
}

impl Work {
    /// Runs the closure unless a ticket took it; returns whether it ran.
    pub fn run(self, ctx: &mut AttachCtx<'_>) -> bool {
        match self {
            Work::Owned(f) => {
                f(ctx);
                true
            }
            Work::Shared(job) => job.run(ctx),
        }
    }

    /// Drops the closure unless a ticket took it; returns whether it did.
    pub fn cancel(self) -> bool {
        match self {
            Work::Owned(f) => {
                drop(f);
                true
            }
            Work::Shared(job) => job.cancel(),
        }
    }

    /// Whether the closure is still there.
    pub fn is_pending(&self) -> bool {
        match self {
            Work::Owned(_) => true,
            Work::Shared(job) => job.is_pending(),
        }
    }
}

/// A type-erased attached closure shared with a ticket.
pub(super) trait Job: Send + Sync {
    /// Runs the closure unless it was taken already; returns whether it ran.
    fn run(&self, ctx: &mut AttachCtx<'_>) -> bool;
    /// Takes and drops the closure unless it was taken already; returns
    /// whether it did.
    fn cancel(&self) -> bool;
    /// Whether the closure is still there.
    fn is_pending(&self) -> bool;
}

/// The closure behind its once-only lock. The lock is never held while the
/// closure runs or is dropped, so it is never poisoned by user code.
pub(super) struct Node<F> {
    f: Mutex<Option<F>>,
}

impl<F> Node<F> {
    pub fn new(f: F) -> Self {
        Self { f: Mutex::new(Some(f)) }
    }

    fn take(&self) -> Option<F> {
        self.f.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl<F> Job for Node<F>
where
    F: FnOnce(&mut AttachCtx<'_>) + Send + 'static,
{
    fn run(&self, ctx: &mut AttachCtx<'_>) -> bool {
        match self.take() {
            Some(f) => {
                f(ctx);
                true
            }
            None => false,
        }
    }

    fn cancel(&self) -> bool {
        self.take().is_some()
    }

    fn is_pending(&self) -> bool {
        self.f.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }
}
