//! The service actors a full system runs beside the consent engine (blobs,
//! clock, trust), their settings, and how they are started and wired: the
//! clock is a build-time notifier that resumes the supervisor, reads its
//! NTP server from the blob service, and has its events forwarded to the
//! supervisor's subscribers (`forward`).

pub mod forward;

use std::path::PathBuf;
use std::sync::Arc;

use actix::{Actor, Addr, Recipient};
use lwsys_actors::blobs::BlobService;
use lwsys_actors::clock::{ClockConfig, ClockOps, ClockService, ServerName};
use lwsys_actors::store::Store;
use lwsys_actors::trust::{TrustConfig, TrustQuery, TrustService};
use lwsys_messages::blobs::{BlobId, BlobKind, GetBlob};
use lwsys_messages::clock::SubscribeClock;
use lwsys_messages::state::Resume;
use lwsys_messages::supervisor::SystemEvent;
use slog::Logger;

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

/// Start the services; `resume` is where the clock sends its `Resume`,
/// `events` where its events go as `SystemEvent`s (both the supervisor).
pub fn start(
    log: &Logger,
    cfg: ServiceConfig,
    resume: Recipient<Resume>,
    events: Recipient<SystemEvent>,
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
    }
    .start();
    Ok(Services { blobs, clock, trust, store, wake_latency_us })
}
