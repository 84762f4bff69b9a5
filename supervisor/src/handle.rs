//! `SystemHandle`: the cloneable, `Send` way into a running lwsys system,
//! the `lws_system_get_ops(context)` of lwsys. Its methods are async and
//! work from inside actix or from any thread (`SystemHandle::blocking`).

use std::time::Duration;

use actix::{Actor, Addr, Handler, MailboxError, Recipient};
use lwsys_actors::state::{AddWaiter, CountWaiters};
use lwsys_actors::StateService;
use lwsys_messages::state::{
    Aborted, Changed, Consent, GetState, Resume, StateReading, SystemState, WaitFor, WaitTimedOut,
};
use lwsys_messages::supervisor::{
    Cycle, Explain, Explanation, Jump, ListNotifiers, NotifierError, NotifierInfo,
    RegisterNotifier, Shutdown, Steps, Subscribe, SystemEvent, Unregister, WalkError, WalkResult,
};
use lwsys_messages::ErrorCode;

use crate::services::Services;
use crate::supervisor::{InlineNotifier, RegisterInline, Supervisor};
use lwsys_actors::attach::{AttachCtx, AttachHandle, AttachService, AttachTicket};
use lwsys_actors::blobs::BlobHandle;
use lwsys_actors::platform::{OpError, Ops, RebootStatus};
use lwsys_messages::attach::{AttachError, AttachStats, GetAttachStats};
use lwsys_messages::blobs::{BlobError, BlobId, BlobKind};

/// An error from a [`SystemHandle`] call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A walk was denied, dropped by shutdown, or failed inside.
    #[error(transparent)]
    Walk(#[from] WalkError),
    /// The notifier registry refused the call.
    #[error(transparent)]
    Notifier(#[from] NotifierError),
    /// A wait ran out of time.
    #[error(transparent)]
    WaitTimedOut(#[from] WaitTimedOut),
    /// The service that owns the answer has stopped.
    #[error("service unavailable: {0}")]
    Gone(String),
    /// A platform op is not provided or failed.
    #[error(transparent)]
    Op(#[from] OpError),
}

impl Error {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Walk(e) => e.code(),
            Self::Notifier(e) => e.code(),
            Self::WaitTimedOut(_) => ErrorCode::Timeout,
            Self::Gone(_) => ErrorCode::Internal,
            Self::Op(e) => e.code(),
        }
    }
}

fn gone(e: MailboxError) -> Error {
    Error::Gone(e.to_string())
}

/// The way into a running system. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct SystemHandle {
    pub(crate) supervisor: Addr<Supervisor>,
    pub(crate) state: Addr<StateService>,
    pub(crate) snapshot: tokio::sync::watch::Receiver<StateReading>,
    pub(crate) services: crate::services::ServicesWatch,
    pub(crate) attach: AttachHandle,
    pub(crate) attach_addr: Addr<AttachService>,
    pub(crate) shutdown: tokio::sync::watch::Receiver<crate::supervisor::RunState>,
    pub(crate) ops: Ops,
}

impl SystemHandle {
    /// The services of a full system as they are now (`None` for a bare
    /// state machine built without
    /// [`Builder::services`](crate::Builder::services)). A service the
    /// supervisor restarted has a new address: ask again rather than keep
    /// an old one.
    pub fn services(&self) -> Option<Services> {
        self.services.borrow().clone()
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
        if self.services.borrow().is_none() {
            return Err(BlobError::Unavailable);
        }
        let services = self.services.clone();
        let locate = move || services.borrow().as_ref().map(|s| s.blobs.clone());
        Ok(BlobHandle::located(std::sync::Arc::new(locate), id))
    }

    /// Run `f` on the system's event loop once the state is at or past
    /// `state` (upstream's numeric rule: an item for OPERATIONAL also runs
    /// at POLICY_INVALID and later). Callable from any thread.
    #[track_caller]
    pub fn attach<F>(&self, state: SystemState, f: F) -> Result<AttachTicket, AttachError>
    where
        F: FnOnce(&mut AttachCtx<'_>) + Send + 'static,
    {
        self.attach.attach(state, f)
    }

    /// The attach handle, for threads that need only attach.
    pub fn attach_handle(&self) -> &AttachHandle {
        &self.attach
    }

    /// Counters of the attach service (run, cancelled, panicked, pending).
    pub async fn attach_stats(&self) -> Result<AttachStats, Error> {
        self.attach_addr.send(GetAttachStats).await.map_err(gone)
    }

    /// The current state and when it was entered, without a round trip to
    /// the state service: as fresh as [`SystemHandle::state`] (a commit is
    /// visible here before it is answered), and never blocked behind it.
    pub fn state_now(&self) -> StateReading {
        *self.snapshot.borrow()
    }

    /// The current state and when it was entered.
    pub async fn state(&self) -> Result<StateReading, Error> {
        self.state.send(GetState).await.map_err(gone)
    }

    /// Walk one state at a time to `target`; answers when the walk settles
    /// (reached, or parked by a notifier's `Defer`).
    pub async fn steps(&self, target: SystemState) -> Result<WalkResult, Error> {
        self.supervisor.send(Steps { target }).await.map_err(gone)
    }

    /// One atomic transition to `target`.
    pub async fn jump(&self, target: SystemState) -> Result<WalkResult, Error> {
        self.supervisor.send(Jump { target }).await.map_err(gone)
    }

    /// Run a built-in cycle (policy invalidate, enter or leave modal).
    pub async fn cycle(&self, cycle: Cycle) -> Result<WalkResult, Error> {
        self.supervisor.send(cycle).await.map_err(gone)
    }

    /// Shut down through CONTEXT_DESTROYING; answers once it is committed.
    pub async fn shutdown(&self) -> Result<WalkResult, Error> {
        self.supervisor.send(Shutdown).await.map_err(gone)
    }

    /// Resolves once a shutdown has begun (by any party).
    pub async fn shutdown_begun(&self) {
        let mut rx = self.shutdown.clone();
        // An error means the supervisor is gone, which is a shutdown too.
        let _ = rx.wait_for(|st| *st != crate::supervisor::RunState::Running).await;
    }

    /// Why the system failed, if the supervisor gave up on it.
    pub fn failure(&self) -> Option<String> {
        match &*self.shutdown.borrow() {
            crate::supervisor::RunState::Failed(why) => Some(why.clone()),
            _ => None,
        }
    }

    /// The platform ops (`lws_system_get_ops(context)`): which are
    /// provided, and calls to them.
    pub fn ops(&self) -> &Ops {
        &self.ops
    }

    /// Reboot: shut down through CONTEXT_DESTROYING (notifiers asked and
    /// told, bounded by the shutdown grace), flush the durable store, then
    /// call the reboot op on a blocking thread. Without a reboot op it
    /// fails before anything goes down. The outcome is also recorded in
    /// [`Ops::reboot_status`], so a daemon knows not to exit under it.
    pub async fn reboot(&self) -> Result<(), Error> {
        let op = self.ops.system()?.clone();
        self.ops.set_reboot_status(RebootStatus::Pending);
        let res = self.reboot_with(op).await;
        self.ops.set_reboot_status(match &res {
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
            return Ok(self.state.send(WaitFor { state, timeout }).await.map_err(gone)??);
        }
        // The service keeps only the sender: when this future is dropped
        // (a client hung up) the waiter is forgotten at once, not kept
        // until a commit or a timeout that may never come.
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.state.send(AddWaiter { state, tx }).await.map_err(gone)?;
        let got = match timeout {
            Some(t) => tokio::time::timeout(t, rx).await.ok(),
            None => Some(rx.await),
        };
        match got {
            Some(Ok(s)) => Ok(s),
            Some(Err(_)) => Err(gone(MailboxError::Closed)),
            None => Err(WaitTimedOut { wanted: state, current: self.state_now().state }.into()),
        }
    }

    /// How many event subscribers the supervisor keeps now.
    pub async fn subscribers(&self) -> Result<usize, Error> {
        self.supervisor.send(crate::supervisor::CountSubscribers).await.map_err(gone)
    }

    /// How many `wait_for` waiters the state service keeps now.
    pub async fn waiters(&self) -> Result<usize, Error> {
        self.state.send(CountWaiters).await.map_err(gone)
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
        let msg = actor_registration(name, addr, "actor");
        Ok(self.supervisor.send(msg).await.map_err(gone)??)
    }

    /// Register a prepared actor registration (for custom recipients).
    pub async fn register(&self, msg: RegisterNotifier) -> Result<u64, Error> {
        Ok(self.supervisor.send(msg).await.map_err(gone)??)
    }

    /// Register an inline notifier, run on the supervisor's thread.
    pub async fn register_inline(
        &self,
        name: &str,
        notifier: impl InlineNotifier,
    ) -> Result<u64, Error> {
        let msg = RegisterInline { name: name.to_owned(), notifier: Box::new(notifier) };
        Ok(self.supervisor.send(msg).await.map_err(gone)??)
    }

    /// Remove the notifier `name`; a walk it holds continues.
    pub async fn unregister(&self, name: &str) -> Result<(), Error> {
        Ok(self.supervisor.send(Unregister { name: name.to_owned() }).await.map_err(gone)??)
    }

    /// Continue the walk that notifier `name` deferred. Returns whether one
    /// was waiting.
    pub async fn resume(&self, name: &str) -> Result<bool, Error> {
        self.supervisor.send(Resume { name: name.to_owned() }).await.map_err(gone)
    }

    /// The notifiers in consent order.
    pub async fn notifiers(&self) -> Result<Vec<NotifierInfo>, Error> {
        self.supervisor.send(ListNotifiers).await.map_err(gone)
    }

    /// Send every system event to `to`.
    pub async fn subscribe(&self, to: Recipient<SystemEvent>) -> Result<(), Error> {
        self.supervisor.send(Subscribe(to)).await.map_err(gone)
    }

    /// Why the system is where it is: pending walks and the journal.
    pub async fn explain(&self) -> Result<Explanation, Error> {
        self.supervisor.send(Explain).await.map_err(gone)
    }

    /// Synchronous wrappers for plain threads (not for actix threads: they
    /// block the caller until the answer comes).
    pub fn blocking(&self) -> Blocking<'_> {
        Blocking(self)
    }
}

/// Build a [`RegisterNotifier`] for an actor.
pub fn actor_registration<A>(name: &str, addr: &Addr<A>, kind: &'static str) -> RegisterNotifier
where
    A: Actor + Handler<Consent> + Handler<Changed> + Handler<Aborted>,
    A::Context: actix::dev::ToEnvelope<A, Consent>
        + actix::dev::ToEnvelope<A, Changed>
        + actix::dev::ToEnvelope<A, Aborted>,
{
    RegisterNotifier {
        name: name.to_owned(),
        consent: addr.clone().recipient(),
        changed: addr.clone().recipient(),
        aborted: addr.clone().recipient(),
        kind,
    }
}

/// [`SystemHandle`] calls that block the calling thread.
pub struct Blocking<'a>(&'a SystemHandle);

impl Blocking<'_> {
    /// See [`SystemHandle::state`].
    pub fn state(&self) -> Result<StateReading, Error> {
        futures::executor::block_on(self.0.state())
    }

    /// See [`SystemHandle::steps`].
    pub fn steps(&self, target: SystemState) -> Result<WalkResult, Error> {
        futures::executor::block_on(self.0.steps(target))
    }

    /// See [`SystemHandle::jump`].
    pub fn jump(&self, target: SystemState) -> Result<WalkResult, Error> {
        futures::executor::block_on(self.0.jump(target))
    }

    /// See [`SystemHandle::wait_for`].
    pub fn wait_for(
        &self,
        state: SystemState,
        timeout: Option<Duration>,
    ) -> Result<SystemState, Error> {
        futures::executor::block_on(self.0.wait_for(state, timeout))
    }

    /// See [`SystemHandle::resume`].
    pub fn resume(&self, name: &str) -> Result<bool, Error> {
        futures::executor::block_on(self.0.resume(name))
    }

    /// See [`SystemHandle::shutdown`].
    pub fn shutdown(&self) -> Result<WalkResult, Error> {
        futures::executor::block_on(self.0.shutdown())
    }
}

#[cfg(test)]
mod tests {
    use lwsys_messages::blobs::BlobKind;
    use lwsys_messages::lifecycle::Crash;

    use crate::services::ServiceConfig;
    use crate::Builder;

    /// Crash the service `pick` names and wait until the supervisor has
    /// published its replacement.
    async fn restart<A>(
        h: &super::SystemHandle,
        pick: impl Fn(&crate::services::Services) -> actix::Addr<A>,
    ) where
        A: actix::Actor + actix::Handler<Crash>,
        A::Context: actix::dev::ToEnvelope<A, Crash>,
    {
        let mut watch = h.services.clone();
        let old = pick(&h.services().unwrap());
        let _ = old.send(Crash).await;
        while h.services().map(|s| pick(&s)) == Some(old.clone()) {
            watch.changed().await.unwrap();
        }
    }

    #[actix_rt::test]
    async fn handles_taken_before_a_service_restart_reach_the_new_service() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServiceConfig {
            state_dir: Some(dir.path().to_owned()),
            durable: vec![BlobKind::DeviceSerial],
            ..ServiceConfig::default()
        };
        let h = Builder::new().services(cfg).start().unwrap();
        let serial = h.blob(BlobKind::DeviceSerial, 0).unwrap();
        serial.set(&b"SN-1"[..]).await.unwrap();

        restart(&h, |s| s.blobs.clone()).await;
        // The durable value was reloaded, and the old handle reaches it.
        assert_eq!(&serial.get(0, None).await.unwrap().data[..], b"SN-1");
        serial.set(&b"SN-2"[..]).await.unwrap();
        assert_eq!(serial.size().await.unwrap(), 4);

        restart(&h, |s| s.trust.clone()).await;
        // No trust store is configured, so the answer is "none trusted";
        // before the fix this was a closed mailbox.
        let found = h.ops().jit_trust_query(&[0xab; 20]).await;
        assert!(!matches!(found, Err(lwsys_actors::platform::OpError::Failed { .. })), "{found:?}");
    }

    #[actix_rt::test]
    async fn a_blocking_wait_with_a_timeout_works_on_a_thread_without_a_runtime() {
        use lwsys_messages::state::SystemState;
        let h = Builder::new().boot_target(SystemState::ContextCreated).start().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let h2 = h.clone();
        std::thread::spawn(move || {
            let t = Some(std::time::Duration::from_millis(50));
            let _ = tx.send(h2.blocking().wait_for(SystemState::Operational, t));
        });
        // Awaited, so the event loop keeps serving the state service.
        let got = rx.await.unwrap();
        assert!(matches!(got, Err(super::Error::WaitTimedOut(_))), "{got:?}");
        assert_eq!(h.waiters().await.unwrap(), 0);
    }

    #[actix_rt::test]
    async fn durable_blob_writes_do_not_need_the_event_loop() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServiceConfig {
            state_dir: Some(dir.path().to_owned()),
            durable: vec![BlobKind::DeviceSerial],
            ..ServiceConfig::default()
        };
        let h = Builder::new().services(cfg).start().unwrap();
        let serial = h.blob(BlobKind::DeviceSerial, 0).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = futures::executor::block_on(serial.set(&b"SN-1"[..]));
            let _ = tx.send(r.map_err(|e| e.to_string()));
        });
        // This thread, the event loop, is held until the write is answered:
        // the write (and its fsync) can only finish on a thread of its own.
        let done = rx.recv_timeout(std::time::Duration::from_secs(20));
        assert_eq!(done, Ok(Ok(4)), "the blob service needed the event loop");
    }
}
