//! What outlives an `OtaService` for the replacement its supervisor
//! starts: the worker thread, which owns the platform ops and gives them
//! back when it ends, and the slots as last reported. The replacement's
//! worker joins the old one before it touches the ops, so two workers
//! never use them at once.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use lwsys_messages::ota::{OtaError, OtaStatus};

use super::OtaOps;

/// Reopens the platform ops when a dead service's worker could not give
/// them back (it panicked); must not repeat the boot bookkeeping.
pub type ReopenOps = Box<dyn FnOnce() -> Result<Box<dyn OtaOps>, OtaError> + Send>;

/// What outlives one [`OtaService`](super::OtaService) for the next one its supervisor
/// starts: the worker thread, which owns the platform ops and hands them
/// back when it ends, and the slots as last reported.
#[derive(Clone, Default)]
pub struct OtaHandoff(Arc<Mutex<Handoff>>);

/// The shared part of an [`OtaHandoff`].
#[derive(Default)]
pub(crate) struct Handoff {
    /// The current worker thread; it returns the ops when it ends (`None`
    /// if it never had them).
    pub(crate) worker: Option<JoinHandle<Option<Box<dyn OtaOps>>>>,
    /// The slots as the worker last reported them.
    pub(crate) slots: OtaStatus,
}

impl OtaHandoff {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Handoff> {
        // A panic while holding this lock leaves plain data behind.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_slots(&self, s: &OtaStatus) {
        self.lock().slots = s.clone();
    }
}

/// Where the worker gets the platform ops.
pub(crate) enum OpsSource {
    /// Given to the first service.
    Ready(Box<dyn OtaOps>),
    /// From the previous service's worker, once it has ended.
    Previous(ReopenOps),
}

impl OpsSource {
    /// The ops, on the new worker's thread: given, or taken back from
    /// `previous` once it has ended (its install was cancelled), or, if it
    /// cannot give them (it panicked), reopened.
    pub(crate) fn take(
        self,
        previous: Option<JoinHandle<Option<Box<dyn OtaOps>>>>,
        log: &slog::Logger,
    ) -> Option<Box<dyn OtaOps>> {
        let reopen = match self {
            Self::Ready(ops) => return Some(ops),
            Self::Previous(reopen) => reopen,
        };
        if let Some(Ok(Some(ops))) = previous.map(JoinHandle::join) {
            return Some(ops);
        }
        match reopen() {
            Ok(ops) => Some(ops),
            Err(e) => {
                slog::crit!(log, "cannot reopen the ota platform"; "error" => %e);
                None
            }
        }
    }
}
