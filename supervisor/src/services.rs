//! The service actors a full system runs beside the consent engine (blobs,
//! clock, trust, and OTA when configured), their settings, and how they are
//! started and wired: the clock is a build-time notifier that resumes the
//! supervisor, reads its NTP server from the blob service, and has its
//! events forwarded to the supervisor's subscribers (`forward`); OTA
//! observes the state, asks the supervisor for MODAL_UPDATING and sends it
//! events.

pub mod forward;

use std::path::PathBuf;
use std::sync::Arc;

use actix::{Actor, Addr, Recipient};
use lwsys_actors::blobs::BlobService;
use lwsys_actors::clock::{ClockConfig, ClockOps, ClockService, ServerName};
use lwsys_actors::ota::{OtaService, SlotDir};
use lwsys_actors::store::Store;
use lwsys_actors::trust::{TrustConfig, TrustQuery, TrustService};
use lwsys_actors::StateService;
use lwsys_messages::blobs::{BlobId, BlobKind, GetBlob};
use lwsys_messages::clock::SubscribeClock;
use lwsys_messages::state::{Observe, Resume};
use lwsys_messages::supervisor::Shutdown;
use lwsys_messages::supervisor::SystemEvent;
use slog::Logger;

use crate::supervisor::Supervisor;

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
}

/// The OTA service's settings.
#[derive(Clone)]
pub struct OtaSettings {
    /// The `[ota]` section.
    pub section: crate::config::OtaSection,
    /// `[system] wake_latency_us`: checks are armed this much earlier.
    pub wake_latency: std::time::Duration,
    /// The system, filled in once it is built, for the reboot after an
    /// update (set once by `Builder::start`, read by the OTA service).
    pub handle: Arc<std::sync::OnceLock<crate::SystemHandle>>,
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
    /// A trust backend could not be loaded.
    #[error("trust: {0}")]
    Trust(#[from] lwsys_messages::trust::TrustError),
    /// The OTA key, CA file or slots could not be used.
    #[error("ota: {0}")]
    Ota(#[from] lwsys_messages::ota::OtaError),
}

/// The NTP server as the blob service says, read at every attempt. An
/// empty NTP_SERVER blob reads as upstream's default (pool.ntp.org); that
/// value defers to `fallback` (`[time] server`), so the config can name
/// the server until a client sets the blob.
fn ntp_server_from(blobs: Addr<BlobService>, fallback: String) -> ServerName {
    Box::new(move || {
        let blobs = blobs.clone();
        let fallback = fallback.clone();
        Box::pin(async move {
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

/// Start the OTA service: slots under `state_dir`, the issuer's key read
/// from the configured file, https trusting `ca_file`, else the trust
/// store's `verifier`, else the web roots; it observes `state` and asks `sup` for
/// MODAL_UPDATING. After an update that asks for it, it reboots through
/// the system's reboot op.
fn start_ota(
    log: &Logger,
    settings: &OtaSettings,
    verifier: Option<Arc<lwsys_actors::trust::JitVerifier>>,
    state_dir: Option<&std::path::Path>,
    sup: &Addr<Supervisor>,
    state: &Addr<StateService>,
) -> Result<Addr<OtaService>, ServiceError> {
    use lwsys_actors::ota::{
        parse_public_jwk, tls_from_ca_file, tls_with_verifier, Bootloader, FetchConfig,
        ManifestPolicy, OtaConfig, OtaLinks,
    };
    use lwsys_messages::ota::OtaError;
    let o = &settings.section;
    let dir = state_dir.ok_or_else(|| OtaError::NotConfigured("needs a state dir".into()))?;
    let jwk = std::fs::read_to_string(&o.public_jwk)
        .map_err(|e| OtaError::BadKey(format!("{}: {e}", o.public_jwk.display())))?;
    let key = parse_public_jwk(&jwk)?;
    let mut fetch = FetchConfig::new(&o.repository, &o.variant);
    fetch.connect_timeout = std::time::Duration::from_millis(o.connect_timeout_ms);
    fetch.read_timeout = std::time::Duration::from_millis(o.read_timeout_ms);
    if !o.ca_file.as_os_str().is_empty() {
        fetch.tls = Some(tls_from_ca_file(&o.ca_file)?);
    } else if let Some(v) = verifier {
        fetch.tls = Some(tls_with_verifier(v)?);
    }
    let mut policy = ManifestPolicy::new(&o.variant);
    policy.max_image_bytes = o.max_image_bytes;
    let bootloader = match o.bootloader.trim() {
        "" => Bootloader::record_only(),
        line => Bootloader::command(line),
    };
    let slots = SlotDir::open(dir, log)?
        .with_max_boot_attempts(o.max_boot_attempts)
        .with_periodic_check_secs(o.periodic_check_secs)
        .with_bootloader(bootloader);
    let mut cfg = OtaConfig::new(fetch, policy);
    cfg.auto_confirm = o.confirm == crate::config::ConfirmMode::Auto;
    cfg.wake_latency = settings.wake_latency;
    let reboot_to = sup.clone();
    let handle = settings.handle.clone();
    let reboot_log = log.new(slog::o!("service" => "ota"));
    let links = OtaLinks {
        modal: sup.clone().recipient(),
        events: Some(sup.clone().recipient()),
        // Called on the event loop after a finalize whose manifest says
        // `reset`: the system's reboot op (an orderly pass through
        // CONTEXT_DESTROYING first). Before the handle exists, a shutdown.
        reboot: Arc::new(move || match handle.get() {
            Some(h) => {
                let h = h.clone();
                let log = reboot_log.clone();
                actix::spawn(async move {
                    if let Err(e) = h.reboot().await {
                        slog::error!(log, "reboot after an update failed"; "error" => %e);
                    }
                });
            }
            None => reboot_to.do_send(Shutdown),
        }),
    };
    let ota = OtaService::new(log, Box::new(slots), key, cfg, links).start();
    state.do_send(Observe(ota.clone().recipient()));
    Ok(ota)
}

/// Start the services; `resume` is where the clock sends its `Resume`,
/// `events` where its events go as `SystemEvent`s (both the supervisor).
pub fn start(
    log: &Logger,
    cfg: ServiceConfig,
    resume: Recipient<Resume>,
    events: Recipient<SystemEvent>,
    sup: &Addr<Supervisor>,
    state: &Addr<StateService>,
) -> Result<Services, ServiceError> {
    let store = cfg.state_dir.as_deref().map(Store::open).transpose()?;
    let blobs = BlobService::new(log, cfg.blob_max_bytes, &cfg.durable, store.clone())?.start();
    let ops = cfg.clock_ops.clone().unwrap_or_else(|| {
        Arc::new(lwsys_actors::clock::LinuxClockOps::new(
            cfg.set_system_clock,
            lwsys_actors::clock::SoftClock::global().clone(),
        ))
    });
    let server = ntp_server_from(blobs.clone(), cfg.clock.default_server.clone());
    let clock = ClockService::new(log, cfg.clock.clone(), ops, server, resume).start();
    let forwarder = forward::ClockForwarder::new(events).start();
    clock.do_send(SubscribeClock(forwarder.recipient()));
    let wake_latency_us = u64::try_from(cfg.clock.wake_latency.as_micros()).unwrap_or(u64::MAX);
    let trust = match cfg.trust_query {
        Some(q) => TrustService::with_query(log, q),
        None => TrustService::open(log, &cfg.trust)?,
    };
    // OTA over https trusts the trust store when it has sources of its own.
    let verifier = if cfg.trust.sources.is_empty() { None } else { trust.verifier() };
    let trust = trust.start();
    let ota = match &cfg.ota {
        Some(o) => Some(start_ota(log, o, verifier, cfg.state_dir.as_deref(), sup, state)?),
        None => None,
    };
    Ok(Services { blobs, clock, trust, store, wake_latency_us, ota })
}
