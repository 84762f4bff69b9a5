//! Who may use the control socket, and for what. The daemon reads each
//! client's credentials (SO_PEERCRED) on accept: admins (the daemon's own
//! uid, root, and the configured admin uids/gids) may do everything;
//! read-only clients (configured uids/gids) may only look; anyone else is
//! refused at connect. Secret blobs are readable by admins only.

use lwsys_messages::protocol::Op;

use super::settings::ControlSettings as ControlSection;

use super::Peer;

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything, including secrets and every change.
    Admin,
    /// Ops that change nothing and reveal no secret.
    ReadOnly,
}

/// The configured access rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    daemon_uid: u32,
    admin_uids: Vec<u32>,
    admin_gids: Vec<u32>,
    readonly_uids: Vec<u32>,
    readonly_gids: Vec<u32>,
}

impl AccessPolicy {
    /// Only the daemon's own uid and root, as admins.
    pub fn owner_only(daemon_uid: u32) -> Self {
        Self {
            daemon_uid,
            admin_uids: Vec::new(),
            admin_gids: Vec::new(),
            readonly_uids: Vec::new(),
            readonly_gids: Vec::new(),
        }
    }

    /// The rules of `[control]`, for a daemon running as `daemon_uid`.
    pub fn from_config(daemon_uid: u32, cfg: &ControlSection) -> Self {
        Self {
            daemon_uid,
            admin_uids: cfg.admin_uids.clone(),
            admin_gids: cfg.admin_gids.clone(),
            readonly_uids: cfg.readonly_uids.clone(),
            readonly_gids: cfg.readonly_gids.clone(),
        }
    }

    /// The role of `peer`, or `None` when it may not connect.
    pub fn role(&self, peer: &Peer) -> Option<Role> {
        if peer.uid == self.daemon_uid
            || peer.uid == 0
            || self.admin_uids.contains(&peer.uid)
            || self.admin_gids.contains(&peer.gid)
        {
            Some(Role::Admin)
        } else if self.readonly_uids.contains(&peer.uid) || self.readonly_gids.contains(&peer.gid) {
            Some(Role::ReadOnly)
        } else {
            None
        }
    }
}

/// Whether `op` changes something (and so needs an admin), as the
/// protocol's op table says. `blob.get` of a secret kind is checked where
/// it is served.
pub fn needs_admin(op: Op) -> bool {
    op.needs_admin()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer { uid, gid, pid: None }
    }

    #[test]
    fn the_daemon_uid_and_root_are_admins_and_strangers_are_refused() {
        let p = AccessPolicy::owner_only(1000);
        assert_eq!(p.role(&peer(1000, 1000)), Some(Role::Admin));
        assert_eq!(p.role(&peer(0, 0)), Some(Role::Admin));
        assert_eq!(p.role(&peer(1001, 1001)), None);
    }

    #[test]
    fn configured_uids_and_gids_get_their_roles() {
        let cfg = ControlSection {
            admin_uids: vec![2000],
            admin_gids: vec![50],
            readonly_uids: vec![3000],
            readonly_gids: vec![60],
            ..ControlSection::default()
        };
        let p = AccessPolicy::from_config(1000, &cfg);
        assert_eq!(p.role(&peer(2000, 1)), Some(Role::Admin));
        assert_eq!(p.role(&peer(7, 50)), Some(Role::Admin));
        assert_eq!(p.role(&peer(3000, 1)), Some(Role::ReadOnly));
        assert_eq!(p.role(&peer(8, 60)), Some(Role::ReadOnly));
        assert_eq!(p.role(&peer(9, 61)), None);
    }

    #[test]
    fn every_mutating_op_needs_an_admin_and_reads_do_not() {
        for info in lwsys_messages::protocol::OP_TABLE.iter().filter(|o| !o.hidden) {
            let op = &info.name;
            let reads = [
                "hello",
                "state.get",
                "state.wait",
                "state.explain",
                "subscribe",
                "system.info",
                "blob.get",
                "blob.size",
                "clock.get",
                "trust.query",
                "ota.status",
                "attach",
            ];
            assert_eq!(needs_admin(info.op), !reads.contains(op), "{op}");
        }
    }
}
