//! The daemon's file-descriptor budget. Every client holds a descriptor,
//! so with the common soft limit of 1024 and `max_clients = 1024` a client
//! flood would exhaust them before the client limit was reached: accept
//! would fail for everyone, root included, and so would opening the store
//! or an OTA download. At start the soft limit is raised to the hard one
//! (lwsysd uses epoll, never select, so a high limit costs nothing), and
//! the client limit is cut to what then fits beside the daemon's own
//! descriptors.

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use slog::{info, warn, Logger};

/// Descriptors kept for the daemon's own use (store, state files, OTA
/// downloads and slots, signal and timer descriptors, the log).
pub const OWN_FDS: u64 = 64;

/// Raise the soft `RLIMIT_NOFILE` to the hard limit, and return
/// `max_clients`, cut (with a warning) to what fits in the soft limit
/// beside [`OWN_FDS`].
pub fn fit_clients(log: &Logger, max_clients: usize) -> usize {
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                info!(log, "raised the open-file limit"; "from" => soft, "to" => hard);
                hard
            }
            Err(e) => {
                warn!(log, "cannot raise the open-file limit"; "limit" => soft, "error" => %e);
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            warn!(log, "cannot read the open-file limit"; "error" => %e);
            return max_clients;
        }
    };
    let fit = clients_that_fit(soft, max_clients);
    if fit < max_clients {
        warn!(log, "control.max_clients cut to fit the open-file limit";
              "max_clients" => max_clients, "now" => fit, "nofile" => soft, "own_fds" => OWN_FDS);
    }
    fit
}

/// How many of `max_clients` fit in `nofile` descriptors beside the
/// daemon's own (at least one, so an admin can still get in).
fn clients_that_fit(nofile: u64, max_clients: usize) -> usize {
    let room = usize::try_from(nofile.saturating_sub(OWN_FDS)).unwrap_or(usize::MAX);
    max_clients.min(room).max(1)
}

#[cfg(test)]
mod tests {
    use super::clients_that_fit;

    #[test]
    fn the_client_limit_leaves_room_for_the_daemons_own_descriptors() {
        assert_eq!(clients_that_fit(1024, 1024), 960);
        assert_eq!(clients_that_fit(524_288, 1024), 1024);
        assert_eq!(clients_that_fit(10, 1024), 1);
        assert_eq!(clients_that_fit(u64::MAX, 7), 7);
    }
}
