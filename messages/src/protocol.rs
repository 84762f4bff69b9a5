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

use std::fmt;

use serde::{Deserialize, Serialize};

mod decode;
mod event;
mod ops;
mod params;
mod reply;
#[cfg(test)]
mod tests;

pub use decode::{decode_request, Envelope, Rejected};
pub use event::{Event, OtaProgress, ServiceEvent};
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

/// The error codes of the control protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not JSON (or not UTF-8).
    ParseError,
    /// The request is JSON but not a valid request: not an object, a
    /// missing or mistyped field, a bad value.
    BadRequest,
    /// No such op.
    UnknownOp,
    /// The thing named does not exist.
    NotFound,
    /// An index or offset past the end.
    OutOfRange,
    /// Over a size limit.
    TooLarge,
    /// A notifier refused the transition.
    Denied,
    /// A notifier deferred the transition.
    Deferred,
    /// A deadline passed.
    Timeout,
    /// The client may not do this.
    Forbidden,
    /// The service is busy; try again.
    Busy,
    /// A file or network operation failed.
    Io,
    /// A bug or a dead service inside the daemon.
    Internal,
}

impl ErrorCode {
    /// Every code, for documentation checks.
    pub const ALL: [ErrorCode; 13] = [
        Self::ParseError,
        Self::BadRequest,
        Self::UnknownOp,
        Self::NotFound,
        Self::OutOfRange,
        Self::TooLarge,
        Self::Denied,
        Self::Deferred,
        Self::Timeout,
        Self::Forbidden,
        Self::Busy,
        Self::Io,
        Self::Internal,
    ];

    /// The wire name, such as `"bad_request"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ParseError => "parse_error",
            Self::BadRequest => "bad_request",
            Self::UnknownOp => "unknown_op",
            Self::NotFound => "not_found",
            Self::OutOfRange => "out_of_range",
            Self::TooLarge => "too_large",
            Self::Denied => "denied",
            Self::Deferred => "deferred",
            Self::Timeout => "timeout",
            Self::Forbidden => "forbidden",
            Self::Busy => "busy",
            Self::Io => "io",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
