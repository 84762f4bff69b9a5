//! What a trust backend is ([`TrustBackend`]) and how the configuration
//! names the backends to load ([`TrustConfig`], [`TrustSource`]).

use std::path::PathBuf;

use bytes::Bytes;
use lwsys_messages::trust::BackendInfo;
use serde::{Deserialize, Serialize};

use super::cache::{DEFAULT_CACHE_MAX_BYTES, DEFAULT_CACHE_TTL};

/// A source of trusted CA certificates, searchable by SKID. Lookups are
/// synchronous and must be cheap (in memory): the TLS verifier calls them
/// inside a handshake.
pub trait TrustBackend: Send + Sync {
    /// A name for logs and stats (the file or directory path).
    fn name(&self) -> &str;
    /// Every certificate (DER) whose SKID equals `skid` exactly.
    fn lookup(&self, skid: &[u8]) -> Vec<Bytes>;
    /// Counts for `system.info`.
    fn info(&self) -> BackendInfo;
}

/// One trust backend in the configuration; TOML `{ blob = "path" }` or
/// `{ cert_dir = "path" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustSource {
    /// An lws TBLB trust blob file.
    Blob(PathBuf),
    /// A directory of PEM or DER certificates, such as `/etc/ssl/certs`.
    CertDir(PathBuf),
}

/// The trust service's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrustConfig {
    /// The backends, queried in this order. Default: none (every query is
    /// `not_found`).
    pub sources: Vec<TrustSource>,
    /// How long a host's cached CA SKIDs live, in seconds. Default 3600.
    pub cache_ttl_secs: u64,
    /// The host cache's footprint bound in bytes; 0 disables the cache.
    /// Default 32768.
    pub cache_max_bytes: usize,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            cache_ttl_secs: DEFAULT_CACHE_TTL.as_secs(),
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
        }
    }
}
