//! The Unix socket listener: stale-socket handling, mode 0600, one
//! `ControlSession` per accepted connection, and the connection limits:
//! `max_clients` in all, `max_clients_per_uid` per read-only uid, and the
//! last `admin_reserve` slots for admins only. A refused client is sent
//! one `busy` error line saying which limit it hit, then closed.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use slog::{info, warn};
use tokio::net::{UnixListener, UnixStream};

use super::limits::release;
use super::{ControlSession, Counts, Limits, Peer, Role, SessionEnv};

/// Each connection's read buffer. Requests are lines of a few hundred
/// bytes; tokio's default (8 KiB) was most of an idle client's cost
/// (issue 19, docs/footprint.md). A long line (a blob.set) just takes more
/// reads: the line itself is gathered by `LineReader` up to its limit.
const READ_BUF_BYTES: usize = 1024;

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another daemon answers on that path.
    #[error("{0}: another lwsysd is already serving this socket")]
    InUse(PathBuf),
    /// Something other than a socket is at that path.
    #[error("{0}: exists and is not a socket; refusing to replace it")]
    NotSocket(PathBuf),
    /// The filesystem refused.
    #[error("{path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BindError + '_ {
    move |source| BindError::Io { path: path.to_owned(), source }
}

/// Bind the control socket at `path` (mode 0600). A stale socket left by a
/// killed daemon is replaced; a live one is an error, as is any other kind
/// of file. Must be called inside a tokio runtime.
pub fn bind_socket(path: &Path) -> Result<UnixListener, BindError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(BindError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io(path))?;
        }
        Ok(_) => return Err(BindError::NotSocket(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path)(e)),
    }
    // Bind under a restrictive umask-equivalent: create, then chmod before
    // anyone can have connected (accept has not started yet).
    let listener = UnixListener::bind(path).map_err(io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    Ok(listener)
}

/// The running accept loop.
pub struct ServerHandle {
    path: PathBuf,
    counts: Arc<Counts>,
}

impl ServerHandle {
    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.counts.clients()
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Accept connections on `listener` until the runtime stops, one session
/// each, refusing clients past the limits in `env.limits`.
pub fn serve(listener: UnixListener, path: PathBuf, env: SessionEnv) -> ServerHandle {
    let counts = env.counts.clone();
    let log = env.log.clone();
    info!(log, "control socket ready"; "path" => %path.display());
    actix::spawn(async move {
        let mut refusals = RefusalLog::default();
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    warn!(log, "accept failed"; "error" => %e);
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let peer = match stream.peer_cred() {
                Ok(c) => Peer { uid: c.uid(), gid: c.gid(), pid: c.pid() },
                Err(e) => {
                    warn!(log, "cannot read peer credentials; refusing"; "error" => %e);
                    continue;
                }
            };
            let Some(role) = env.access.role(&peer) else {
                refusals.note(&log, "client not allowed", &peer);
                continue;
            };
            let guard = match ClientGuard::take(&env.counts, &env.limits, peer.uid, role) {
                Ok(g) => g,
                Err(why) => {
                    refusals.note(&log, &why, &peer);
                    refuse(&stream, &why);
                    continue;
                }
            };
            let (r, w) = stream.into_split();
            ControlSession::start(
                env.clone(),
                peer,
                role,
                tokio::io::BufReader::with_capacity(READ_BUF_BYTES, r),
                w,
                Some(guard),
            );
        }
    });
    ServerHandle { path, counts }
}

/// At most one warning a second about refused connections, so a client
/// that reconnects in a loop cannot flood the log; the rest are counted
/// and the count is logged with the next warning.
#[derive(Default)]
struct RefusalLog {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RefusalLog {
    fn note(&mut self, log: &slog::Logger, why: &str, peer: &Peer) {
        let now = std::time::Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1)) {
            self.suppressed += 1;
            return;
        }
        warn!(log, "connection refused"; "reason" => why, "peer_uid" => peer.uid,
              "peer_gid" => peer.gid, "suppressed_before" => self.suppressed);
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Tell a refused client why, if its socket takes the line at once (a
/// fresh socket's buffer always does), without ever waiting on it.
fn refuse(stream: &UnixStream, why: &str) {
    let reply = super::ProtoError::new(lwsys_messages::ErrorCode::Busy, why)
        .into_reply(serde_json::Value::Null);
    if let Ok(mut line) = serde_json::to_vec(&reply) {
        line.push(b'\n');
        let _ = stream.try_write(&line);
    }
}

/// Counts a connected client, in all and for its uid, until its
/// connection is closed (its writer ends).
pub struct ClientGuard {
    counts: Arc<Counts>,
    uid: u32,
}

impl ClientGuard {
    /// Count a client of `uid` acting as `role`, or say which limit is full.
    pub(crate) fn take(
        counts: &Arc<Counts>,
        limits: &Limits,
        uid: u32,
        role: Role,
    ) -> Result<Self, String> {
        // One lock for the check and both increments, so two clients
        // cannot both take the last slot.
        let mut per_uid = counts.clients_per_uid.lock().unwrap_or_else(PoisonError::into_inner);
        let all = counts.clients.load(Ordering::SeqCst);
        if all >= limits.max_clients {
            return Err(format!(
                "too many clients ({} connected, max_clients)",
                limits.max_clients
            ));
        }
        if role == Role::ReadOnly {
            let open = limits.max_clients.saturating_sub(limits.admin_reserve);
            if all >= open {
                return Err(format!(
                    "the last {} of {} client slots are reserved for admins",
                    limits.admin_reserve, limits.max_clients
                ));
            }
            let mine = per_uid.get(&uid).copied().unwrap_or(0);
            if mine >= limits.max_clients_per_uid {
                return Err(format!(
                    "uid {uid} has {} connections (max_clients_per_uid)",
                    limits.max_clients_per_uid
                ));
            }
        }
        *per_uid.entry(uid).or_insert(0) += 1;
        counts.clients.fetch_add(1, Ordering::SeqCst);
        Ok(Self { counts: counts.clone(), uid })
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        release(&self.counts.clients_per_uid, self.uid);
        self.counts.clients.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test that cannot take a slot should fail loudly

    use super::*;

    fn limits() -> Limits {
        Limits { max_clients: 6, max_clients_per_uid: 2, admin_reserve: 2, ..Limits::default() }
    }

    #[test]
    fn read_only_uids_are_held_to_their_own_limit_and_never_take_the_admin_reserve() {
        let counts = Arc::new(Counts::default());
        let l = limits();
        let a = ClientGuard::take(&counts, &l, 1000, Role::ReadOnly).unwrap();
        let _b = ClientGuard::take(&counts, &l, 1000, Role::ReadOnly).unwrap();
        let e = ClientGuard::take(&counts, &l, 1000, Role::ReadOnly).err().unwrap();
        assert_eq!(e, "uid 1000 has 2 connections (max_clients_per_uid)");
        let _c = ClientGuard::take(&counts, &l, 1001, Role::ReadOnly).unwrap();
        let _d = ClientGuard::take(&counts, &l, 1002, Role::ReadOnly).unwrap();
        // 4 of 6 taken: the last 2 are the admins'.
        let e = ClientGuard::take(&counts, &l, 1003, Role::ReadOnly).err().unwrap();
        assert_eq!(e, "the last 2 of 6 client slots are reserved for admins");
        let _r1 = ClientGuard::take(&counts, &l, 0, Role::Admin).unwrap();
        let _r2 = ClientGuard::take(&counts, &l, 0, Role::Admin).unwrap();
        let e = ClientGuard::take(&counts, &l, 0, Role::Admin).err().unwrap();
        assert_eq!(e, "too many clients (6 connected, max_clients)");
        // A closed connection gives its slot back, to its uid too.
        drop(a);
        assert_eq!(counts.clients(), 5);
        assert!(ClientGuard::take(&counts, &l, 0, Role::Admin).is_ok());
        let table = counts.clients_per_uid.lock().unwrap();
        assert_eq!(table.get(&1000), Some(&1));
    }

    #[test]
    fn attach_slots_per_uid_are_bounded_and_given_back() {
        let counts = Arc::new(Counts::default());
        let slots: Vec<_> = (0..3).map(|_| counts.take_attach(7, 3).unwrap()).collect();
        assert!(counts.take_attach(7, 3).is_none());
        assert!(counts.take_attach(8, 3).is_some());
        assert_eq!(counts.attaches(), 3);
        drop(slots);
        assert_eq!(counts.attaches(), 0);
        assert!(counts.attach_per_uid.lock().unwrap().is_empty(), "a uid at zero is forgotten");
    }
}
