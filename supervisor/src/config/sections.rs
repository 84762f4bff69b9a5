//! The sections of the TOML config file (serde), every key with its
//! documented default. `docs/config.md` lists every key.

use std::path::PathBuf;

use lwsys_messages::blobs::BlobKind;
use lwsys_messages::state::SystemState;
use serde::{Deserialize, Serialize};

use super::ControlSection;
use crate::logging::LogFormat;

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
    /// The fleet link to an MQTT broker (off unless `broker` is set).
    pub fleet: FleetSection,
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
    /// Once stable at OPERATIONAL and healthy.
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
    /// `"auto"` confirms a trial boot once it has been OPERATIONAL for
    /// `confirm_after_secs` and every health command passes; `"manual"`
    /// leaves it to `ota.report_current`. Default auto.
    pub confirm: ConfirmMode,
    /// Seconds a trial boot must stay OPERATIONAL before the health
    /// commands run and, passing, confirm it. Default 10.
    pub confirm_after_secs: u64,
    /// Seconds from the OTA service's start within which a trial boot
    /// must be confirmed, else it is rolled back. Default 600.
    pub confirm_timeout_secs: u64,
    /// Health check commands (each split on whitespace, run without a
    /// shell); every one must exit 0 for a trial to be confirmed. Default
    /// none.
    pub health_commands: Vec<String>,
    /// Seconds one health command may run before it counts as failed.
    /// Default 30.
    pub health_timeout_secs: u64,
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
    /// `[ota.policy]`: when installs may happen.
    pub policy: OtaPolicySection,
}

/// `[ota.policy]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtaPolicySection {
    /// Daily maintenance windows `"HH:MM-HH:MM"` (may cross midnight; the
    /// end may be `24:00`); outside them an install waits. Default none
    /// (any time).
    pub windows: Vec<String>,
    /// The windows' fixed offset from UTC, `"+HH:MM"`/`"-HH:MM"`. Default
    /// `"+00:00"`.
    pub utc_offset: String,
    /// Deferred attempts to enter MODAL_UPDATING per release before a
    /// normal release goes past `Defer` verdicts (0: no limit). Default 0.
    pub max_deferrals: u32,
    /// Seconds after a release is first found before it goes past `Defer`
    /// verdicts (0: no limit). Default 0.
    pub max_defer_secs: u64,
    /// Seconds after a `security` release is first found before it is
    /// installed past every verdict, windows or not. Default 86400.
    pub security_deadline_secs: u64,
}

impl Default for OtaPolicySection {
    fn default() -> Self {
        Self {
            windows: Vec::new(),
            utc_offset: "+00:00".into(),
            max_deferrals: 0,
            max_defer_secs: 0,
            security_deadline_secs: 86_400,
        }
    }
}

impl Default for OtaSection {
    fn default() -> Self {
        Self {
            repository: String::new(),
            variant: String::new(),
            public_jwk: PathBuf::new(),
            periodic_check_secs: 86_400,
            confirm: ConfirmMode::Auto,
            confirm_after_secs: 10,
            confirm_timeout_secs: 600,
            health_commands: Vec::new(),
            health_timeout_secs: 30,
            max_boot_attempts: 3,
            bootloader: String::new(),
            connect_timeout_ms: 10_000,
            read_timeout_ms: 30_000,
            download_timeout_secs: 1800,
            max_image_bytes: 4 << 30,
            ca_file: PathBuf::new(),
            policy: OtaPolicySection::default(),
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

/// What commands from the broker may do (`[fleet] commands`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FleetCommands {
    /// Every command is answered `forbidden`.
    #[default]
    None,
    /// What a read-only socket client may do.
    Readonly,
    /// Everything an admin may do.
    Admin,
}

impl FleetCommands {
    /// The config word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Readonly => "readonly",
            Self::Admin => "admin",
        }
    }
}

/// `[fleet]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSection {
    /// `mqtts://host:port` or `mqtt://host:port`; "" runs no fleet link.
    /// Default "".
    pub broker: String,
    /// Topic prefix. Default "lwsys".
    pub prefix: String,
    /// The device's fleet id and MQTT client id; "" takes the
    /// MQTT_CLIENT_ID blob, else DEVICE_SERIAL, else the hostname.
    /// Default "".
    pub device_id: String,
    /// What broker commands may do. Default none (DESIGN §7).
    pub commands: FleetCommands,
    /// A state the built-in `fleet` notifier defers until the broker has
    /// accepted the device; "" gates nothing. Default "".
    pub gate_state: String,
    /// MQTT keepalive, seconds (5 to 3600). Default 30.
    pub keepalive_secs: u64,
    /// Longest wait between reconnect attempts, seconds (1 to 3600); the
    /// first retry comes after 1 s and each failure doubles it. Default 60.
    pub backoff_max_secs: u64,
    /// How long one broker command may run before it is answered
    /// `timeout`, seconds (1 to 3600). Default 30.
    pub command_timeout_secs: u64,
    /// PEM CA certificates trusted for an `mqtts` broker besides the trust
    /// store; "" none. Default "".
    pub ca_file: PathBuf,
}

impl Default for FleetSection {
    fn default() -> Self {
        Self {
            broker: String::new(),
            prefix: "lwsys".into(),
            device_id: String::new(),
            commands: FleetCommands::None,
            gate_state: String::new(),
            keepalive_secs: 30,
            backoff_max_secs: 60,
            command_timeout_secs: 30,
            ca_file: PathBuf::new(),
        }
    }
}
