//! The control server's settings (the `[control]` section): client and
//! per-uid bounds, timeouts and who may do what.

use serde::{Deserialize, Serialize};

/// The control server's settings: the `[control]` section of the config
/// file, as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSettings {
    /// Bytes a client may have waiting to be written to it before it is
    /// disconnected as too slow. Default 8 MiB; raised at run time to fit
    /// one largest reply (see [`ControlSettings::queue_bytes`]).
    pub client_queue_bytes: usize,
    /// Bytes all connections of one read-only uid may have waiting to be
    /// written together; past it the connection that would go over is
    /// disconnected. Default 16 MiB; raised at run time to at least the
    /// per-client bound (see [`ControlSettings::uid_queue_bytes`]).
    pub uid_queue_bytes: usize,
    /// Most clients connected at once; more are refused. Default 1024.
    pub max_clients: usize,
    /// Most connections one read-only uid may hold at once. Default 16.
    pub max_clients_per_uid: usize,
    /// Slots of `max_clients` that read-only clients may never take, so an
    /// admin can always connect. Default 8.
    pub admin_reserve: usize,
    /// Seconds a connection that holds nothing may stay silent before it
    /// is closed; 0 never. Default 300.
    pub idle_timeout_secs: u64,
    /// Most `attach` requests one connection may have pending. Default 64.
    pub attach_per_client: usize,
    /// Most `attach` requests all connections of one uid may have pending.
    /// Default 256.
    pub attach_per_uid: usize,
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

/// Room for a reply's JSON around its payload.
const REPLY_OVERHEAD: usize = 4096;

impl ControlSettings {
    /// The outgoing queue bound actually used: `client_queue_bytes`, but at
    /// least one `blob.get` of a `max_blob`-byte blob, so a client that
    /// reads can always be answered. That reply carries the bytes twice:
    /// base64 (4 per 3) and, when they are UTF-8, as a JSON string, where
    /// a control character takes 6 (`\u0001`); plus 4 KiB for the rest of the reply.
    pub fn queue_bytes(&self, max_blob: usize) -> usize {
        let b64 = max_blob.div_ceil(3).saturating_mul(4);
        let largest = b64.saturating_add(max_blob.saturating_mul(6)).saturating_add(REPLY_OVERHEAD);
        self.client_queue_bytes.max(largest)
    }

    /// The bound on a read-only uid's connections' queued bytes together:
    /// `uid_queue_bytes`, but at least one client's [`Self::queue_bytes`].
    pub fn uid_queue_bytes(&self, max_blob: usize) -> usize {
        self.uid_queue_bytes.max(self.queue_bytes(max_blob))
    }
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            client_queue_bytes: 8 << 20,
            uid_queue_bytes: 16 << 20,
            max_clients: 1024,
            max_clients_per_uid: 16,
            admin_reserve: 8,
            idle_timeout_secs: 300,
            attach_per_client: 64,
            attach_per_uid: 256,
            admin_uids: Vec::new(),
            admin_gids: Vec::new(),
            readonly_uids: Vec::new(),
            readonly_gids: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn the_queue_bound_is_raised_to_one_largest_blob_reply() {
        let c = ControlSettings::default();
        // The figure docs/config.md quotes for the default max_bytes.
        let floor = ControlSettings { client_queue_bytes: 1, ..c.clone() };
        assert_eq!(floor.queue_bytes(1 << 20), 7_693_656);
        assert_eq!(c.queue_bytes(1 << 20), 8 << 20);
        // 256 MiB blobs need more than the default 8 MiB.
        // 4 * ceil(2^28 / 3) + 6 * 2^28 + 4096.
        assert_eq!(c.queue_bytes(256 << 20), 357_913_944 + 1_610_612_736 + 4096);
    }
}
