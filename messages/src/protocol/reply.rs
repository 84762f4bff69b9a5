//! The success replies of the control protocol, one type per op. On the
//! wire each is the members of the reply object after `"id"` and `"ok":
//! true`, in field order. Ops whose answer is already a serializable type
//! reply with it: walks with [`WalkReport`](crate::supervisor::WalkReport),
//! `state.get` with [`StateReading`](crate::state::StateReading),
//! `state.explain` with [`Explanation`](crate::supervisor::Explanation),
//! `clock.*` with [`ClockReading`](crate::clock::ClockReading),
//! `trust.query` with [`TrustedCerts`](crate::trust::TrustedCerts),
//! `ota.status`/`ota.report_current` with
//! [`OtaStatus`](crate::ota::OtaStatus) and `ota.check` with
//! [`CheckOutcome`](crate::ota::CheckOutcome).

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::Topic;
use crate::attach::AttachStats;
use crate::state::SystemState;
use crate::supervisor::NotifierInfo;
use crate::trust::TrustInfo;

/// `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The daemon's version.
    pub version: String,
    /// The protocol version it speaks.
    pub protocol: u32,
    /// The current state.
    pub state: SystemState,
}

/// `state.wait`: the state reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitReply {
    /// The current state, at or past the one waited for.
    pub state: SystemState,
}

/// `notifier.register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The name registered.
    pub name: String,
    /// Its registry id.
    pub notifier_id: u64,
}

/// `notifier.resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
    /// Whether a walk this notifier held was waiting.
    pub resumed: bool,
}

/// A reply with nothing to say beyond `ok` (`notifier.unregister`,
/// `consent.reply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Done {}

/// `subscribe`: every topic the connection is now subscribed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// The topics, by name in alphabetical order.
    pub events: Vec<Topic>,
}

/// `blob.set`, `append`, `empty`, `size` and `destroy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobSized {
    /// The blob's size afterwards, in bytes.
    pub size: usize,
}

/// `blob.get`: the bytes read as `data_b64`, also as `data` when they are
/// UTF-8, and the whole blob's `size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRead {
    /// The bytes read, standard base64.
    pub data_b64: String,
    /// The size of the whole blob.
    pub size: usize,
    /// The bytes read, when they are UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl BlobRead {
    /// The reply for `data` read from a blob of `size` bytes.
    pub fn new(data: &[u8], size: usize) -> Self {
        Self {
            data_b64: base64::engine::general_purpose::STANDARD.encode(data),
            size,
            data: std::str::from_utf8(data).ok().map(str::to_owned),
        }
    }

    /// The bytes read.
    pub fn bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.data_b64)
    }
}

/// `system.reboot`: answered before anything goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebooting {
    /// Always true.
    pub rebooting: bool,
}

/// `debug.crash`, if the service somehow survived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crashed {
    /// Always false: a crashed service answers `internal` instead.
    pub crashed: bool,
}

/// `system.info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// The attach service's counters.
    pub attach: AttachStats,
    /// The daemon's version.
    pub version: String,
    /// The protocol version it speaks.
    pub protocol: u32,
    /// The current state.
    pub state: SystemState,
    /// The daemon's process id.
    pub pid: u32,
    /// The notifiers in consent order.
    pub notifiers: Vec<NotifierInfo>,
    /// The trust store, or null when the system runs no services.
    pub trust: Option<TrustInfo>,
    /// The platform ops provided.
    pub ops: Vec<String>,
    /// The configured wake latency, in microseconds.
    pub wake_latency_us: u64,
    /// Seconds since the system started.
    pub uptime_s: u64,
    /// `state.wait` requests waiting.
    pub waiters: usize,
    /// Connection figures.
    pub clients: ClientCounts,
}

/// The `clients` member of [`SystemInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCounts {
    /// Connections open.
    pub connected: usize,
    /// `attach` requests queued across connections.
    pub attach_pending: usize,
    /// Event subscribers kept.
    pub subscribers: usize,
}
