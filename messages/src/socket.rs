//! Where the control socket is: the rules both ends read, so `lwsysctl`
//! finds the socket `lwsysd` made without linking the daemon.
//!
//! Pure functions of an environment lookup (`env`, so tests need not touch
//! the process environment) and, for the client's fallback, an `exists`
//! check; nothing here does I/O of its own.

use std::path::{Path, PathBuf};

/// The socket's file name in whichever directory holds it.
pub const SOCKET_NAME: &str = "lwsys.sock";

/// Where the packaged unit (`packaging/lwsysd.service`,
/// `RuntimeDirectory=lwsys`) puts the socket; `lwsysctl` falls back to it.
pub const PACKAGED_SOCKET: &str = "/run/lwsys/lwsys.sock";

/// The first directory of a systemd directory variable (`$STATE_DIRECTORY`,
/// `$RUNTIME_DIRECTORY` list several separated by `:` when the unit names
/// several), if it is set and not empty.
pub fn first_dir(env: &impl Fn(&str) -> Option<String>, var: &str) -> Option<PathBuf> {
    let v = env(var)?;
    let first = v.split(':').next().unwrap_or_default();
    (!first.is_empty()).then(|| PathBuf::from(first))
}

/// The daemon's state directory when no `--state-dir` is given:
/// `$STATE_DIRECTORY` (systemd; the first of a colon-separated list), else
/// `$XDG_STATE_HOME/lwsys`, else `./lwsys-state`.
pub fn default_state_dir(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(d) = first_dir(&env, "STATE_DIRECTORY") {
        return d;
    }
    if let Some(d) = env("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return Path::new(&d).join("lwsys");
    }
    PathBuf::from("lwsys-state")
}

/// The socket `lwsysctl` uses when neither `--socket` nor `$LWSYS_SOCKET`
/// names one: the daemon's own default in this environment
/// (`$RUNTIME_DIRECTORY/lwsys.sock`, else `<state-dir>/lwsys.sock` with
/// the state dir found as [`default_state_dir`] finds it); when that socket
/// does not exist but the packaged daemon's [`PACKAGED_SOCKET`] does, that
/// one, so `lwsysctl` reaches a daemon started by the shipped unit from a
/// plain shell.
pub fn client_socket(
    env: impl Fn(&str) -> Option<String>,
    exists: impl Fn(&Path) -> bool,
) -> PathBuf {
    if let Some(d) = first_dir(&env, "RUNTIME_DIRECTORY") {
        return d.join(SOCKET_NAME);
    }
    let own = default_state_dir(&env).join(SOCKET_NAME);
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
    fn the_state_dir_follows_the_documented_order() {
        assert_eq!(default_state_dir(|_| None), PathBuf::from("lwsys-state"));
        let xdg = |k: &str| (k == "XDG_STATE_HOME").then(|| "/x".to_owned());
        assert_eq!(default_state_dir(xdg), PathBuf::from("/x/lwsys"));
        let sd = |k: &str| Some(if k == "STATE_DIRECTORY" { "/s:/t" } else { "/x" }.to_owned());
        assert_eq!(default_state_dir(sd), PathBuf::from("/s"));
        // Set but empty counts as unset.
        assert_eq!(default_state_dir(|_| Some(String::new())), PathBuf::from("lwsys-state"));
    }

    #[test]
    fn the_client_finds_the_socket_the_daemon_would_use() {
        let rt = |k: &str| (k == "RUNTIME_DIRECTORY").then(|| "/run/a:/run/b".to_owned());
        assert_eq!(client_socket(rt, |_| false), PathBuf::from("/run/a/lwsys.sock"));
        let sd = |k: &str| (k == "STATE_DIRECTORY").then(|| "/s".to_owned());
        assert_eq!(client_socket(sd, |_| false), PathBuf::from("/s/lwsys.sock"));
        // Only the packaged daemon's socket exists: use it.
        let packaged = |p: &Path| p == Path::new(PACKAGED_SOCKET);
        assert_eq!(client_socket(sd, packaged), PathBuf::from(PACKAGED_SOCKET));
        // Both exist: the local one, as without the packaged daemon.
        assert_eq!(client_socket(sd, |_| true), PathBuf::from("/s/lwsys.sock"));
        // A runtime directory wins even over an existing packaged socket.
        assert_eq!(client_socket(rt, |_| true), PathBuf::from("/run/a/lwsys.sock"));
    }
}
