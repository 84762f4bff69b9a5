//! Configuration: the `lwsysd` command line (clap) and the TOML config file
//! (serde), every key with a documented default; flags override the file.
//! `docs/config.md` lists every key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use lwsys_messages::blobs::BlobKind;
use lwsys_messages::state::SystemState;
use serde::{Deserialize, Serialize};

/// The `lwsysd` command line.
#[derive(Debug, Clone, Parser, Default)]
#[command(name = "lwsysd", version, about = "The lwsys system supervisor daemon")]
pub struct Cli {
    /// TOML config file; every key is optional (see docs/config.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Durable store directory, and the socket's unless `--socket` or
    /// `$RUNTIME_DIRECTORY` places it. Default: `$STATE_DIRECTORY` (first of
    /// a `:` list), else `$XDG_STATE_HOME/lwsys`, else `./lwsys-state`.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Control socket path. Default: `$RUNTIME_DIRECTORY/lwsys.sock` (first
    /// of a `:` list; systemd sets it), else `<state-dir>/lwsys.sock`.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Also speak the control protocol on stdin/stdout (logs go to stderr);
    /// EOF on stdin shuts the daemon down cleanly.
    #[arg(long)]
    pub stdio: bool,
    /// Where the boot walk goes (CONTEXT_CREATED holds the boot).
    #[arg(long, value_name = "STATE")]
    pub boot_target: Option<SystemState>,
    /// How long a notifier may take to answer a consent request.
    #[arg(long, value_name = "MS")]
    pub consent_timeout_ms: Option<u64>,
    /// Log format on stderr.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Lowest level logged: critical, error, warning, info, debug, trace.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// If the durable store (`<state-dir>/lwsys.redb`) is truncated,
    /// corrupt or unreadable, move it aside to `lwsys.redb.broken-<unix
    /// time>` and start with an empty store, logging what was lost. Without
    /// this flag such a store stops the daemon (exit 70) and is left as is.
    #[arg(long)]
    pub recover_store: bool,
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Term,
    /// One JSON object per line.
    Json,
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The consent engine.
    pub supervisor: SupervisorSection,
    /// Logging.
    pub log: LogSection,
    /// System ops.
    pub system: SystemSection,
    /// The control socket.
    pub control: ControlSection,
    /// System blobs.
    pub blobs: BlobsSection,
    /// Time keeping.
    pub time: TimeSection,
    /// CA trust.
    pub trust: TrustSection,
    /// OTA updates (off unless `repository` is set).
    pub ota: OtaSection,
}

/// `[blobs]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobsSection {
    /// Kinds kept across restarts in the durable store. Default AUTH,
    /// CLIENT_CERT_DER, CLIENT_KEY_DER, DEVICE_SERIAL, DEVICE_TYPE.
    pub durable: Vec<BlobKind>,
    /// Largest blob in bytes; a set or append past it is refused. Default
    /// 1048576.
    pub max_bytes: usize,
}

impl Default for BlobsSection {
    fn default() -> Self {
        Self {
            durable: lwsys_messages::blobs::DEFAULT_DURABLE.to_vec(),
            max_bytes: lwsys_messages::blobs::DEFAULT_MAX_BYTES,
        }
    }
}

/// How the clock comes to trust the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TimeSourceName {
    /// The host clock (when synchronised, or always with trust_unsynced).
    #[default]
    System,
    /// SNTP against the server in the NTP_SERVER blob.
    Sntp,
}

/// `[time]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeSection {
    /// `"system"` or `"sntp"`. Default system.
    pub source: TimeSourceName,
    /// With `system`: trust the host clock even when the kernel does not
    /// say it is synchronised. Default true.
    pub trust_unsynced: bool,
    /// Let `set_clock` step CLOCK_REALTIME (needs CAP_SYS_TIME); otherwise
    /// lwsys keeps a soft clock offset. Default false.
    pub set_system_clock: bool,
    /// NTP server used while the NTP_SERVER blob is empty. Default
    /// pool.ntp.org.
    pub server: String,
    /// Re-sync period after a good sync, seconds. Default 3600.
    pub resync_secs: u64,
    /// First retry delay after a failed sync, ms. Default 1000.
    pub backoff_min_ms: u64,
    /// Longest retry delay, ms. Default 300000.
    pub backoff_max_ms: u64,
    /// How long one SNTP query may take, ms. Default 5000.
    pub query_timeout_ms: u64,
}

impl Default for TimeSection {
    fn default() -> Self {
        Self {
            source: TimeSourceName::System,
            trust_unsynced: true,
            set_system_clock: false,
            server: "pool.ntp.org".into(),
            resync_secs: 3600,
            backoff_min_ms: 1000,
            backoff_max_ms: 300_000,
            query_timeout_ms: 5000,
        }
    }
}

/// `[trust]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustSection {
    /// lws TBLB trust blobs, queried first, in order. Default none.
    pub blob_files: Vec<PathBuf>,
    /// Directories of PEM/DER certificates, queried next. Default none.
    pub cert_dirs: Vec<PathBuf>,
    /// How long a host's issuing CAs are remembered, seconds. Default 3600.
    pub cache_ttl_secs: u64,
    /// Byte bound on that cache (least recently used evicted). Default 32768.
    pub cache_max_bytes: usize,
}

impl Default for TrustSection {
    fn default() -> Self {
        Self {
            blob_files: Vec::new(),
            cert_dirs: Vec::new(),
            cache_ttl_secs: 3600,
            cache_max_bytes: 32768,
        }
    }
}

/// When a trial boot is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConfirmMode {
    /// On reaching OPERATIONAL.
    #[default]
    Auto,
    /// Only by `ota.report_current {bad: false}`.
    Manual,
}

/// `[ota]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtaSection {
    /// Base URL of the update repository; files are fetched from
    /// `<repository>/<variant>/`. Default "" (OTA off).
    pub repository: String,
    /// This device's firmware variant (matched exactly). Default "".
    pub variant: String,
    /// Path to the issuer's public JWK (EC P-521). Default "".
    pub public_jwk: PathBuf,
    /// Seconds between periodic checks. Default 86400.
    pub periodic_check_secs: u64,
    /// `"auto"` confirms a trial boot on reaching OPERATIONAL; `"manual"`
    /// leaves it to `ota.report_current`. Default auto.
    pub confirm: ConfirmMode,
    /// Unconfirmed boots of a trial slot before it is rolled back. Default 3.
    pub max_boot_attempts: u32,
    /// Command run (no shell) with the selected slot name appended after
    /// each change of selection; "" only records it. Default "".
    pub bootloader: String,
    /// TCP connect timeout, ms. Default 10000.
    pub connect_timeout_ms: u64,
    /// Timeout of each read, ms. Default 30000.
    pub read_timeout_ms: u64,
    /// Deadline of a whole download (manifest or image), s: past it the
    /// install is aborted and MODAL_UPDATING left. Default 1800.
    pub download_timeout_secs: u64,
    /// Largest inflated image accepted, bytes. Default 4294967296.
    pub max_image_bytes: u64,
    /// PEM CA certificates trusted for an `https:` repository; "" uses the
    /// trust store when `[trust]` has sources, else the built-in web roots.
    /// Default "".
    pub ca_file: PathBuf,
}

impl Default for OtaSection {
    fn default() -> Self {
        Self {
            repository: String::new(),
            variant: String::new(),
            public_jwk: PathBuf::new(),
            periodic_check_secs: 86_400,
            confirm: ConfirmMode::Auto,
            max_boot_attempts: 3,
            bootloader: String::new(),
            connect_timeout_ms: 10_000,
            read_timeout_ms: 30_000,
            download_timeout_secs: 1800,
            max_image_bytes: 4 << 30,
            ca_file: PathBuf::new(),
        }
    }
}

impl Config {
    /// The services' settings, with durable state under `state_dir`.
    pub fn services(&self, state_dir: &Path) -> crate::services::ServiceConfig {
        use lwsys_actors::clock::{ClockConfig, TimeSource};
        use lwsys_actors::trust::{TrustConfig, TrustSource};
        let t = &self.time;
        let clock = ClockConfig {
            source: match t.source {
                TimeSourceName::System => TimeSource::System,
                TimeSourceName::Sntp => TimeSource::Sntp,
            },
            trust_unsynced: t.trust_unsynced,
            default_server: t.server.clone(),
            resync: Duration::from_secs(t.resync_secs),
            backoff_min: Duration::from_millis(t.backoff_min_ms),
            backoff_max: Duration::from_millis(t.backoff_max_ms),
            query_timeout: Duration::from_millis(t.query_timeout_ms),
            wake_latency: Duration::from_micros(self.system.wake_latency_us),
            ..ClockConfig::default()
        };
        let sources = self
            .trust
            .blob_files
            .iter()
            .cloned()
            .map(TrustSource::Blob)
            .chain(self.trust.cert_dirs.iter().cloned().map(TrustSource::CertDir))
            .collect();
        crate::services::ServiceConfig {
            state_dir: Some(state_dir.to_owned()),
            blob_max_bytes: self.blobs.max_bytes,
            durable: self.blobs.durable.clone(),
            clock,
            clock_ops: None,
            set_system_clock: t.set_system_clock,
            trust: TrustConfig {
                sources,
                cache_ttl_secs: self.trust.cache_ttl_secs,
                cache_max_bytes: self.trust.cache_max_bytes,
            },
            trust_query: None,
            ota: (!self.ota.repository.is_empty()).then(|| crate::services::OtaSettings {
                section: self.ota.clone(),
                wake_latency: Duration::from_micros(self.system.wake_latency_us),
                handle: Default::default(),
            }),
        }
    }
}

/// `[supervisor]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorSection {
    /// Where the boot walk goes. Default OPERATIONAL.
    pub boot_target: SystemState,
    /// Consent deadline per notifier, ms. Default 5000.
    pub consent_timeout_ms: u64,
    /// Bound on the shutdown pass through CONTEXT_DESTROYING, ms. Default 5000.
    pub shutdown_grace_ms: u64,
    /// Consent rounds kept in the journal. Default 256.
    pub journal_len: usize,
    /// Restarts of a dead service allowed within `restart_window_secs`;
    /// one more and the daemon shuts down and exits 70. Default 5.
    pub max_restarts: usize,
    /// The window for `max_restarts`, seconds. Default 60.
    pub restart_window_secs: u64,
}

impl Default for SupervisorSection {
    fn default() -> Self {
        Self {
            boot_target: SystemState::Operational,
            consent_timeout_ms: 5000,
            shutdown_grace_ms: 5000,
            journal_len: 256,
            max_restarts: 5,
            restart_window_secs: 60,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `term` or `json`. Default term.
    pub format: LogFormat,
    /// Lowest level logged. Default info.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self { format: LogFormat::Term, level: "info".into() }
    }
}

/// `[system]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemSection {
    /// `"exec"` re-executes lwsysd with the same arguments; anything else is
    /// a command line run without a shell (e.g. `systemctl reboot`).
    pub reboot: String,
    /// Time the device needs to wake from suspend, µs: deadline timers are
    /// armed that much earlier. Default 0.
    pub wake_latency_us: u64,
}

impl Default for SystemSection {
    fn default() -> Self {
        Self { reboot: "exec".into(), wake_latency_us: 0 }
    }
}

/// `[control]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    /// Bytes a client may have waiting to be written to it before it is
    /// disconnected as too slow. Default 8 MiB; raised at run time to fit
    /// one largest reply (see [`ControlSection::queue_bytes`]).
    pub client_queue_bytes: usize,
    /// Bytes all connections of one read-only uid may have waiting to be
    /// written together; past it the connection that would go over is
    /// disconnected. Default 16 MiB; raised at run time to at least the
    /// per-client bound (see [`ControlSection::uid_queue_bytes`]).
    pub uid_queue_bytes: usize,
    /// Most clients connected at once; more are refused. Default 1024.
    pub max_clients: usize,
    /// Most connections one read-only uid may hold at once. Default 16.
    pub max_clients_per_uid: usize,
    /// Slots of `max_clients` that read-only clients may never take, so an
    /// admin can always connect. Default 8.
    pub admin_reserve: usize,
    /// Seconds a connection that holds nothing may stay silent before it
    /// is closed; 0 never. Default 300.
    pub idle_timeout_secs: u64,
    /// Most `attach` requests one connection may have pending. Default 64.
    pub attach_per_client: usize,
    /// Most `attach` requests all connections of one uid may have pending.
    /// Default 256.
    pub attach_per_uid: usize,
    /// Uids that may do everything (the daemon's own uid and root always
    /// may). Default none.
    pub admin_uids: Vec<u32>,
    /// Gids whose members may do everything. Default none.
    pub admin_gids: Vec<u32>,
    /// Uids that may only read (no changes, no secrets). Default none.
    pub readonly_uids: Vec<u32>,
    /// Gids whose members may only read. Default none.
    pub readonly_gids: Vec<u32>,
}

/// Room for a reply's JSON around its payload.
const REPLY_OVERHEAD: usize = 4096;

impl ControlSection {
    /// The outgoing queue bound actually used: `client_queue_bytes`, but at
    /// least one `blob.get` of a `max_blob`-byte blob, so a client that
    /// reads can always be answered. That reply carries the bytes twice:
    /// base64 (4 per 3) and, when they are UTF-8, as a JSON string, where
    /// a control character takes 6 (`\u0001`); plus 4 KiB for the rest of the reply.
    pub fn queue_bytes(&self, max_blob: usize) -> usize {
        let b64 = max_blob.div_ceil(3).saturating_mul(4);
        let largest = b64.saturating_add(max_blob.saturating_mul(6)).saturating_add(REPLY_OVERHEAD);
        self.client_queue_bytes.max(largest)
    }

    /// The bound on a read-only uid's connections' queued bytes together:
    /// `uid_queue_bytes`, but at least one client's [`Self::queue_bytes`].
    pub fn uid_queue_bytes(&self, max_blob: usize) -> usize {
        self.uid_queue_bytes.max(self.queue_bytes(max_blob))
    }
}

impl Default for ControlSection {
    fn default() -> Self {
        Self {
            client_queue_bytes: 8 << 20,
            uid_queue_bytes: 16 << 20,
            max_clients: 1024,
            max_clients_per_uid: 16,
            admin_reserve: 8,
            idle_timeout_secs: 300,
            attach_per_client: 64,
            attach_per_uid: 256,
            admin_uids: Vec::new(),
            admin_gids: Vec::new(),
            readonly_uids: Vec::new(),
            readonly_gids: Vec::new(),
        }
    }
}

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Something in the file is wrong: not TOML, an unknown section or
    /// key, a value of the wrong type or out of its range. Shown as
    /// `file:line: [section] key: message`.
    #[error("{}", in_file(path, *line, key, message))]
    InFile {
        /// The file.
        path: PathBuf,
        /// The line (from 1), when it is known.
        line: Option<usize>,
        /// Where in the schema, as `[section] key` (or `[section]` for a
        /// whole section); empty when toml could not tell.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value that did not come from a file is out of its range: a
    /// command-line flag, or a default that another key's value makes
    /// invalid. `key` is the flag (`--consent-timeout-ms`) or `[section]
    /// key`.
    #[error("{key}: {message}")]
    Invalid {
        /// The flag or `[section] key`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn in_file(path: &Path, line: Option<usize>, key: &str, message: &str) -> String {
    let mut out = path.display().to_string();
    if let Some(l) = line {
        out.push_str(&format!(":{l}"));
    }
    out.push_str(": ");
    if !key.is_empty() {
        out.push_str(key);
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

/// A value out of its range, found by [`Config::validate`]: which key and
/// why. The file and line are added by whoever knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeError {
    /// The section, without brackets.
    pub section: &'static str,
    /// The key within it.
    pub key: &'static str,
    /// What is wrong, e.g. `expected an integer at least 1`.
    pub message: String,
}

impl RangeError {
    fn new(section: &'static str, key: &'static str, message: impl Into<String>) -> Self {
        Self { section, key, message: message.into() }
    }

    /// `[section] key`.
    pub fn key_name(&self) -> String {
        format!("[{}] {}", self.section, self.key)
    }
}

/// `value` must lie in `lo..=hi`.
/// The longest `[ota] download_timeout_secs`: a week, so that a typo
/// cannot make the deadline meaningless (and `Instant` math cannot
/// overflow).
const MAX_DOWNLOAD_SECS: u64 = 7 * 86_400;

fn range(
    section: &'static str,
    key: &'static str,
    value: u64,
    lo: u64,
    hi: u64,
) -> Result<(), RangeError> {
    if (lo..=hi).contains(&value) {
        return Ok(());
    }
    let message = match (lo, hi) {
        (lo, u64::MAX) => format!("expected an integer at least {lo}, got {value}"),
        (0, hi) => format!("expected an integer at most {hi}, got {value}"),
        (lo, hi) => format!("expected an integer from {lo} to {hi}, got {value}"),
    };
    Err(RangeError::new(section, key, message))
}

/// Widen a count for [`range`] (usize is at most 64 bits on every target
/// lwsys builds for; saturate rather than assume).
fn wide(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Config {
    /// Parse TOML text; `path` names the file in errors, which carry the
    /// line and the `[section] key` too.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
        cfg.validate().map_err(|r| ConfigError::InFile {
            path: path.to_owned(),
            line: locate(text, r.section, r.key),
            key: r.key_name(),
            message: r.message,
        })?;
        Ok(cfg)
    }

    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text, path)
    }

    /// Check ranges that serde cannot: the first value out of range, with
    /// its own key.
    pub fn validate(&self) -> Result<(), RangeError> {
        const HOUR_MS: u64 = 3_600_000;
        let s = &self.supervisor;
        range("supervisor", "consent_timeout_ms", s.consent_timeout_ms, 1, HOUR_MS)?;
        range("supervisor", "shutdown_grace_ms", s.shutdown_grace_ms, 0, HOUR_MS)?;
        range("supervisor", "journal_len", wide(s.journal_len), 1, 1_000_000)?;
        range("supervisor", "restart_window_secs", s.restart_window_secs, 1, u64::MAX)?;
        if crate::logging::parse_level(&self.log.level).is_none() {
            return Err(RangeError::new(
                "log",
                "level",
                format!(
                    "expected one of critical, error, warning, info, debug, trace, got {:?}",
                    self.log.level
                ),
            ));
        }
        if self.system.reboot.trim().is_empty() {
            return Err(RangeError::new(
                "system",
                "reboot",
                "expected \"exec\" or a command line, got a blank string",
            ));
        }
        let c = &self.control;
        range("control", "client_queue_bytes", wide(c.client_queue_bytes), 1, u64::MAX)?;
        range("control", "uid_queue_bytes", wide(c.uid_queue_bytes), 1, u64::MAX)?;
        range("control", "max_clients", wide(c.max_clients), 1, u64::MAX)?;
        range("control", "max_clients_per_uid", wide(c.max_clients_per_uid), 1, u64::MAX)?;
        if c.admin_reserve >= c.max_clients {
            return Err(RangeError::new(
                "control",
                "admin_reserve",
                format!(
                    "expected an integer below max_clients ({}), got {}",
                    c.max_clients, c.admin_reserve
                ),
            ));
        }
        // A year: far enough for "practically never", near enough that a
        // deadline computed from it cannot overflow.
        range("control", "idle_timeout_secs", c.idle_timeout_secs, 0, 31_536_000)?;
        range("control", "attach_per_client", wide(c.attach_per_client), 1, 65_536)?;
        range("control", "attach_per_uid", wide(c.attach_per_uid), 1, 65_536)?;
        range("blobs", "max_bytes", wide(self.blobs.max_bytes), 1, 256 * 1024 * 1024)?;
        let t = &self.time;
        range("time", "resync_secs", t.resync_secs, 1, u64::MAX)?;
        range("time", "backoff_min_ms", t.backoff_min_ms, 1, u64::MAX)?;
        if t.backoff_max_ms < t.backoff_min_ms {
            return Err(RangeError::new(
                "time",
                "backoff_max_ms",
                format!(
                    "expected an integer at least backoff_min_ms ({}), got {}",
                    t.backoff_min_ms, t.backoff_max_ms
                ),
            ));
        }
        range("time", "query_timeout_ms", t.query_timeout_ms, 1, u64::MAX)?;
        let o = &self.ota;
        if !o.repository.is_empty() {
            if o.variant.is_empty() {
                return Err(RangeError::new("ota", "repository", "needs ota.variant set too"));
            }
            if o.public_jwk.as_os_str().is_empty() {
                return Err(RangeError::new("ota", "repository", "needs ota.public_jwk set too"));
            }
        }
        range("ota", "periodic_check_secs", o.periodic_check_secs, 1, u64::MAX)?;
        range("ota", "max_boot_attempts", u64::from(o.max_boot_attempts), 1, u64::MAX)?;
        range("ota", "connect_timeout_ms", o.connect_timeout_ms, 1, u64::MAX)?;
        range("ota", "read_timeout_ms", o.read_timeout_ms, 1, u64::MAX)?;
        range("ota", "download_timeout_secs", o.download_timeout_secs, 1, MAX_DOWNLOAD_SECS)?;
        Ok(())
    }

    /// Apply command-line overrides.
    pub fn apply_cli(&mut self, cli: &Cli) -> Result<(), ConfigError> {
        if let Some(t) = cli.boot_target {
            self.supervisor.boot_target = t;
        }
        if let Some(ms) = cli.consent_timeout_ms {
            self.supervisor.consent_timeout_ms = ms;
        }
        if let Some(f) = cli.log_format {
            self.log.format = f;
        }
        if let Some(l) = &cli.log_level {
            self.log.level = l.clone();
        }
        self.validate().map_err(|r| {
            // Name the flag when the bad value came from one: the file was
            // already checked on its own.
            let flag = match (r.section, r.key) {
                ("supervisor", "consent_timeout_ms") if cli.consent_timeout_ms.is_some() => {
                    Some("--consent-timeout-ms")
                }
                ("log", "level") if cli.log_level.is_some() => Some("--log-level"),
                _ => None,
            };
            ConfigError::Invalid {
                key: flag.map_or_else(|| r.key_name(), str::to_owned),
                message: r.message,
            }
        })
    }

    /// The consent deadline.
    pub fn consent_timeout(&self) -> Duration {
        Duration::from_millis(self.supervisor.consent_timeout_ms)
    }

    /// The service restart limits.
    pub fn restart_limits(&self) -> crate::supervision::RestartLimits {
        crate::supervision::RestartLimits {
            max: self.supervisor.max_restarts,
            window: Duration::from_secs(self.supervisor.restart_window_secs),
        }
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.supervisor.shutdown_grace_ms)
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// The name of a table header line (`[name]`, spaces and quotes allowed),
/// or `None` for any other line. Arrays of tables (`[[x]]`) are not part
/// of the schema and count as headers named `[x]`, so they are reported as
/// unknown sections.
fn header(line: &str) -> Option<String> {
    let t = line.trim();
    let t = t.split_once('#').map_or(t, |(before, _)| before).trim_end();
    let inner = t.strip_prefix('[')?.strip_suffix(']')?.trim();
    Some(inner.trim_matches('"').trim().to_owned())
}

/// The key a `key = value` line sets (dotted keys kept whole), if it is
/// one.
fn line_key(line: &str) -> Option<String> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    let ok = !k.is_empty()
        && !k.starts_with('[')
        && !k.starts_with('#')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c));
    ok.then(|| k.replace(['"', '\''], "").replace(' ', ""))
}

/// The line (from 1) where `[section] key` is set in `text`: under the
/// section's header, or as a dotted `section.key` at the top; else the
/// section's header; else `None` (the value is a default).
fn locate(text: &str, section: &str, key: &str) -> Option<usize> {
    let dotted = format!("{section}.{key}");
    let mut current = String::new();
    let mut header_line = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(h) = header(line) {
            if h == section {
                header_line.get_or_insert(i + 1);
            }
            current = h;
            continue;
        }
        match line_key(line) {
            Some(k) if (current == section && k == key) || (current.is_empty() && k == dotted) => {
                return Some(i + 1);
            }
            _ => {}
        }
    }
    header_line
}

/// A toml/serde error as `file:line: [section] key: message`: the line
/// from the error's span, the section from the header above it, the key
/// from the line itself or from an "unknown field" message.
fn parse_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    // serde names Rust types; a config's reader knows TOML's.
    let mut message = e.message().trim().to_owned();
    for t in ["usize", "u64", "u32"] {
        message = message.replace(&format!("expected {t}"), "expected a non-negative integer");
    }
    let Some(start) = e.span().map(|s| s.start.min(text.len())) else {
        return ConfigError::InFile {
            path: path.to_owned(),
            line: None,
            key: String::new(),
            message,
        };
    };
    let line_no = text.as_bytes().iter().take(start).filter(|b| **b == b'\n').count() + 1;
    let mut section = String::new();
    let mut this_line = "";
    for (i, line) in text.lines().enumerate().take(line_no) {
        if i + 1 == line_no {
            this_line = line;
        }
        if let Some(h) = header(line) {
            section = h;
        }
    }
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    let key = match (header(this_line), line_key(this_line), unknown) {
        // An unknown section: toml points at its header.
        (Some(h), _, _) => {
            message = message.replacen("unknown field", "unknown section", 1);
            format!("[{h}]")
        }
        (None, Some(k), _) if section.is_empty() => k,
        (None, Some(k), _) => format!("[{section}] {k}"),
        (None, None, Some(u)) if section.is_empty() => u,
        (None, None, Some(u)) => format!("[{section}] {u}"),
        (None, None, None) if section.is_empty() => String::new(),
        (None, None, None) => format!("[{section}]"),
    };
    ConfigError::InFile { path: path.to_owned(), line: Some(line_no), key, message }
}

/// The state directory: `--state-dir`, else `$STATE_DIRECTORY` (systemd;
/// the first of a colon-separated list), else `$XDG_STATE_HOME/lwsys`, else
/// `./lwsys-state`. Takes the environment as a function so tests need not
/// touch the process environment.
pub fn state_dir(cli: &Cli, env: impl Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(d) = &cli.state_dir {
        return d.clone();
    }
    if let Some(d) = first_dir(&env, "STATE_DIRECTORY") {
        return d;
    }
    if let Some(d) = env("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return Path::new(&d).join("lwsys");
    }
    PathBuf::from("lwsys-state")
}

/// The first directory of a systemd directory variable (`$STATE_DIRECTORY`,
/// `$RUNTIME_DIRECTORY` list several separated by `:` when the unit names
/// several), if it is set and not empty.
fn first_dir(env: &impl Fn(&str) -> Option<String>, var: &str) -> Option<PathBuf> {
    let v = env(var)?;
    let first = v.split(':').next().unwrap_or_default();
    (!first.is_empty()).then(|| PathBuf::from(first))
}

/// The socket's file name in whichever directory holds it.
pub const SOCKET_NAME: &str = "lwsys.sock";

/// Where the packaged unit (`packaging/lwsysd.service`,
/// `RuntimeDirectory=lwsys`) puts the socket; `lwsysctl` falls back to it.
pub const PACKAGED_SOCKET: &str = "/run/lwsys/lwsys.sock";

/// The daemon's control socket: `--socket`, else
/// `$RUNTIME_DIRECTORY/lwsys.sock` (systemd's `RuntimeDirectory=`; the
/// first of a colon-separated list), else `<state_dir>/lwsys.sock`.
pub fn socket_path(cli: &Cli, state_dir: &Path, env: impl Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(s) = &cli.socket {
        return s.clone();
    }
    match first_dir(&env, "RUNTIME_DIRECTORY") {
        Some(d) => d.join(SOCKET_NAME),
        None => state_dir.join(SOCKET_NAME),
    }
}

/// The socket `lwsysctl` uses when neither `--socket` nor `$LWSYS_SOCKET`
/// names one: the daemon's own default in this environment
/// (`$RUNTIME_DIRECTORY/lwsys.sock`, else `<state-dir>/lwsys.sock` with
/// the state dir found as [`state_dir`] finds it); when that socket does
/// not exist but the packaged daemon's [`PACKAGED_SOCKET`] does, that one,
/// so `lwsysctl` reaches a daemon started by the shipped unit from a plain
/// shell.
pub fn client_socket(
    env: impl Fn(&str) -> Option<String>,
    exists: impl Fn(&Path) -> bool,
) -> PathBuf {
    if let Some(d) = first_dir(&env, "RUNTIME_DIRECTORY") {
        return d.join(SOCKET_NAME);
    }
    let own = state_dir(&Cli::default(), &env).join(SOCKET_NAME);
    let packaged = Path::new(PACKAGED_SOCKET);
    if !exists(&own) && exists(packaged) {
        return packaged.to_owned();
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let cfg = Config::from_toml("", Path::new("x.toml")).unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.supervisor.boot_target, SystemState::Operational);
        assert_eq!(cfg.supervisor.consent_timeout_ms, 5000);
        assert_eq!(cfg.system.reboot, "exec");
    }

    #[test]
    fn unknown_keys_are_errors_naming_file_line_and_key() {
        let e = err("[supervisor]\nboot_target = \"DHCP\"\nbogus = 1\n");
        assert!(e.starts_with("lwsysd.toml:3: [supervisor] bogus: unknown field `bogus`"), "{e}");
    }

    fn err(text: &str) -> String {
        Config::from_toml(text, Path::new("lwsysd.toml")).unwrap_err().to_string()
    }

    #[test]
    fn bad_values_are_errors() {
        let e = err("[supervisor]\nboot_target = \"NOPE\"\n");
        assert!(e.starts_with("lwsysd.toml:2: [supervisor] boot_target: "), "{e}");
        assert!(e.contains("NOPE"), "{e}");
        let e = err("[supervisor]\nconsent_timeout_ms = 0\n");
        assert_eq!(
            e,
            "lwsysd.toml:2: [supervisor] consent_timeout_ms: expected an integer from 1 to 3600000, got 0"
        );
    }

    #[test]
    fn the_queue_bound_is_raised_to_one_largest_blob_reply() {
        let c = ControlSection::default();
        // The figure docs/config.md quotes for the default max_bytes.
        let floor = ControlSection { client_queue_bytes: 1, ..c.clone() };
        assert_eq!(floor.queue_bytes(1 << 20), 7_693_656);
        assert_eq!(c.queue_bytes(1 << 20), 8 << 20);
        // 256 MiB blobs need more than the default 8 MiB.
        // 4 * ceil(2^28 / 3) + 6 * 2^28 + 4096.
        assert_eq!(c.queue_bytes(256 << 20), 357_913_944 + 1_610_612_736 + 4096);
    }

    #[test]
    fn each_range_check_names_its_own_key_and_line() {
        let e = err("# c\n[control]\nclient_queue_bytes = 8\nmax_clients = 0\n");
        assert_eq!(
            e,
            "lwsysd.toml:4: [control] max_clients: expected an integer at least 1, got 0"
        );
        let e = err("[control]\nclient_queue_bytes = 0\n");
        assert!(e.starts_with("lwsysd.toml:2: [control] client_queue_bytes: "), "{e}");
        let e = err("[control]\nmax_clients = 8\nadmin_reserve = 8\n");
        assert_eq!(
            e,
            "lwsysd.toml:3: [control] admin_reserve: expected an integer below max_clients (8), got 8"
        );
        let e = err("[control]\nattach_per_client = 0\n");
        assert!(e.starts_with("lwsysd.toml:2: [control] attach_per_client: "), "{e}");
        let e = err("[control]\nidle_timeout_secs = 99999999999\n");
        assert!(e.starts_with("lwsysd.toml:2: [control] idle_timeout_secs: "), "{e}");
        let e = err("[time]\nresync_secs = 5\n\nbackoff_min_ms = 10\nbackoff_max_ms = 5\n");
        assert_eq!(
            e,
            "lwsysd.toml:5: [time] backoff_max_ms: expected an integer at least backoff_min_ms (10), got 5"
        );
        let e = err("[time]\nquery_timeout_ms = 0\n");
        assert!(e.starts_with("lwsysd.toml:2: [time] query_timeout_ms: "), "{e}");
        let e = err("[time]\nresync_secs = 0\n");
        assert!(e.starts_with("lwsysd.toml:2: [time] resync_secs: "), "{e}");
        let e = err("[ota]\n\"max_boot_attempts\" = 0\n");
        assert!(e.starts_with("lwsysd.toml:2: [ota] max_boot_attempts: "), "{e}");
        let e = err("[ota]\nvariant = \"v\"\ndownload_timeout_secs = 0\n");
        assert_eq!(
            e,
            "lwsysd.toml:3: [ota] download_timeout_secs: expected an integer from 1 to 604800, got 0"
        );
        let e = err("[ota]\ndownload_timeout_secs = 604801\n");
        assert!(e.starts_with("lwsysd.toml:2: [ota] download_timeout_secs: "), "{e}");
        let e = err("blobs.max_bytes = 0\n");
        assert!(e.starts_with("lwsysd.toml:1: [blobs] max_bytes: "), "{e}");
        // A default made invalid by another key has no line of its own:
        // the section's header is the nearest place.
        let e = err("\n[time]\nbackoff_min_ms = 400000\n");
        assert!(e.starts_with("lwsysd.toml:2: [time] backoff_max_ms: "), "{e}");
        let e = err("[log]\nlevel = \"loud\"\n");
        assert!(e.starts_with("lwsysd.toml:2: [log] level: expected one of critical"), "{e}");
    }

    #[test]
    fn wrong_types_and_unknown_sections_name_line_and_key() {
        let e = err("[supervisor]\njournal_len = \"many\"\n");
        assert!(e.starts_with("lwsysd.toml:2: [supervisor] journal_len: "), "{e}");
        assert!(
            e.ends_with("invalid type: string \"many\", expected a non-negative integer"),
            "{e}"
        );
        let e = err("[time]\nset_system_clock = 1\n");
        assert!(e.starts_with("lwsysd.toml:2: [time] set_system_clock: "), "{e}");
        let e = err("[supervisor]\n[bogus]\nx = 1\n");
        assert!(e.starts_with("lwsysd.toml:2: [bogus]: unknown section `bogus`"), "{e}");
        let e = err("[log]\nlevel = \n");
        assert!(e.starts_with("lwsysd.toml:2: [log] level: "), "{e}");
    }

    #[test]
    fn a_bad_flag_value_names_the_flag() {
        let mut cfg = Config::default();
        let cli = Cli { consent_timeout_ms: Some(0), ..Cli::default() };
        let e = cfg.apply_cli(&cli).unwrap_err().to_string();
        assert!(e.starts_with("--consent-timeout-ms: expected an integer from 1"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let mut cfg =
            Config::from_toml("[supervisor]\nconsent_timeout_ms = 100\n", Path::new("c")).unwrap();
        let cli = Cli {
            consent_timeout_ms: Some(300),
            boot_target: Some(SystemState::Dhcp),
            ..Cli::default()
        };
        cfg.apply_cli(&cli).unwrap();
        assert_eq!(cfg.supervisor.consent_timeout_ms, 300);
        assert_eq!(cfg.supervisor.boot_target, SystemState::Dhcp);
    }

    #[test]
    fn state_dir_follows_the_documented_order() {
        let none = |_: &str| None;
        assert_eq!(state_dir(&Cli::default(), none), PathBuf::from("lwsys-state"));
        let xdg = |k: &str| (k == "XDG_STATE_HOME").then(|| "/x".to_owned());
        assert_eq!(state_dir(&Cli::default(), xdg), PathBuf::from("/x/lwsys"));
        let sd = |k: &str| Some(if k == "STATE_DIRECTORY" { "/s:/t" } else { "/x" }.to_owned());
        assert_eq!(state_dir(&Cli::default(), sd), PathBuf::from("/s"));
        let cli = Cli { state_dir: Some("/c".into()), ..Cli::default() };
        assert_eq!(state_dir(&cli, sd), PathBuf::from("/c"));
    }

    #[test]
    fn the_socket_goes_in_the_runtime_directory_unless_a_flag_says() {
        let rt = |k: &str| (k == "RUNTIME_DIRECTORY").then(|| "/run/a:/run/b".to_owned());
        let cli = Cli::default();
        assert_eq!(socket_path(&cli, Path::new("/s"), rt), PathBuf::from("/run/a/lwsys.sock"));
        assert_eq!(socket_path(&cli, Path::new("/s"), |_| None), PathBuf::from("/s/lwsys.sock"));
        let empty = |_: &str| Some(String::new());
        assert_eq!(socket_path(&cli, Path::new("/s"), empty), PathBuf::from("/s/lwsys.sock"));
        let cli = Cli { socket: Some("/f.sock".into()), ..Cli::default() };
        assert_eq!(socket_path(&cli, Path::new("/s"), rt), PathBuf::from("/f.sock"));
    }

    #[test]
    fn the_client_finds_the_socket_the_daemon_would_use() {
        let rt = |k: &str| (k == "RUNTIME_DIRECTORY").then(|| "/run/a".to_owned());
        assert_eq!(client_socket(rt, |_| false), PathBuf::from("/run/a/lwsys.sock"));
        let sd = |k: &str| (k == "STATE_DIRECTORY").then(|| "/s".to_owned());
        assert_eq!(client_socket(sd, |_| false), PathBuf::from("/s/lwsys.sock"));
        // Only the packaged daemon's socket exists: use it.
        let packaged = |p: &Path| p == Path::new(PACKAGED_SOCKET);
        assert_eq!(client_socket(sd, packaged), PathBuf::from(PACKAGED_SOCKET));
        // Both exist: the local one, as without the packaged daemon.
        assert_eq!(client_socket(sd, |_| true), PathBuf::from("/s/lwsys.sock"));
    }

    #[test]
    fn ota_section_defaults_and_needs_variant_and_key_with_a_repository() {
        let cfg = Config::from_toml("", Path::new("c")).unwrap();
        assert_eq!(cfg.ota.periodic_check_secs, 86_400);
        assert_eq!(cfg.ota.max_boot_attempts, 3);
        assert_eq!(cfg.ota.download_timeout_secs, 1800);
        assert_eq!(cfg.ota.confirm, ConfirmMode::Auto);
        assert!(cfg.services(Path::new("/s")).ota.is_none());
        let err =
            Config::from_toml("[ota]\nrepository = \"http://x\"\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("[ota] repository: needs ota.variant"), "{err}");
        let text = "[ota]\nrepository = \"http://x\"\nvariant = \"v\"\npublic_jwk = \"k\"\nconfirm = \"manual\"\n";
        let cfg = Config::from_toml(text, Path::new("c")).unwrap();
        assert_eq!(cfg.ota.confirm, ConfirmMode::Manual);
        assert!(cfg.services(Path::new("/s")).ota.is_some());
    }

    #[test]
    fn printed_config_parses_back_to_itself() {
        let cfg = Config::default();
        assert_eq!(Config::from_toml(&cfg.to_toml(), Path::new("p")).unwrap(), cfg);
    }
}
