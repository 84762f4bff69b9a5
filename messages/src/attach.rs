//! The foreign-thread attach service's data (owned by `AttachService`): its
//! error, its statistics for `system.info`, and the messages the supervisor
//! sends it.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

/// Why an attach or a flush did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// The pending items (queued and waiting for their state together)
    /// reached the configured bound; the item was not queued.
    #[error("attach queue full: {bound} items already pending")]
    Full {
        /// The configured bound.
        bound: usize,
    },
    /// The attach service has stopped (the system is going down); the item
    /// was not queued, or a flush waiting for earlier items was released.
    #[error("attach service is shut down")]
    Shutdown,
    /// `flush` ran out of time before every earlier item of this thread had
    /// run or been cancelled.
    #[error("flush timed out with {outstanding} items of this thread still pending")]
    FlushTimeout {
        /// How many of this thread's items had not finished at the time out.
        outstanding: u64,
    },
    /// `flush` was called on the event loop thread itself, where blocking
    /// would stop the very loop it waits for.
    #[error("flush called on the attach event loop thread; it would deadlock")]
    OnLoop,
}

impl AttachError {
    /// The control protocol error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Full { .. } => ErrorCode::Busy,
            Self::FlushTimeout { .. } => ErrorCode::Timeout,
            Self::Shutdown | Self::OnLoop => ErrorCode::Internal,
        }
    }
}

/// Asks `AttachService` for its counters (sent by the supervisor for
/// `system.info`); the reply is an [`AttachStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "AttachStats"))]
pub struct GetAttachStats;

/// The attach service's counters since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AttachStats {
    /// Callbacks called, panicked ones included.
    pub run: u64,
    /// Items cancelled through their ticket before they ran.
    pub cancelled: u64,
    /// Callbacks that panicked (caught; the loop went on).
    pub panicked: u64,
    /// Attaches refused because the bound was reached.
    pub rejected: u64,
    /// Items accepted and not yet run or cancelled (queued plus waiting).
    pub pending: u64,
    /// Of those, items received by the loop and waiting for a later state.
    pub waiting: u64,
}

/// How `AttachService` reaches the value callbacks see through
/// `AttachCtx::system`: called once per batch of callbacks, it answers the
/// value, or `None` once it is gone.
#[cfg(feature = "actor")]
pub type SystemRef = std::sync::Arc<
    dyn Fn() -> Option<std::sync::Arc<dyn std::any::Any + Send + Sync>> + Send + Sync,
>;

/// Sent once by the `Builder`, as it starts the system, to `AttachService`:
/// how callbacks reach the value `AttachCtx::system` gives them (in lwsys,
/// the `SystemHandle`). The value is typed `Any` so that `lwsys-actors`
/// need not depend on the crate that defines the handle. The service keeps
/// only the [`SystemRef`], never the value between batches: the handle owns
/// the service, so the service holding the handle would keep the whole
/// system alive for ever. No reply.
#[cfg(feature = "actor")]
#[derive(Clone, actix::Message)]
#[rtype(result = "()")]
pub struct SetSystem(pub SystemRef);

#[cfg(feature = "actor")]
impl SetSystem {
    /// A value held for as long as the service runs (for values that do
    /// not own the service; a handle that does must be given weakly).
    pub fn fixed(value: std::sync::Arc<dyn std::any::Any + Send + Sync>) -> Self {
        Self(std::sync::Arc::new(move || Some(value.clone())))
    }
}

#[cfg(feature = "actor")]
impl std::fmt::Debug for SetSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetSystem(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_protocol_codes() {
        assert_eq!(AttachError::Full { bound: 1 }.code(), ErrorCode::Busy);
        assert_eq!(AttachError::FlushTimeout { outstanding: 3 }.code(), ErrorCode::Timeout);
        assert_eq!(AttachError::Shutdown.code(), ErrorCode::Internal);
        assert_eq!(AttachError::OnLoop.code(), ErrorCode::Internal);
        assert!(AttachError::Full { bound: 65536 }.to_string().contains("65536"));
    }

    #[test]
    fn stats_serialize_with_field_names() {
        let s = AttachStats { run: 5, pending: 2, ..Default::default() };
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json["run"], 5);
        assert_eq!(json["pending"], 2);
        assert_eq!(json["panicked"], 0);
    }
}
