//! Range checks serde cannot make, and the command-line overrides (which
//! are checked the same way, naming the flag).

use super::{Cli, Config, ConfigError};

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

/// The most `[ota] health_commands`.
const MAX_HEALTH_COMMANDS: usize = 16;

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
        self.validate_health()?;
        self.validate_policy()?;
        self.validate_fleet()
    }

    /// The health-gated commit: a stable time within the deadline, a few
    /// commands of sane length.
    fn validate_health(&self) -> Result<(), RangeError> {
        let o = &self.ota;
        range("ota", "confirm_after_secs", o.confirm_after_secs, 1, 86_400)?;
        range("ota", "confirm_timeout_secs", o.confirm_timeout_secs, 1, MAX_DOWNLOAD_SECS)?;
        if o.confirm_timeout_secs <= o.confirm_after_secs {
            let m = format!(
                "expected more than confirm_after_secs ({}), got {}",
                o.confirm_after_secs, o.confirm_timeout_secs
            );
            return Err(RangeError::new("ota", "confirm_timeout_secs", m));
        }
        range("ota", "health_timeout_secs", o.health_timeout_secs, 1, 3600)?;
        if o.health_commands.len() > MAX_HEALTH_COMMANDS {
            let m = format!(
                "expected at most {MAX_HEALTH_COMMANDS} commands, got {}",
                o.health_commands.len()
            );
            return Err(RangeError::new("ota", "health_commands", m));
        }
        for c in &o.health_commands {
            if c.split_whitespace().next().is_none() || c.len() > 1024 {
                let m = "expected each command non-empty and at most 1024 bytes";
                return Err(RangeError::new("ota", "health_commands", m));
            }
        }
        Ok(())
    }

    /// `[ota.policy]`: windows and offset that parse, bounded times.
    fn validate_policy(&self) -> Result<(), RangeError> {
        use lwsys_actors::ota::policy::{parse_utc_offset, Window, MAX_WINDOWS};
        let p = &self.ota.policy;
        if p.windows.len() > MAX_WINDOWS {
            let m = format!("expected at most {MAX_WINDOWS} windows, got {}", p.windows.len());
            return Err(RangeError::new("ota.policy", "windows", m));
        }
        for w in &p.windows {
            w.parse::<Window>().map_err(|m| RangeError::new("ota.policy", "windows", m))?;
        }
        parse_utc_offset(&p.utc_offset)
            .map_err(|m| RangeError::new("ota.policy", "utc_offset", m))?;
        range("ota.policy", "max_defer_secs", p.max_defer_secs, 0, 366 * 86_400)?;
        range("ota.policy", "security_deadline_secs", p.security_deadline_secs, 1, 366 * 86_400)
    }

    /// The `[fleet]` checks: a broker URL we can use, names that are one
    /// safe topic level each, a gate state that exists.
    fn validate_fleet(&self) -> Result<(), RangeError> {
        let f = &self.fleet;
        if !f.broker.is_empty() {
            crate::fleet::Broker::parse(&f.broker)
                .map_err(|m| RangeError::new("fleet", "broker", m))?;
        }
        lwsys_messages::fleet::check_prefix(&f.prefix)
            .map_err(|e| RangeError::new("fleet", "prefix", format!("{e}, got {:?}", f.prefix)))?;
        if !f.device_id.is_empty() {
            lwsys_messages::fleet::check_device_id(&f.device_id).map_err(|e| {
                RangeError::new("fleet", "device_id", format!("{e}, got {:?}", f.device_id))
            })?;
        }
        if !f.gate_state.is_empty() {
            f.gate_state.parse::<lwsys_messages::state::SystemState>().map_err(|_| {
                RangeError::new(
                    "fleet",
                    "gate_state",
                    format!("expected a system state name or \"\", got {:?}", f.gate_state),
                )
            })?;
        }
        range("fleet", "keepalive_secs", f.keepalive_secs, 5, 3600)?;
        range("fleet", "backoff_max_secs", f.backoff_max_secs, 1, 3600)?;
        range("fleet", "command_timeout_secs", f.command_timeout_secs, 1, 3600)?;
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
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use lwsys_messages::state::SystemState;
    #[test]
    fn fleet_keys_are_checked_with_their_names() {
        let bad = [
            ("broker = \"http://x:1\"", "[fleet] broker"),
            ("broker = \"mqtt://:1\"", "[fleet] broker"),
            ("broker = \"mqtt://h:0\"", "[fleet] broker"),
            ("prefix = \"a/+\"", "[fleet] prefix"),
            ("prefix = \"\"", "[fleet] prefix"),
            ("device_id = \"a/b\"", "[fleet] device_id"),
            ("device_id = \"#\"", "[fleet] device_id"),
            ("gate_state = \"NOPE\"", "[fleet] gate_state"),
            ("keepalive_secs = 1", "[fleet] keepalive_secs"),
            ("backoff_max_secs = 0", "[fleet] backoff_max_secs"),
            ("command_timeout_secs = 0", "[fleet] command_timeout_secs"),
        ];
        for (line, key) in bad {
            let text = format!("[fleet]\n{line}\n");
            let e = Config::from_toml(&text, Path::new("c")).unwrap_err().to_string();
            assert!(e.contains(key), "{line}: {e}");
            assert!(e.starts_with("c:2: "), "{line}: {e}");
        }
        let ok = "[fleet]\nbroker = \"mqtts://broker.example:8883\"\ndevice_id = \"dev-1\"\n\
                  commands = \"readonly\"\ngate_state = \"REGISTERED\"\n";
        let cfg = Config::from_toml(ok, Path::new("c")).unwrap();
        assert_eq!(cfg.fleet.commands, crate::config::FleetCommands::Readonly);
        assert_eq!(Config::default().fleet.commands, crate::config::FleetCommands::None);
    }

    #[test]
    fn health_and_policy_keys_are_checked_with_their_names_and_lines() {
        let bad = [
            ("[ota]\nconfirm_after_secs = 0", "c:2: [ota] confirm_after_secs"),
            ("[ota]\nconfirm_timeout_secs = 10", "c:2: [ota] confirm_timeout_secs: expected more"),
            ("[ota]\nhealth_timeout_secs = 0", "c:2: [ota] health_timeout_secs"),
            ("[ota]\nhealth_commands = [\"  \"]", "c:2: [ota] health_commands"),
            ("[ota.policy]\nwindows = [\"2:00-4:00\"]", "c:2: [ota.policy] windows"),
            ("[ota.policy]\nwindows = [\"03:00-03:00\"]", "c:2: [ota.policy] windows"),
            ("[ota.policy]\nutc_offset = \"CET\"", "c:2: [ota.policy] utc_offset"),
            ("[ota.policy]\nsecurity_deadline_secs = 0", "c:2: [ota.policy] security_deadline"),
            ("[ota.policy]\nbogus = 1", "c:2: [ota] policy: unknown field `bogus`"),
        ];
        for (text, want) in bad {
            let e = Config::from_toml(text, Path::new("c")).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}: {e}");
        }
        let many = format!("[ota]\nhealth_commands = [{}]\n", vec!["\"/bin/true\""; 17].join(","));
        let e = Config::from_toml(&many, Path::new("c")).unwrap_err().to_string();
        assert!(e.contains("at most 16 commands"), "{e}");
        let ok = "[ota]\nconfirm_after_secs = 5\nhealth_commands = [\"/bin/check --quick\"]\n\
                  [ota.policy]\nwindows = [\"23:00-01:00\", \"12:00-12:30\"]\n\
                  utc_offset = \"-05:30\"\nmax_deferrals = 4\n";
        let cfg = Config::from_toml(ok, Path::new("c")).unwrap();
        assert_eq!(cfg.ota.policy.windows.len(), 2);
        assert_eq!(cfg.ota.health_commands, ["/bin/check --quick"]);
        let d = Config::default();
        assert_eq!((d.ota.confirm_after_secs, d.ota.confirm_timeout_secs), (10, 600));
        assert_eq!(d.ota.policy.security_deadline_secs, 86_400);
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
}
