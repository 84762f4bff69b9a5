//! The JSON control protocol's wire types (DESIGN §5): the op table and
//! typed [`Request`]s, their decoding, the replies, the [`Event`]s and the
//! error codes. Both ends use them: the daemon decodes and answers, the
//! client builds requests and reads replies.
//!
//! - `ops`: the one table of ops ([`Op`], [`OP_TABLE`], [`Request`]).
//! - `params`: checking a request's parameters ([`RequestError`]).
//! - `decode`: one line to an [`Envelope`] or a [`Rejected`].
//! - `reply`: the success replies, one type per op.
//! - `event`: the events a connection is sent unasked.

use serde::{Deserialize, Serialize};

mod decode;
mod event;
mod ops;
mod params;
mod reply;
#[cfg(test)]
mod tests;

pub use crate::error::ErrorCode;
pub use decode::{decode_request, Envelope, Rejected};
#[cfg(feature = "actor")]
pub use event::Subscribe;
pub use event::{Event, OtaProgress, ServiceEvent, SystemEvent};
pub use ops::{Access, Op, OpInfo, Request, OPS, OP_TABLE};
pub use params::{BlobData, RequestError};
pub use reply::{
    BlobRead, BlobSized, ClientCounts, Crashed, Done, Hello, Rebooting, Registered, Resumed,
    Subscribed, SystemInfo, WaitReply,
};

/// Protocol version spoken by this build, reported by `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest line accepted, in bytes, newline excluded.
pub const MAX_LINE: usize = 1024 * 1024;

/// The event topics a client may subscribe to, by wire name.
pub const TOPICS: &[&str] = &["state", "notifier", "clock", "ota", "service"];

/// An event topic a client may subscribe to (`subscribe {events}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topic {
    /// State changes.
    State,
    /// The notifier registry.
    Notifier,
    /// Clock syncs and failures.
    Clock,
    /// OTA progress.
    Ota,
    /// Service restarts.
    Service,
}

impl Topic {
    /// Every topic, in the order of [`TOPICS`].
    pub const ALL: [Topic; 5] =
        [Self::State, Self::Notifier, Self::Clock, Self::Ota, Self::Service];

    /// The wire name, such as `"state"`.
    pub const fn as_str(self) -> &'static str {
        TOPICS[self as usize]
    }

    /// The topic named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// The `error` member of an error reply (and of a `reboot_failed` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}
