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
    /// Durable store and socket directory. Default: $STATE_DIRECTORY, else
    /// $XDG_STATE_HOME/lwsys, else ./lwsys-state.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Control socket path. Default: <state-dir>/lwsys.sock.
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
    /// Lines a client may have waiting to be written before it is
    /// disconnected as too slow. Default 4096.
    pub client_queue: usize,
    /// Most clients connected at once; more are refused. Default 1024.
    pub max_clients: usize,
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

impl Default for ControlSection {
    fn default() -> Self {
        Self {
            client_queue: 4096,
            max_clients: 1024,
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
    /// The file is not valid TOML for this schema (the message names the
    /// line, column and key).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml said, with line and key.
        message: String,
    },
    /// A value is out of its range.
    #[error("{key}: {message}")]
    Invalid {
        /// The key, as `section.key`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Parse TOML text; `path` names the file in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text, path)
    }

    /// Check ranges that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.supervisor;
        if !(1..=3_600_000).contains(&s.consent_timeout_ms) {
            return Err(ConfigError::Invalid {
                key: "supervisor.consent_timeout_ms",
                message: "must be 1 to 3600000".into(),
            });
        }
        if s.shutdown_grace_ms > 3_600_000 {
            return Err(ConfigError::Invalid {
                key: "supervisor.shutdown_grace_ms",
                message: "must be at most 3600000".into(),
            });
        }
        if s.restart_window_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "supervisor.restart_window_secs",
                message: "must be at least 1".into(),
            });
        }
        if s.journal_len == 0 || s.journal_len > 1_000_000 {
            return Err(ConfigError::Invalid {
                key: "supervisor.journal_len",
                message: "must be 1 to 1000000".into(),
            });
        }
        if crate::logging::parse_level(&self.log.level).is_none() {
            return Err(ConfigError::Invalid {
                key: "log.level",
                message: format!("unknown level {:?}", self.log.level),
            });
        }
        if self.control.client_queue == 0 || self.control.max_clients == 0 {
            return Err(ConfigError::Invalid {
                key: "control.client_queue",
                message: "client_queue and max_clients must be at least 1".into(),
            });
        }
        if self.blobs.max_bytes == 0 || self.blobs.max_bytes > 256 * 1024 * 1024 {
            return Err(ConfigError::Invalid {
                key: "blobs.max_bytes",
                message: "must be 1 to 268435456".into(),
            });
        }
        let t = &self.time;
        if t.backoff_min_ms == 0
            || t.backoff_max_ms < t.backoff_min_ms
            || t.resync_secs == 0
            || t.query_timeout_ms == 0
        {
            return Err(ConfigError::Invalid {
                key: "time.backoff_min_ms",
                message: "backoff_min_ms, resync_secs and query_timeout_ms must be positive and backoff_max_ms >= backoff_min_ms".into(),
            });
        }
        let o = &self.ota;
        if !o.repository.is_empty() && (o.variant.is_empty() || o.public_jwk.as_os_str().is_empty())
        {
            return Err(ConfigError::Invalid {
                key: "ota.repository",
                message: "needs ota.variant and ota.public_jwk".into(),
            });
        }
        if o.periodic_check_secs == 0
            || o.max_boot_attempts == 0
            || o.connect_timeout_ms == 0
            || o.read_timeout_ms == 0
        {
            return Err(ConfigError::Invalid {
                key: "ota.periodic_check_secs",
                message: "periodic_check_secs, max_boot_attempts and the timeouts must be positive"
                    .into(),
            });
        }
        if self.system.reboot.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "system.reboot",
                message: "must be \"exec\" or a command line".into(),
            });
        }
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
        self.validate()
    }

    /// The consent deadline.
    pub fn consent_timeout(&self) -> Duration {
        Duration::from_millis(self.supervisor.consent_timeout_ms)
    }

    /// The service restart limits.
    pub fn restart_limits(&self) -> crate::supervisor::RestartLimits {
        crate::supervisor::RestartLimits {
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

/// The state directory: `--state-dir`, else `$STATE_DIRECTORY` (systemd;
/// the first of a colon-separated list), else `$XDG_STATE_HOME/lwsys`, else
/// `./lwsys-state`. Takes the environment as a function so tests need not
/// touch the process environment.
pub fn state_dir(cli: &Cli, env: impl Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(d) = &cli.state_dir {
        return d.clone();
    }
    if let Some(d) = env("STATE_DIRECTORY").filter(|s| !s.is_empty()) {
        return PathBuf::from(d.split(':').next().unwrap_or(&d));
    }
    if let Some(d) = env("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return Path::new(&d).join("lwsys");
    }
    PathBuf::from("lwsys-state")
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
        let err = Config::from_toml(
            "[supervisor]\nboot_target = \"DHCP\"\nbogus = 1\n",
            Path::new("dev.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("dev.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn bad_values_are_errors() {
        let err = Config::from_toml("[supervisor]\nboot_target = \"NOPE\"\n", Path::new("c.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("NOPE"), "{err}");
        let err = Config::from_toml("[supervisor]\nconsent_timeout_ms = 0\n", Path::new("c.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("supervisor.consent_timeout_ms"), "{err}");
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
    fn ota_section_defaults_and_needs_variant_and_key_with_a_repository() {
        let cfg = Config::from_toml("", Path::new("c")).unwrap();
        assert_eq!(cfg.ota.periodic_check_secs, 86_400);
        assert_eq!(cfg.ota.max_boot_attempts, 3);
        assert_eq!(cfg.ota.confirm, ConfirmMode::Auto);
        assert!(cfg.services(Path::new("/s")).ota.is_none());
        let err =
            Config::from_toml("[ota]\nrepository = \"http://x\"\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("ota.repository"), "{err}");
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
