//! `SystemHandle`: the cloneable, `Send` way into a running lwsys system,
//! the `lws_system_get_ops(context)` of lwsys. Its methods are async and
//! work from inside actix or from any thread (`SystemHandle::blocking`).
//!
//! The handles own the system: when the last one is dropped, or a shutdown
//! through it has committed CONTEXT_DESTROYING, every actor of the system
//! is stopped (see `Teardown`) and its memory and threads are freed. Parts
//! of the system that need the handle (attach callbacks, the OTA reboot)
//! hold a [`WeakSystemHandle`]. The handles derived from it
//! ([`BlobHandle`], [`AttachHandle`], [`Ops`]) do not keep the system
//! alive: once it is torn down they answer that it is gone.

use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::{Actor, Addr, Handler, MailboxError, Recipient};

mod blocking;
mod error;

pub use blocking::Blocking;
pub use error::Error;
use lwsys_actors::state::{AddWaiter, CountWaiters};
use lwsys_actors::StateService;
use lwsys_messages::protocol::{Subscribe, SystemEvent};
use lwsys_messages::state::{
    Aborted, Changed, Consent, GetState, Resume, StateReading, SystemState, WaitFor, WaitTimedOut,
};
use lwsys_messages::supervisor::{
    Cycle, Explain, Explanation, ListNotifiers, NotifierInfo, NotifierKind, RegisterNotifier,
    Shutdown, Unregister, WalkError, WalkResult,
};

pub use crate::notifier::actor_registration;
use crate::notifier::InlineNotifier;
use crate::services::Services;
use crate::supervisor::{RegisterInline, Supervisor, Teardown, WalkTo};
use lwsys_actors::attach::{AttachCtx, AttachHandle, AttachService, AttachTicket};
use lwsys_actors::blobs::BlobHandle;
use lwsys_actors::platform::{OpError, Ops, RebootStatus};
use lwsys_messages::attach::{AttachError, AttachStats, GetAttachStats};
use lwsys_messages::blobs::{BlobError, BlobId, BlobKind};
use lwsys_messages::lifecycle::Stop;

/// The way into a running system. Cheap to clone; `Send + Sync`. The
/// system lives while a clone does (see the module docs).
#[derive(Clone)]
pub struct SystemHandle {
    pub(crate) inner: Arc<Inner>,
}

/// A handle that does not keep the system alive; [`upgrade`] it to use it.
///
/// [`upgrade`]: WeakSystemHandle::upgrade
#[derive(Clone, Default)]
pub struct WeakSystemHandle(Weak<Inner>);

impl WeakSystemHandle {
    /// The system, unless every [`SystemHandle`] has been dropped.
    pub fn upgrade(&self) -> Option<SystemHandle> {
        self.0.upgrade().map(|inner| SystemHandle { inner })
    }
}

impl std::fmt::Debug for WeakSystemHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakSystemHandle").field("alive", &(self.0.strong_count() > 0)).finish()
    }
}

/// What every clone of a [`SystemHandle`] shares; dropping the last one
/// tears the system down.
pub(crate) struct Inner {
    pub(crate) supervisor: Addr<Supervisor>,
    pub(crate) state: Addr<StateService>,
    pub(crate) snapshot: tokio::sync::watch::Receiver<StateReading>,
    pub(crate) services: crate::services::ServicesWatch,
    pub(crate) attach: AttachHandle,
    pub(crate) attach_addr: Addr<AttachService>,
    pub(crate) shutdown: tokio::sync::watch::Receiver<crate::supervisor::RunState>,
    pub(crate) ops: Ops,
    /// Set by the supervisor as it tears the system down.
    pub(crate) last_words: Arc<std::sync::OnceLock<Explanation>>,
}

impl Inner {
    /// Stops every actor of the system (the supervisor stops the ones it
    /// knows; the attach service is not among them).
    fn teardown(&self) {
        self.supervisor.do_send(Teardown);
        self.attach_addr.do_send(Stop);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // do_send neither blocks nor fails loudly, so this is safe on any
        // thread and after the actix system itself has gone.
        self.teardown();
    }
}

impl SystemHandle {
    /// A handle that does not keep the system alive.
    pub fn downgrade(&self) -> WeakSystemHandle {
        WeakSystemHandle(Arc::downgrade(&self.inner))
    }

    /// Whether the system has been torn down (after a shutdown through a
    /// handle): its actors are stopped or stopping, and calls answer that
    /// it is gone, except the reads that can be answered from what it left
    /// (see [`shutdown`](Self::shutdown)).
    pub fn is_torn_down(&self) -> bool {
        self.inner.last_words.get().is_some()
    }

    /// The answer to a walk request the supervisor could not take: once a
    /// shutdown has begun (the system may already be torn down) that is a
    /// walk refused by the shutdown, as the supervisor itself answers one.
    fn walk_gone(&self, e: MailboxError) -> Result<WalkResult, Error> {
        match *self.inner.shutdown.borrow() {
            crate::supervisor::RunState::Running => Err(e.into()),
            _ => Ok(Err(WalkError::ShuttingDown)),
        }
    }

    /// The services of a full system as they are now (`None` for a bare
    /// state machine built without
    /// [`Builder::services`](crate::Builder::services)). A service the
    /// supervisor restarted has a new address: ask again rather than keep
    /// an old one.
    pub fn services(&self) -> Option<Services> {
        self.inner.services.borrow().clone()
    }

    /// The blob `kind`/`idx` (lws_system_get_blob): a handle usable from
    /// any thread, which keeps working across a restart of the blob service.
    /// Errors when the kind has no such slot or the system has no blob
    /// service.
    pub fn blob(&self, kind: BlobKind, idx: usize) -> Result<BlobHandle, BlobError> {
        if idx >= kind.slots() {
            return Err(BlobError::IdxOutOfRange { kind, idx, slots: kind.slots() });
        }
        let id = BlobId::new(kind, idx);
        if self.inner.services.borrow().is_none() {
            return Err(BlobError::Unavailable);
        }
        let services = self.inner.services.clone();
        let locate = move || services.borrow().as_ref().map(|s| s.blobs.clone());
        Ok(BlobHandle::located(Arc::new(locate), id))
    }

    /// Run `f` on the system's event loop once the state is at or past
    /// `state` (upstream's numeric rule: an item for OPERATIONAL also runs
    /// at POLICY_INVALID and later). Callable from any thread.
    #[track_caller]
    pub fn attach<F>(&self, state: SystemState, f: F) -> Result<AttachTicket, AttachError>
    where
        F: FnOnce(&mut AttachCtx<'_>) + Send + 'static,
    {
        self.inner.attach.attach(state, f)
    }

    /// The attach handle, for threads that need only attach.
    pub fn attach_handle(&self) -> &AttachHandle {
        &self.inner.attach
    }

    /// Counters of the attach service (run, cancelled, panicked, pending).
    pub async fn attach_stats(&self) -> Result<AttachStats, Error> {
        self.inner.attach_addr.send(GetAttachStats).await.map_err(Error::from)
    }

    /// The current state and when it was entered, without a round trip to
    /// the state service: as fresh as [`SystemHandle::state`] (a commit is
    /// visible here before it is answered), and never blocked behind it.
    pub fn state_now(&self) -> StateReading {
        *self.inner.snapshot.borrow()
    }

    /// The current state and when it was entered (after the teardown, the
    /// state it ended in).
    pub async fn state(&self) -> Result<StateReading, Error> {
        match self.inner.state.send(GetState).await {
            Ok(r) => Ok(r),
            Err(_) if self.is_torn_down() => Ok(self.state_now()),
            Err(e) => Err(e.into()),
        }
    }

    /// Walk one state at a time to `target`; answers when the walk settles
    /// (reached, or parked by a notifier's `Defer`).
    pub async fn steps(&self, target: SystemState) -> Result<WalkResult, Error> {
        self.walk_to(false, target).await
    }

    /// One atomic transition to `target`.
    pub async fn jump(&self, target: SystemState) -> Result<WalkResult, Error> {
        self.walk_to(true, target).await
    }

    /// A `Steps` (or `Jump`) request answered straight by the walk (see
    /// [`WalkTo`]); unanswered, the supervisor is gone.
    async fn walk_to(&self, jump: bool, target: SystemState) -> Result<WalkResult, Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.supervisor.do_send(WalkTo { jump, target, tx });
        rx.await.or_else(|_| self.walk_gone(MailboxError::Closed))
    }

    /// Run a built-in cycle (policy invalidate, enter or leave modal).
    pub async fn cycle(&self, cycle: Cycle) -> Result<WalkResult, Error> {
        self.inner.supervisor.send(cycle).await.or_else(|e| self.walk_gone(e))
    }

    /// Shut down through CONTEXT_DESTROYING; answers once it is committed.
    /// Then the system is torn down: its actors stop and its threads end.
    /// Later calls answer from what it left where they can (`state`,
    /// `state_now`, `wait_for` a state it reached, `explain` with the final
    /// journal, `failure`, `ops`; a walk is refused as shutting down,
    /// another shutdown reports the state reached), and otherwise that the
    /// service is gone.
    pub async fn shutdown(&self) -> Result<WalkResult, Error> {
        match self.inner.supervisor.send(Shutdown).await {
            Ok(res) => {
                if matches!(&res, Ok(r) if r.state == SystemState::ContextDestroying) {
                    self.inner.teardown();
                }
                Ok(res)
            }
            // Torn down by an earlier shutdown: answer as the supervisor
            // answers a second shutdown request.
            Err(e) => match *self.inner.shutdown.borrow() {
                crate::supervisor::RunState::Running => Err(e.into()),
                _ => {
                    let state = self.state_now().state;
                    Ok(Ok(lwsys_messages::supervisor::WalkReport {
                        state,
                        reached: state == SystemState::ContextDestroying,
                        pending: None,
                    }))
                }
            },
        }
    }

    /// Resolves once a shutdown has begun (by any party).
    pub async fn shutdown_begun(&self) {
        let mut rx = self.inner.shutdown.clone();
        // An error means the supervisor is gone, which is a shutdown too.
        let _ = rx.wait_for(|st| *st != crate::supervisor::RunState::Running).await;
    }

    /// Why the system failed, if the supervisor gave up on it.
    pub fn failure(&self) -> Option<String> {
        match &*self.inner.shutdown.borrow() {
            crate::supervisor::RunState::Failed(why) => Some(why.clone()),
            _ => None,
        }
    }

    /// The platform ops (`lws_system_get_ops(context)`): which are
    /// provided, and calls to them.
    pub fn ops(&self) -> &Ops {
        &self.inner.ops
    }

    /// Reboot: shut down through CONTEXT_DESTROYING (notifiers asked and
    /// told, bounded by the shutdown grace), flush the durable store, then
    /// call the reboot op on a blocking thread. Without a reboot op it
    /// fails before anything goes down. The outcome is also recorded in
    /// [`Ops::reboot_status`], so a daemon knows not to exit under it.
    pub async fn reboot(&self) -> Result<(), Error> {
        let op = self.inner.ops.system()?.clone();
        self.inner.ops.set_reboot_status(RebootStatus::Pending);
        let res = self.reboot_with(op).await;
        self.inner.ops.set_reboot_status(match &res {
            Ok(()) => RebootStatus::Done,
            Err(Error::Op(e)) => RebootStatus::Failed(e.clone()),
            Err(e) => {
                RebootStatus::Failed(OpError::Failed { op: "reboot", message: e.to_string() })
            }
        });
        res
    }

    async fn reboot_with(
        &self,
        op: std::sync::Arc<dyn lwsys_actors::platform::SystemOps>,
    ) -> Result<(), Error> {
        self.shutdown().await??;
        let store = self.services().and_then(|s| s.store);
        let call = tokio::task::spawn_blocking(move || {
            if let Some(store) = store {
                store.flush().map_err(|e| OpError::Failed {
                    op: "reboot",
                    message: format!("flushing the durable store: {e}"),
                })?;
            }
            op.reboot()
        });
        match call.await {
            Ok(res) => Ok(res?),
            Err(e) => {
                Err(OpError::Failed { op: "reboot", message: format!("the op panicked: {e}") }
                    .into())
            }
        }
    }

    /// Wait until the state is at or past `state` (`None`: no timeout).
    pub async fn wait_for(
        &self,
        state: SystemState,
        timeout: Option<Duration>,
    ) -> Result<SystemState, Error> {
        if timeout.is_some() && tokio::runtime::Handle::try_current().is_err() {
            // No timer on this thread (a foreign thread blocking on us):
            // the service times the wait. Such a caller cannot hang up
            // while it blocks, so nothing is left behind.
            return Ok(self.inner.state.send(WaitFor { state, timeout }).await??);
        }
        // The service keeps only the sender: when this future is dropped
        // (a client hung up) the waiter is forgotten at once, not kept
        // until a commit or a timeout that may never come.
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A system torn down stays in the state it ended in: a wait for a
        // state it reached is answered, any other can never be.
        let ended = || {
            let now = self.state_now().state;
            if now >= state {
                Ok(now)
            } else {
                Err(MailboxError::Closed.into())
            }
        };
        if self.inner.state.send(AddWaiter { state, tx }).await.is_err() {
            return ended();
        }
        let got = match timeout {
            Some(t) => tokio::time::timeout(t, rx).await.ok(),
            None => Some(rx.await),
        };
        match got {
            Some(Ok(s)) => Ok(s),
            Some(Err(_)) => ended(),
            None => Err(WaitTimedOut { wanted: state, current: self.state_now().state }.into()),
        }
    }

    /// How many event subscribers the supervisor keeps now.
    pub async fn subscribers(&self) -> Result<usize, Error> {
        self.inner.supervisor.send(crate::supervisor::CountSubscribers).await.map_err(Error::from)
    }

    /// How many `wait_for` waiters the state service keeps now.
    pub async fn waiters(&self) -> Result<usize, Error> {
        self.inner.state.send(CountWaiters).await.map_err(Error::from)
    }

    /// Register an actor as a notifier (asked for consent, told of changes
    /// and aborts). Returns its registry id.
    pub async fn register_notifier<A>(&self, name: &str, addr: &Addr<A>) -> Result<u64, Error>
    where
        A: Actor + Handler<Consent> + Handler<Changed> + Handler<Aborted>,
        A::Context: actix::dev::ToEnvelope<A, Consent>
            + actix::dev::ToEnvelope<A, Changed>
            + actix::dev::ToEnvelope<A, Aborted>,
    {
        let msg = actor_registration(name, addr, NotifierKind::Actor);
        Ok(self.inner.supervisor.send(msg).await??)
    }

    /// Register a prepared actor registration (for custom recipients).
    pub async fn register(&self, msg: RegisterNotifier) -> Result<u64, Error> {
        Ok(self.inner.supervisor.send(msg).await??)
    }

    /// Register an inline notifier, run on the supervisor's thread.
    pub async fn register_inline(
        &self,
        name: &str,
        notifier: impl InlineNotifier,
    ) -> Result<u64, Error> {
        let msg = RegisterInline { name: name.to_owned(), notifier: Box::new(notifier) };
        Ok(self.inner.supervisor.send(msg).await??)
    }

    /// Remove the notifier `name`; a walk it holds continues.
    pub async fn unregister(&self, name: &str) -> Result<(), Error> {
        Ok(self.inner.supervisor.send(Unregister { name: name.to_owned() }).await??)
    }

    /// Continue the walk that notifier `name` deferred. Returns whether one
    /// was waiting.
    pub async fn resume(&self, name: &str) -> Result<bool, Error> {
        self.inner.supervisor.send(Resume { name: name.to_owned() }).await.map_err(Error::from)
    }

    /// The notifiers in consent order.
    pub async fn notifiers(&self) -> Result<Vec<NotifierInfo>, Error> {
        self.inner.supervisor.send(ListNotifiers).await.map_err(Error::from)
    }

    /// Send every system event to `to`.
    pub async fn subscribe(&self, to: Recipient<SystemEvent>) -> Result<(), Error> {
        self.inner.supervisor.send(Subscribe(to)).await.map_err(Error::from)
    }

    /// Why the system is where it is: pending walks and the journal.
    pub async fn explain(&self) -> Result<Explanation, Error> {
        match self.inner.supervisor.send(Explain).await {
            Ok(e) => Ok(e),
            Err(e) => self.inner.last_words.get().cloned().ok_or_else(|| e.into()),
        }
    }

    /// Synchronous wrappers for plain threads (not for actix threads: they
    /// block the caller until the answer comes).
    pub fn blocking(&self) -> Blocking<'_> {
        Blocking(self)
    }
}

#[cfg(test)]
mod tests;
