//! What one client or uid may hold ([`Limits`], from `[control]`), and the
//! counts every session shares to enforce it ([`Counts`]): clients in all
//! and per uid, pending `attach` requests per uid, and the bytes queued for
//! each read-only uid's connections together.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Semaphore;

/// What one client or uid may hold (`[control]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes a client may have waiting to be written to it.
    pub queue_bytes: usize,
    /// Bytes all connections of one read-only uid may have waiting
    /// together (admins are not bounded per uid).
    pub uid_queue_bytes: usize,
    /// Socket clients connected at once.
    pub max_clients: usize,
    /// Connections one read-only uid may hold (admins are not limited
    /// per uid).
    pub max_clients_per_uid: usize,
    /// Slots of `max_clients` only admins may take.
    pub admin_reserve: usize,
    /// How long a connection holding nothing may stay silent (`None`:
    /// forever).
    pub idle_timeout: Option<Duration>,
    /// `attach` requests one connection may have pending.
    pub attach_per_client: usize,
    /// `attach` requests one uid may have pending, over all connections.
    pub attach_per_uid: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_config(&super::settings::ControlSettings::default(), 1 << 20)
    }
}

impl Limits {
    /// The limits of `[control]`, with blobs of at most `max_blob` bytes.
    pub fn from_config(c: &super::settings::ControlSettings, max_blob: usize) -> Self {
        Self {
            queue_bytes: c.queue_bytes(max_blob),
            uid_queue_bytes: c.uid_queue_bytes(max_blob),
            max_clients: c.max_clients,
            max_clients_per_uid: c.max_clients_per_uid,
            admin_reserve: c.admin_reserve,
            idle_timeout: (c.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(c.idle_timeout_secs)),
            attach_per_client: c.attach_per_client,
            attach_per_uid: c.attach_per_uid,
        }
    }
}

/// Counts every session shares: socket clients, in all and per uid, and
/// pending `attach` requests per uid. Private to the control module;
/// entries are removed when they fall to zero, so the tables hold only
/// uids that hold something.
#[derive(Debug, Default)]
pub struct Counts {
    pub(super) clients: AtomicUsize,
    pub(super) clients_per_uid: Mutex<HashMap<u32, usize>>,
    pub(super) attach_per_uid: Mutex<HashMap<u32, usize>>,
    /// What each read-only uid's connections share (an entry dies with
    /// the uid's last connection).
    shares: Mutex<HashMap<u32, Weak<UidShare>>>,
}

impl Counts {
    /// Socket clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::SeqCst)
    }

    /// `attach` requests pending now, over all uids.
    pub fn attaches(&self) -> usize {
        self.attach_per_uid.lock().unwrap_or_else(PoisonError::into_inner).values().sum()
    }

    /// What `uid`'s connections share, made on its first connection.
    pub(super) fn uid_share(&self, uid: u32) -> Arc<UidShare> {
        let mut t = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(q) = t.get(&uid).and_then(Weak::upgrade) {
            return q;
        }
        t.retain(|_, q| q.strong_count() > 0);
        let q = Arc::new(UidShare {
            queued: AtomicUsize::new(0),
            large: Arc::new(Semaphore::new(super::MAX_LARGE_IN_FLIGHT)),
        });
        t.insert(uid, Arc::downgrade(&q));
        q
    }

    /// Take one of `uid`'s `limit` attach slots, if one is free.
    pub(super) fn take_attach(self: &Arc<Self>, uid: u32, limit: usize) -> Option<AttachSlot> {
        let mut t = self.attach_per_uid.lock().unwrap_or_else(PoisonError::into_inner);
        let n = t.entry(uid).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(AttachSlot { counts: self.clone(), uid })
    }
}

/// What all connections of one read-only uid share, so that opening more
/// connections does not multiply what the uid can make the daemon hold.
#[derive(Debug)]
pub struct UidShare {
    /// Bytes queued for its clients and not yet written.
    pub(super) queued: AtomicUsize,
    /// Permits for large replies being made (as a client's own gate).
    pub(super) large: Arc<Semaphore>,
}

/// Decrement `uid`'s entry in `table`, removing it at zero.
pub(super) fn release(table: &Mutex<HashMap<u32, usize>>, uid: u32) {
    let mut t = table.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(n) = t.get_mut(&uid) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            t.remove(&uid);
        }
    }
}

/// One pending `attach` of a uid, counted until dropped (when the attach
/// is answered or its session stops).
pub(super) struct AttachSlot {
    counts: Arc<Counts>,
    uid: u32,
}

impl Drop for AttachSlot {
    fn drop(&mut self) {
        release(&self.counts.attach_per_uid, self.uid);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Counts;

    #[test]
    fn a_uids_connections_share_one_budget_and_it_goes_with_the_last() {
        let counts = Counts::default();
        let a = counts.uid_share(1000);
        let b = counts.uid_share(1000);
        assert!(Arc::ptr_eq(&a, &b), "two connections of one uid share one budget");
        assert!(!Arc::ptr_eq(&a, &counts.uid_share(1001)), "another uid has its own");
        drop((a, b));
        // The next uid to connect sweeps the dead entries.
        let _c = counts.uid_share(1002);
        let uids: Vec<u32> = counts.shares.lock().unwrap().keys().copied().collect();
        assert_eq!(uids, [1002]);
    }
}
