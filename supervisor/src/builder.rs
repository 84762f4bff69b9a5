//! `Builder`: the lws context-creation info of lwsys. It gathers the
//! notifiers that must see the very first transition (lws's
//! `register_notifier_list`), the timing knobs and the boot target, starts
//! the services and the `Supervisor`, and sets off the boot walk.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, AsyncContext};
use lwsys_actors::attach::{AttachConfig, AttachService};
use lwsys_actors::platform::{LinuxSystemOps, Ops, OtaOps, SystemOps};
use lwsys_actors::state::StateService;
use lwsys_messages::attach::SetSystem;
use lwsys_messages::lifecycle::Stop;
use lwsys_messages::state::{Observe, SystemState};
use lwsys_messages::supervisor::{NotifierError, NotifierKind, Steps};
use slog::Logger;

use crate::handle::{Inner, SystemHandle};
use crate::journal::DEFAULT_JOURNAL_LEN;
pub use crate::notifier::NotifierSpec;
use crate::notifier::{actor_registration, InlineNotifier};
use crate::services::ota::SharedOps;
use crate::services::{ServiceConfig, ServiceFactory, SupervisedServices, SupervisorLinks};
use crate::supervision::{RestartLimits, Supervision};
use crate::supervisor::{Supervisor, SupervisorConfig};

/// Why a system could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Two notifiers share a name, or a name is invalid.
    #[error(transparent)]
    Notifier(#[from] NotifierError),
    /// A service could not start.
    #[error(transparent)]
    Service(#[from] crate::services::ServiceError),
}

/// Gathers what a system needs, then starts it. See the module docs.
pub struct Builder {
    log: Logger,
    cfg: SupervisorConfig,
    boot_target: SystemState,
    journal_len: usize,
    notifiers: Vec<NotifierSpec>,
    services: Option<ServiceConfig>,
    restarts: RestartLimits,
    attach: AttachConfig,
    system_ops: Option<Arc<dyn SystemOps>>,
    ota_ops: Option<Box<dyn OtaOps>>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// Defaults: logs discarded, 5 s consent deadline, 5 s shutdown grace,
    /// boot to OPERATIONAL, 256 journal rounds, no notifiers.
    pub fn new() -> Self {
        Self {
            log: Logger::root(slog::Discard, slog::o!()),
            cfg: SupervisorConfig::default(),
            boot_target: SystemState::Operational,
            journal_len: DEFAULT_JOURNAL_LEN,
            notifiers: Vec::new(),
            services: None,
            restarts: RestartLimits::default(),
            attach: AttachConfig::default(),
            system_ops: None,
            ota_ops: None,
        }
    }

    /// Log through `log`.
    pub fn logger(mut self, log: Logger) -> Self {
        self.log = log;
        self
    }

    /// How long a notifier may take to answer a consent request.
    pub fn consent_timeout(mut self, d: Duration) -> Self {
        self.cfg.consent_timeout = d;
        self
    }

    /// The bound on a shutdown pass through CONTEXT_DESTROYING.
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.cfg.shutdown_grace = d;
        self
    }

    /// Where the boot walk goes (CONTEXT_CREATED: nowhere; the system waits
    /// for a request).
    pub fn boot_target(mut self, s: SystemState) -> Self {
        self.boot_target = s;
        self
    }

    /// How many consent rounds the journal keeps.
    pub fn journal_len(mut self, n: usize) -> Self {
        self.journal_len = n;
        self
    }

    /// Add notifiers, in consent order; they see the very first transition.
    pub fn notifiers(mut self, list: impl IntoIterator<Item = NotifierSpec>) -> Self {
        self.notifiers.extend(list);
        self
    }

    /// Add one inline notifier.
    pub fn inline_notifier(self, name: &str, f: impl InlineNotifier) -> Self {
        self.notifiers([NotifierSpec::inline(name, f)])
    }

    /// How often a dead service may be restarted before the supervisor
    /// gives up and shuts the system down as failed.
    pub fn restart_limits(mut self, limits: RestartLimits) -> Self {
        self.restarts = limits;
        self
    }

    /// Settings of the attach queue (bound on pending callbacks, batch).
    pub fn attach_config(mut self, cfg: AttachConfig) -> Self {
        self.attach = cfg;
        self
    }

    /// The system ops (reboot, set_clock, wake latency). Default:
    /// [`LinuxSystemOps::default`] (reboot re-executes this program).
    pub fn system_ops(mut self, ops: Arc<dyn SystemOps>) -> Self {
        self.system_ops = Some(ops);
        self
    }

    /// The OTA ops (slot writes, boot confirmation) the OTA service works
    /// on, in place of the A/B slot directory under the state dir. Used
    /// when [`ServiceConfig::ota`] is set; then `system.info` lists `ota`.
    pub fn ota_ops(mut self, ops: Box<dyn OtaOps>) -> Self {
        self.ota_ops = Some(ops);
        self
    }

    /// Run the services of a full system (blobs, clock, trust) beside the
    /// consent engine. Without this the system is the bare state machine.
    /// The clock is registered as the first notifier.
    pub fn services(mut self, cfg: ServiceConfig) -> Self {
        self.services = Some(cfg);
        self
    }

    /// Start the system. Must be called inside a running actix `System`.
    /// The system runs until the last clone of the returned handle is
    /// dropped or a shutdown through it commits; then its actors stop and
    /// its threads end (see [`SystemHandle`]). If the build fails, what it
    /// had started is stopped.
    pub fn start(self) -> Result<SystemHandle, BuildError> {
        let state_service = StateService::new(&self.log);
        let snapshot = state_service.snapshot();
        let publisher = state_service.publisher();
        let state = state_service.start();
        // Attach is built in (no platform locking is needed in Rust). It
        // observes the state from before the first commit.
        let (attach_addr, attach) =
            AttachService::start_with_handle(&self.log, SystemState::ContextCreated, self.attach);
        state.do_send(Observe(attach_addr.clone().recipient()));
        // The supervisor's address exists before it runs, so services that
        // resume walks can be given it and still be build-time notifiers.
        let sup_ctx: actix::Context<Supervisor> = actix::Context::new();
        let sup_addr = sup_ctx.address();
        let mut notifiers = Vec::with_capacity(self.notifiers.len() + 1);
        // OTA asks for a reboot through this channel, made before the
        // handle exists; a task holding only a weak handle answers it (see
        // `serve_reboots`). One request may wait; more are the same one.
        let (reboot_tx, reboot_rx) = tokio::sync::mpsc::channel::<()>(1);
        let reboot: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let _ = reboot_tx.try_send(());
        });
        let mut ota_ops = None;
        // The address book of the services: the supervisor publishes a new
        // one when it restarts a service.
        let (services_tx, services_rx) = tokio::sync::watch::channel(None);
        let mut supervision = None;
        if let Some(mut cfg) = self.services {
            if let Some(ops) = self.ota_ops {
                cfg.ota_ops = Some(Arc::new(std::sync::Mutex::new(ops)));
            }
            let name = cfg.clock.name.clone();
            let links = SupervisorLinks {
                resume: sup_addr.clone().recipient(),
                events: sup_addr.clone().recipient(),
                modal: sup_addr.clone().recipient(),
                reboot,
            };
            let started = ServiceFactory::new(&self.log, cfg, links, &state, services_rx.clone())
                .and_then(|f| Ok((f.start_all()?, f)));
            let (s, factory) = match started {
                Ok(started) => started,
                Err(e) => {
                    abandon(&state, &attach_addr);
                    return Err(e.into());
                }
            };
            notifiers.push(NotifierSpec::Actor(actor_registration(
                &name,
                &s.clock,
                NotifierKind::Builtin,
            )));
            factory.watch(&s, None, &sup_addr.clone().recipient());
            ota_ops = factory.ota_ops();
            services_tx.send_replace(Some(s));
            let supervised = SupervisedServices::new(factory, services_tx, name);
            supervision = Some(Supervision::new(Box::new(supervised), self.restarts));
        }
        notifiers.extend(self.notifiers);
        let mut sup = match Supervisor::new(&self.log, self.cfg, state.clone(), notifiers) {
            Ok(sup) => sup,
            Err(e) => {
                if let Some(s) = supervision.as_mut() {
                    s.stop_all();
                }
                abandon(&state, &attach_addr);
                return Err(e.into());
            }
        };
        sup.publish_with(publisher);
        sup.journal_len(self.journal_len);
        if let Some(s) = supervision {
            sup.supervise(s);
        }
        let shutdown = sup.shutdown_watch();
        let last_words = sup.last_words();
        let supervisor = sup_ctx.run(sup);
        if self.boot_target > SystemState::ContextCreated {
            supervisor.do_send(Steps { target: self.boot_target });
        }
        let system_ops = self.system_ops.unwrap_or_else(|| Arc::new(LinuxSystemOps::default()));
        let mut ops = Ops::new(system_ops);
        if let Some(shared) = ota_ops.as_ref() {
            ops = ops.with_ota(Box::new(SharedOps(shared.clone())));
        }
        if services_rx.borrow().is_some() {
            // Looked up at each query: the supervisor may restart the
            // trust service under a new address.
            let services = services_rx.clone();
            ops = ops.with_trust_located(Arc::new(move || {
                services.borrow().as_ref().map(|s| s.trust.clone().recipient())
            }));
        }
        let handle = SystemHandle {
            inner: Arc::new(Inner {
                supervisor,
                state,
                snapshot,
                services: services_rx,
                attach,
                attach_addr,
                shutdown,
                last_words,
                ops,
            }),
        };
        // Callbacks and OTA reach the system weakly: both are parts of it,
        // and a strong handle in them would keep it alive for ever.
        let weak = handle.downgrade();
        handle.inner.attach_addr.do_send(SetSystem(Arc::new(move || {
            weak.upgrade().map(|h| Arc::new(h) as Arc<dyn std::any::Any + Send + Sync>)
        })));
        if ota_ops.is_some() {
            actix::spawn(serve_reboots(
                reboot_rx,
                handle.downgrade(),
                self.log.new(slog::o!("service" => "ota")),
            ));
        }
        Ok(handle)
    }
}

/// Answers OTA's reboot requests: the system's reboot (an orderly pass
/// through CONTEXT_DESTROYING, then the reboot op), or once every handle is
/// gone, a shutdown. Holds the system weakly, so it keeps nothing alive; it
/// ends when the OTA service and its factory, the senders, are gone.
async fn serve_reboots(
    mut requests: tokio::sync::mpsc::Receiver<()>,
    system: crate::handle::WeakSystemHandle,
    log: Logger,
) {
    while requests.recv().await.is_some() {
        let Some(h) = system.upgrade() else { break };
        if let Err(e) = h.reboot().await {
            slog::error!(log, "reboot after an update failed"; "error" => %e);
        }
    }
}

/// Stops the actors a build started before it failed: they hold one
/// another's addresses and would not stop by themselves (see `Teardown`).
fn abandon(state: &Addr<StateService>, attach: &Addr<AttachService>) {
    state.do_send(Stop);
    attach.do_send(Stop);
}
