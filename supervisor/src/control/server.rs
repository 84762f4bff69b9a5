//! The Unix socket listener: stale-socket handling, mode 0600, one
//! `ControlSession` per accepted connection, and a client limit.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use slog::{info, warn};
use tokio::net::UnixListener;

use super::{ControlSession, Peer, SessionEnv};

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
    clients: Arc<AtomicUsize>,
}

impl ServerHandle {
    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::SeqCst)
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Accept connections on `listener` until the runtime stops, one session
/// each, refusing clients past `max_clients`.
pub fn serve(
    listener: UnixListener,
    path: PathBuf,
    env: SessionEnv,
    max_clients: usize,
) -> ServerHandle {
    let clients = Arc::new(AtomicUsize::new(0));
    let count = clients.clone();
    let log = env.log.clone();
    info!(log, "control socket ready"; "path" => %path.display());
    actix::spawn(async move {
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
                warn!(log, "client not allowed; refusing"; "peer_uid" => peer.uid, "peer_gid" => peer.gid);
                continue;
            };
            if count.load(Ordering::SeqCst) >= max_clients {
                warn!(log, "too many clients; refusing"; "max_clients" => max_clients, "peer_uid" => peer.uid);
                continue;
            }
            count.fetch_add(1, Ordering::SeqCst);
            let (r, w) = stream.into_split();
            let guard = ClientGuard(count.clone());
            ControlSession::start(
                env.clone(),
                peer,
                role,
                tokio::io::BufReader::new(r),
                w,
                Some(guard),
            );
        }
    });
    ServerHandle { path, clients }
}

/// Counts a connected client until its session is dropped.
pub struct ClientGuard(Arc<AtomicUsize>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
