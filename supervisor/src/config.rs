//! Configuration: the `lwsysd` command line (clap) and the TOML config file
//! (serde), every key with a documented default; flags override the file.
//! `docs/config.md` lists every key. The command line is in `cli`, the
//! file's sections in `sections`, range checks in `validate`, reading and
//! its located errors in `error` (positions from the parser's spans,
//! `locate`), and the mapping to each component's settings in `settings`.

mod cli;
mod error;
mod locate;
mod sections;
mod settings;
mod validate;

use std::path::{Path, PathBuf};

pub use cli::{socket_path, state_dir, Cli};
pub use error::ConfigError;
pub use sections::{
    BlobsSection, Config, ConfirmMode, LogSection, OtaSection, SupervisorSection, SystemSection,
    TimeSection, TimeSourceName, TrustSection,
};
pub use validate::RangeError;

/// `[control]`: the control server's own settings type.
pub use crate::control::settings::ControlSettings as ControlSection;
/// `[log] format`: logging's own type.
pub use crate::logging::LogFormat;

/// The socket's file name in whichever directory holds it.
pub const SOCKET_NAME: &str = "lwsys.sock";

/// Where the packaged unit (`packaging/lwsysd.service`,
/// `RuntimeDirectory=lwsys`) puts the socket; `lwsysctl` falls back to it.
pub const PACKAGED_SOCKET: &str = "/run/lwsys/lwsys.sock";

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
    if let Some(d) = cli::first_dir(&env, "RUNTIME_DIRECTORY") {
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
}
