//! `TrustStore`: the configured backends, queried in order, plus the host
//! cache. It answers SKID lookups synchronously (all backends are in
//! memory), so the TLS verifier can use it from inside a handshake and
//! `TrustService` can use it as the default trust query.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use slog::{debug, info, warn, Logger};

use super::cache::HostCache;
use super::certdir::CertDirBackend;
use super::table::parse_cert;
use super::tblb::TblbBackend;
use super::{TrustBackend, TrustConfig, TrustSource};
use lwsys_messages::trust::{CacheInfo, TrustError, TrustInfo, TrustedCert, TrustedCerts};

/// Backends in query order and the host cache. See the module docs.
pub struct TrustStore {
    backends: Vec<Box<dyn TrustBackend>>,
    cache: Mutex<HostCache>,
    hits: AtomicU64,
    misses: AtomicU64,
    log: Logger,
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.backends.iter().map(|b| b.name()).collect();
        f.debug_struct("TrustStore").field("backends", &names).finish_non_exhaustive()
    }
}

/// A SKID shown in hex only when a log record is actually written: a
/// lookup is a few hundred nanoseconds, formatting would double it.
pub(crate) struct HexSkid<'a>(pub(crate) &'a [u8]);

impl std::fmt::Display for HexSkid<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The current wall-clock time in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl TrustStore {
    /// Loads every source of `config`, in order. Any source that fails to
    /// load (missing file, malformed blob, unlistable directory) fails the
    /// whole store: a device must not run with less trust than configured
    /// without saying so.
    pub fn open(log: &Logger, config: &TrustConfig) -> Result<Self, TrustError> {
        let mut backends: Vec<Box<dyn TrustBackend>> = Vec::with_capacity(config.sources.len());
        for source in &config.sources {
            let backend: Box<dyn TrustBackend> = match source {
                TrustSource::Blob(path) => Box::new(TblbBackend::open(path)?),
                TrustSource::CertDir(path) => Box::new(CertDirBackend::open(path)?),
            };
            backends.push(backend);
        }
        Ok(Self::new(
            log,
            backends,
            Duration::from_secs(config.cache_ttl_secs),
            config.cache_max_bytes,
        ))
    }

    /// A store over ready-made backends (queried in this order) with a
    /// host cache of `cache_ttl` and `cache_max_bytes`.
    pub fn new(
        log: &Logger,
        backends: Vec<Box<dyn TrustBackend>>,
        cache_ttl: Duration,
        cache_max_bytes: usize,
    ) -> Self {
        let log = log.new(slog::o!("service" => "trust"));
        for b in &backends {
            let i = b.info();
            info!(log, "trust backend loaded"; "name" => &i.name, "kind" => &i.kind,
                "certs" => i.certs, "without_skid" => i.without_skid, "skipped" => i.skipped,
                "bytes" => i.bytes);
        }
        Self {
            backends,
            cache: Mutex::new(HostCache::new(cache_ttl, cache_max_bytes)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            log,
        }
    }

    /// Every certificate with this SKID, `expired` judged against now.
    pub fn lookup(&self, skid: &[u8]) -> Result<TrustedCerts, TrustError> {
        self.lookup_at(skid, unix_now())
    }

    /// Every certificate with this SKID in backend order, identical ones
    /// from several backends reported once, `expired` judged against
    /// `now` (Unix seconds). [`TrustError::NotFound`] if none.
    pub fn lookup_at(&self, skid: &[u8], now: i64) -> Result<TrustedCerts, TrustError> {
        let mut certs: Vec<TrustedCert> = Vec::new();
        for backend in &self.backends {
            for der in backend.lookup(skid) {
                if certs.iter().any(|c| c.der == der) {
                    continue;
                }
                match describe(der, backend.name(), now) {
                    Some(cert) => certs.push(cert),
                    None => warn!(self.log, "trust backend holds an unparsable certificate";
                        "backend" => backend.name(), "skid" => %HexSkid(skid)),
                }
            }
        }
        debug!(self.log, "trust lookup"; "skid" => %HexSkid(skid), "found" => certs.len());
        if certs.is_empty() {
            return Err(TrustError::not_found(skid));
        }
        Ok(TrustedCerts { certs })
    }

    /// The backends' counts and the cache's state.
    pub fn info(&self) -> TrustInfo {
        let cache = self.cache();
        TrustInfo {
            backends: self.backends.iter().map(|b| b.info()).collect(),
            cache: CacheInfo {
                hosts: cache.len(),
                bytes: cache.bytes(),
                max_bytes: cache.max_bytes(),
                ttl_secs: cache.ttl().as_secs(),
                hits: self.hits.load(Ordering::Relaxed),
                misses: self.misses.load(Ordering::Relaxed),
                evictions: cache.evictions(),
            },
        }
    }

    /// The backends, in query order.
    pub fn backends(&self) -> &[Box<dyn TrustBackend>] {
        &self.backends
    }

    fn cache(&self) -> MutexGuard<'_, HostCache> {
        // The cache holds no invariant a panic elsewhere could break
        // half-way that matters more than staying available.
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The SKIDs cached for `host`, if fresh.
    pub fn cached_skids(&self, host: &str) -> Option<Vec<Vec<u8>>> {
        self.cache().get(host, tokio::time::Instant::now())
    }

    /// Remembers that the CAs with `skids` validated `host`.
    pub fn remember(&self, host: &str, skids: Vec<Vec<u8>>) {
        if !self.cache().insert(host, skids, tokio::time::Instant::now()) {
            debug!(self.log, "host entry over the cache bound, not cached"; "host" => host);
        }
    }

    /// Forgets `host`'s cached SKIDs.
    pub fn forget(&self, host: &str) {
        self.cache().remove(host);
    }

    /// Whether `host` has a cache entry.
    pub fn is_cached(&self, host: &str) -> bool {
        self.cache().contains(host)
    }

    pub(crate) fn count_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }
}

/// Subject and validity of `der`, or `None` if it does not parse.
pub(crate) fn describe(der: Bytes, backend: &str, now: i64) -> Option<TrustedCert> {
    let cert = parse_cert(&der)?;
    let validity = cert.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    let subject = cert.subject().to_string();
    Some(TrustedCert {
        subject,
        not_before,
        not_after,
        expired: now > not_after,
        backend: backend.to_owned(),
        der,
    })
}
