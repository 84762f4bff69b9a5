//! The service actors a full system runs beside the consent engine (blobs,
//! clock, trust, and OTA when configured), their settings, and how they are
//! started, wired and restarted: the clock is a build-time notifier that
//! resumes the supervisor, reads its NTP server from whichever blob service
//! is current, and has its events forwarded to the supervisor's subscribers
//! (`forward`); OTA observes the state, asks the supervisor for
//! MODAL_UPDATING and sends it events. The [`ServiceFactory`] starts blobs,
//! clock, trust and OTA afresh when the supervisor restarts one, with
//! durable state reloaded from the store (which stays open across
//! restarts); a new OTA service takes the platform ops over from the dead
//! one's worker (`ota`). The supervisor restarts them through
//! [`SupervisedServices`], its `Supervised` view of them, and they reach it
//! only through [`SupervisorLinks`], so this module does not know its type.

pub mod forward;
pub mod ota;

pub use ota::OtaSettings;

use std::path::PathBuf;
use std::sync::Arc;

use actix::{Actor, Addr, Recipient};
use lwsys_actors::blobs::BlobService;
use lwsys_actors::clock::{ClockConfig, ClockOps, ClockService, ServerName};
use lwsys_actors::ota::{OtaHandoff, OtaService};
use lwsys_actors::store::Store;
use lwsys_actors::trust::{TrustConfig, TrustQuery, TrustService, TrustStore};
use lwsys_actors::StateService;
use lwsys_messages::blobs::{BlobId, BlobKind, GetBlob};
use lwsys_messages::clock::SubscribeClock;
use lwsys_messages::lifecycle::{ServiceDied, WatchDeath};
use lwsys_messages::protocol::SystemEvent;
use lwsys_messages::state::{Observe, Resume};
use slog::Logger;
use tokio::sync::watch;

use crate::notifier::actor_registration;
use crate::supervision::Supervised;
use lwsys_messages::supervisor::{Cycle, NotifierKind, RegisterNotifier, ServiceKind};

/// How the services reach the supervisor of their system, as recipients,
/// so that they need not know its type.
#[derive(Clone)]
pub struct SupervisorLinks {
    /// The clock's `Resume` after it deferred a walk.
    pub resume: Recipient<Resume>,
    /// Service events for the subscribers (clock, ota).
    pub events: Recipient<SystemEvent>,
    /// OTA's requests for MODAL_UPDATING and back.
    pub modal: Recipient<Cycle>,
    /// Asks for the system's reboot (after an update that says `reset`).
    pub reboot: Arc<dyn Fn() + Send + Sync>,
}

/// Settings of the services of a full system.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Where the durable store lives; `None` keeps everything in memory.
    pub state_dir: Option<PathBuf>,
    /// Largest blob, in bytes.
    pub blob_max_bytes: usize,
    /// Blob kinds kept in the durable store.
    pub durable: Vec<BlobKind>,
    /// The clock service's settings.
    pub clock: ClockConfig,
    /// The set_clock op; `None`: the default Linux op (soft clock unless
    /// `set_system_clock`).
    pub clock_ops: Option<Arc<dyn ClockOps>>,
    /// Whether the default clock op may set CLOCK_REALTIME.
    pub set_system_clock: bool,
    /// Trust backends and cache.
    pub trust: TrustConfig,
    /// A replacement trust query op.
    pub trust_query: Option<Arc<dyn TrustQuery>>,
    /// OTA updates; `None` (no `[ota] repository`) runs no OTA service.
    pub ota: Option<OtaSettings>,
    /// The OTA platform ops; `None`: the A/B slots under `state_dir`.
    pub ota_ops: Option<lwsys_actors::platform::SharedOtaOps>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            state_dir: None,
            blob_max_bytes: lwsys_messages::blobs::DEFAULT_MAX_BYTES,
            durable: lwsys_messages::blobs::DEFAULT_DURABLE.to_vec(),
            clock: ClockConfig::default(),
            clock_ops: None,
            set_system_clock: false,
            trust: TrustConfig::default(),
            trust_query: None,
            ota: None,
            ota_ops: None,
        }
    }
}

/// The running services.
#[derive(Clone)]
pub struct Services {
    /// The system blobs.
    pub blobs: Addr<BlobService>,
    /// The clock (also a notifier named after `ClockConfig::name`).
    pub clock: Addr<ClockService>,
    /// The trust store.
    pub trust: Addr<TrustService>,
    /// The durable store, when there is a state dir.
    pub store: Option<Store>,
    /// How long the device takes to wake, µs (the ops' `wake_latency_us`,
    /// reported by `system.info`).
    pub wake_latency_us: u64,
    /// OTA updates, when `[ota] repository` is set.
    pub ota: Option<Addr<OtaService>>,
    /// The trust store's TLS verifier, when `[trust]` has sources of its
    /// own: what OTA downloads and the fleet link verify their servers
    /// with, so the store is loaded once.
    pub trust_verifier: Option<Arc<lwsys_actors::trust::JitVerifier>>,
}

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The durable store could not be opened.
    #[error("durable store: {0}")]
    Store(#[from] lwsys_actors::store::StoreError),
    /// The blob service refused its settings or stored data.
    #[error("blobs: {0}")]
    Blobs(#[from] lwsys_messages::blobs::BlobError),
    /// No restartable service has that name.
    #[error("no restartable service named {0:?}")]
    Unknown(String),
    /// A trust backend could not be loaded.
    #[error("trust: {0}")]
    Trust(#[from] lwsys_messages::trust::TrustError),
    /// The OTA key, CA file or slots could not be used.
    #[error("ota: {0}")]
    Ota(#[from] lwsys_messages::ota::OtaError),
}

/// The current services, as published by the supervisor (it replaces an
/// entry when it restarts that service).
pub type ServicesWatch = watch::Receiver<Option<Services>>;

/// The NTP server as the current blob service says, read at every attempt.
/// An empty NTP_SERVER blob reads as upstream's default (pool.ntp.org);
/// that value defers to `fallback` (`[time] server`), so the config can
/// name the server until a client sets the blob.
fn ntp_server_from(services: ServicesWatch, fallback: String) -> ServerName {
    Box::new(move || {
        let blobs = services.borrow().as_ref().map(|s| s.blobs.clone());
        let fallback = fallback.clone();
        Box::pin(async move {
            let Some(blobs) = blobs else { return fallback };
            let id = BlobId { kind: BlobKind::NtpServer, idx: 0 };
            match blobs.send(GetBlob { id, offset: 0, len: Some(255) }).await {
                Ok(Ok(b)) => match String::from_utf8(b.data.to_vec()) {
                    Ok(name) if name.trim() != lwsys_messages::blobs::DEFAULT_NTP_SERVER => name,
                    _ => fallback,
                },
                _ => fallback,
            }
        })
    })
}

/// Starts, and restarts, the services. Built once; what is costly or must
/// not be done twice (opening the store, loading trust backends) is done
/// here and shared by every start.
pub struct ServiceFactory {
    log: Logger,
    cfg: ServiceConfig,
    sup: SupervisorLinks,
    state: Addr<StateService>,
    forwarder: Addr<forward::ClockForwarder>,
    store: Option<Store>,
    trust: TrustOrigin,
    clock_ops: Arc<dyn ClockOps>,
    services: ServicesWatch,
    /// The blob service's own thread: a durable write waits for fsync
    /// (milliseconds, or far longer on slow flash), which must not stall
    /// the event loop that runs consent rounds and the control protocol.
    blob_thread: actix::Arbiter,
    /// How OTA is (re)started, and what its restarts hand over; set by the
    /// first start when OTA is configured.
    ota: std::sync::OnceLock<(ota::OtaParts, OtaHandoff)>,
}

/// Where the trust service's answers come from: loaded once, shared by
/// every (re)start.
enum TrustOrigin {
    /// The Builder's replacement op.
    Query(Arc<dyn TrustQuery>),
    /// The configured backends.
    Store(Arc<TrustStore>),
}

impl ServiceFactory {
    /// Open the store and the trust backends. `sup` is the supervisor (the
    /// clock's `Resume`, services' events, OTA's modal requests), `state`
    /// the state service (OTA observes it), and `services` the published
    /// address book the clock reads the blob service from.
    pub fn new(
        log: &Logger,
        cfg: ServiceConfig,
        sup: SupervisorLinks,
        state: &Addr<StateService>,
        services: ServicesWatch,
    ) -> Result<Self, ServiceError> {
        let events = sup.events.clone();
        let store = cfg.state_dir.as_deref().map(Store::open).transpose()?;
        let trust = match &cfg.trust_query {
            Some(q) => TrustOrigin::Query(q.clone()),
            None => TrustOrigin::Store(Arc::new(TrustStore::open(log, &cfg.trust)?)),
        };
        let clock_ops = cfg.clock_ops.clone().unwrap_or_else(|| {
            Arc::new(lwsys_actors::clock::LinuxClockOps::new(
                cfg.set_system_clock,
                lwsys_actors::clock::SoftClock::global().clone(),
            ))
        });
        let forwarder = forward::ClockForwarder::new(events).start();
        Ok(Self {
            log: log.clone(),
            cfg,
            sup,
            state: state.clone(),
            forwarder,
            store,
            trust,
            clock_ops,
            services,
            blob_thread: actix::Arbiter::new(),
            ota: std::sync::OnceLock::new(),
        })
    }

    fn start_blobs(&self) -> Result<Addr<BlobService>, ServiceError> {
        let c = &self.cfg;
        let blobs = BlobService::new(&self.log, c.blob_max_bytes, &c.durable, self.store.clone())?;
        Ok(BlobService::start_in_arbiter(&self.blob_thread.handle(), move |_| blobs))
    }

    fn start_clock(&self) -> Addr<ClockService> {
        let server = ntp_server_from(self.services.clone(), self.cfg.clock.default_server.clone());
        let clock = ClockService::new(
            &self.log,
            self.cfg.clock.clone(),
            self.clock_ops.clone(),
            server,
            self.sup.resume.clone(),
        )
        .start();
        clock.do_send(SubscribeClock(self.forwarder.clone().recipient()));
        clock
    }

    fn start_trust(&self) -> Addr<TrustService> {
        match &self.trust {
            TrustOrigin::Query(q) => TrustService::with_query(&self.log, q.clone()),
            TrustOrigin::Store(store) => TrustService::with_store(&self.log, store.clone()),
        }
        .start()
    }

    /// The first OTA service: slots opened with the boot bookkeeping.
    fn start_ota(&self, parts: ota::OtaParts) -> Result<Addr<OtaService>, ServiceError> {
        let ops = (parts.open)()?;
        let svc = OtaService::new(
            &self.log,
            ops,
            parts.key.clone(),
            parts.cfg.clone(),
            parts.links.clone(),
        );
        let handoff = svc.handoff();
        let ota = svc.start();
        self.state.do_send(Observe(ota.clone().recipient()));
        let _ = self.ota.set((parts, handoff));
        Ok(ota)
    }

    /// A replacement OTA service: the ops come back from the dead one's
    /// worker once it has ended (see `OtaService::restart`).
    fn restart_ota(&self) -> Result<Addr<OtaService>, ServiceError> {
        let (parts, handoff) =
            self.ota.get().ok_or_else(|| ServiceError::Unknown("ota (not configured)".into()))?;
        let open = parts.open.clone();
        let reopen: lwsys_actors::ota::ReopenOps = Box::new(move || open());
        let ota = OtaService::restart(
            &self.log,
            handoff.clone(),
            reopen,
            parts.key.clone(),
            parts.cfg.clone(),
            parts.links.clone(),
            self.state.clone().recipient(),
        )
        .start();
        self.state.do_send(Observe(ota.clone().recipient()));
        Ok(ota)
    }

    /// The OTA ops the running OTA service works on (once it started).
    pub fn ota_ops(&self) -> Option<lwsys_actors::platform::SharedOtaOps> {
        self.ota.get().map(|(parts, _)| parts.shared.clone())
    }

    /// Start every service (OTA only when configured).
    pub fn start_all(&self) -> Result<Services, ServiceError> {
        let wake_latency_us =
            u64::try_from(self.cfg.clock.wake_latency.as_micros()).unwrap_or(u64::MAX);
        // OTA over https trusts the trust store when it has sources of its own.
        let verifier = match (&self.trust, self.cfg.trust.sources.is_empty()) {
            (TrustOrigin::Store(store), false) => {
                Some(Arc::new(lwsys_actors::trust::JitVerifier::new(&self.log, store.clone())))
            }
            _ => None,
        };
        let ota = match &self.cfg.ota {
            Some(o) => {
                let dir = self.cfg.state_dir.as_deref();
                let user_ops = self.cfg.ota_ops.clone();
                let parts =
                    ota::ota_parts(&self.log, o, user_ops, verifier.clone(), dir, &self.sup)?;
                Some(self.start_ota(parts)?)
            }
            None => None,
        };
        Ok(Services {
            blobs: self.start_blobs()?,
            clock: self.start_clock(),
            trust: self.start_trust(),
            store: self.store.clone(),
            wake_latency_us,
            ota,
            trust_verifier: verifier,
        })
    }

    /// `current` with `service` started afresh.
    pub fn restart(
        &self,
        service: ServiceKind,
        current: &Services,
    ) -> Result<Services, ServiceError> {
        let mut next = current.clone();
        match service {
            ServiceKind::Blobs => next.blobs = self.start_blobs()?,
            ServiceKind::Clock => next.clock = self.start_clock(),
            ServiceKind::Trust => next.trust = self.start_trust(),
            ServiceKind::Ota if next.ota.is_some() => next.ota = Some(self.restart_ota()?),
            ServiceKind::Ota => return Err(ServiceError::Unknown("ota".to_owned())),
        }
        Ok(next)
    }

    /// Stop the services of `current` and the clock's forwarder (the
    /// system is torn down; see `Teardown`).
    pub fn stop_all(&self, current: Option<&Services>) {
        use lwsys_messages::lifecycle::Stop;
        if let Some(s) = current {
            s.blobs.do_send(Stop);
            s.clock.do_send(Stop);
            s.trust.do_send(Stop);
            if let Some(ota) = &s.ota {
                ota.do_send(Stop);
            }
        }
        self.forwarder.do_send(Stop);
    }

    /// Ask the services to report to `to` when they are gone (`only`: just
    /// that one).
    pub fn watch(&self, s: &Services, only: Option<ServiceKind>, to: &Recipient<ServiceDied>) {
        let wants = |kind: ServiceKind| only.is_none_or(|o| o == kind);
        if wants(ServiceKind::Blobs) {
            s.blobs.do_send(WatchDeath(to.clone()));
        }
        if wants(ServiceKind::Clock) {
            s.clock.do_send(WatchDeath(to.clone()));
        }
        if wants(ServiceKind::Trust) {
            s.trust.do_send(WatchDeath(to.clone()));
        }
        if let Some(ota) = s.ota.as_ref().filter(|_| wants(ServiceKind::Ota)) {
            ota.do_send(WatchDeath(to.clone()));
        }
    }
}

impl Drop for ServiceFactory {
    fn drop(&mut self) {
        // The system this factory served is gone: end the blob thread too,
        // so a library user building many systems does not pile them up.
        self.blob_thread.stop();
    }
}

/// The services of a full system as the supervisor sees them: restarted
/// by kind, their new addresses published to the handles' address book.
pub struct SupervisedServices {
    factory: ServiceFactory,
    published: watch::Sender<Option<Services>>,
    clock_name: String,
}

impl SupervisedServices {
    /// Supervise what `factory` started and `published` holds; the clock
    /// is the notifier `clock_name`.
    pub fn new(
        factory: ServiceFactory,
        published: watch::Sender<Option<Services>>,
        clock_name: String,
    ) -> Self {
        Self { factory, published, clock_name }
    }
}

impl Supervised for SupervisedServices {
    fn notifiers(&self) -> Vec<String> {
        vec![self.clock_name.clone()]
    }

    fn restart(
        &mut self,
        kind: ServiceKind,
        deaths: &Recipient<ServiceDied>,
    ) -> Result<Option<RegisterNotifier>, String> {
        let current = self.published.borrow().clone();
        let current = current.ok_or_else(|| "the services were never started".to_owned())?;
        let next = self.factory.restart(kind, &current).map_err(|e| e.to_string())?;
        self.factory.watch(&next, Some(kind), deaths);
        let notifier = (kind == ServiceKind::Clock)
            .then(|| actor_registration(&self.clock_name, &next.clock, NotifierKind::Builtin));
        self.published.send_replace(Some(next));
        Ok(notifier)
    }

    fn stop_all(&mut self) {
        self.factory.stop_all(self.published.borrow().as_ref());
    }
}
