//! Reading a config file: TOML parsing, and errors that name the file,
//! the line and the `[section] key`, placed by the parser's spans (see
//! `locate`).

use std::path::{Path, PathBuf};

use super::locate::{place_of_syntax_error, Layout};
use super::Config;

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

impl Config {
    /// Parse TOML text; `path` names the file in errors, which carry the
    /// line and the `[section] key` too.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
        cfg.validate().map_err(|r| ConfigError::InFile {
            path: path.to_owned(),
            line: Layout::parse(text).and_then(|l| l.line_of_key(r.section, r.key)),
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

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// A toml/serde error as `file:line: [section] key: message`, placed by
/// the error's span and the spans of the file's keys.
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
    let line = Layout::line_of(text, start);
    let place = match Layout::parse(text) {
        Some(layout) => layout.at(start),
        None => place_of_syntax_error(text, start),
    };
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    let key = match (place.top, place.key, unknown) {
        // An unknown section: toml points at its header.
        (Some(t), None, Some(u)) if place.top_is_section && t == u => {
            message = message.replacen("unknown field", "unknown section", 1);
            format!("[{t}]")
        }
        (Some(t), Some(k), _) => format!("[{t}] {k}"),
        (Some(t), None, Some(u)) if place.top_is_section => format!("[{t}] {u}"),
        (Some(t), None, _) if !place.top_is_section => t,
        (Some(t), None, _) => format!("[{t}]"),
        (None, _, Some(u)) => u,
        (None, _, None) => String::new(),
    };
    ConfigError::InFile { path: path.to_owned(), line: Some(line), key, message }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use lwsys_messages::state::SystemState;
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
    fn printed_config_parses_back_to_itself() {
        let cfg = Config::default();
        assert_eq!(Config::from_toml(&cfg.to_toml(), Path::new("p")).unwrap(), cfg);
    }
}
