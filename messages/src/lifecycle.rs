//! Messages of service supervision: a supervised service tells its
//! supervisor when it stops, a system being torn down stops its actors, and
//! tests can make one fail on purpose.

use crate::supervisor::ServiceKind;

/// Sent to the `Supervisor` when a supervised service's actor is gone
/// (stopped, or killed by a panic in a handler). No reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "()"))]
pub struct ServiceDied {
    /// Which service.
    pub service: ServiceKind,
}

/// Sent by the `Supervisor` to a service: tell this recipient when you are
/// gone. No reply.
#[cfg(feature = "actor")]
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct WatchDeath(pub actix::Recipient<ServiceDied>);

#[cfg(feature = "actor")]
impl std::fmt::Debug for WatchDeath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchDeath(..)")
    }
}

/// Sent to each actor of a system when the system is torn down (its last
/// `SystemHandle` dropped, or shut down): stop now, without reporting a
/// death, since this is an orderly end and nothing must restart it. Queued
/// messages after it are not handled. No reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "()"))]
pub struct Stop;

/// The fault hook: the service panics in its handler, as a bug would. Sent
/// only by the daemon's `debug.crash` op, which exists only when the
/// daemon runs with `LWSYS_FAULT_INJECTION=1`. The reply never comes (the
/// service dies), which is itself what tests check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "()"))]
pub struct Crash;
