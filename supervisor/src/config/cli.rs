//! The `lwsysd` command line (clap), and where the state directory and
//! the control socket go when no flag says.

use std::path::{Path, PathBuf};

use clap::Parser;
use lwsys_messages::state::SystemState;

use crate::logging::LogFormat;

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
    /// If the durable store (the directory `<state-dir>/store`) holds a
    /// truncated, corrupt or unreadable record, move the directory aside
    /// to `store.broken-<unix time>` and start with an empty store, logging
    /// what was lost. Without
    /// this flag such a store stops the daemon (exit 70) and is left as is.
    #[arg(long)]
    pub recover_store: bool,
    /// Print this man page (roff) on stdout and exit: `lwsysd --man | man -l -`.
    #[arg(long)]
    pub man: bool,
}

/// The state directory: `--state-dir`, else `$STATE_DIRECTORY` (systemd;
/// the first of a colon-separated list), else `$XDG_STATE_HOME/lwsys`, else
/// `./lwsys-state`. Takes the environment as a function so tests need not
/// touch the process environment.
pub fn state_dir(cli: &Cli, env: impl Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(d) = &cli.state_dir {
        return d.clone();
    }
    lwsys_messages::socket::default_state_dir(env)
}

/// The daemon's control socket: `--socket`, else
/// `$RUNTIME_DIRECTORY/lwsys.sock` (systemd's `RuntimeDirectory=`; the
/// first of a colon-separated list), else `<state_dir>/lwsys.sock`.
pub fn socket_path(cli: &Cli, state_dir: &Path, env: impl Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(s) = &cli.socket {
        return s.clone();
    }
    match lwsys_messages::socket::first_dir(&env, "RUNTIME_DIRECTORY") {
        Some(d) => d.join(lwsys_messages::socket::SOCKET_NAME),
        None => state_dir.join(lwsys_messages::socket::SOCKET_NAME),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
