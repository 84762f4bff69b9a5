//! The JSON control protocol's shared vocabulary: error codes, limits and
//! the typed requests (DESIGN §5).

use std::fmt;

use serde::{Deserialize, Serialize};

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

/// Every op of the control protocol, as named on the wire. `docs/protocol.md`
/// documents each (a test checks).
pub const OPS: &[&str] = &[
    "hello",
    "state.get",
    "state.steps",
    "state.jump",
    "state.wait",
    "state.explain",
    "state.policy_invalidate",
    "state.enter_modal",
    "state.leave_modal",
    "notifier.register",
    "notifier.resume",
    "notifier.unregister",
    "consent.reply",
    "subscribe",
    "blob.set",
    "blob.append",
    "blob.empty",
    "blob.get",
    "blob.size",
    "blob.destroy",
    "attach",
    "clock.get",
    "clock.set",
    "trust.query",
    "ota.status",
    "ota.check",
    "ota.report_current",
    "system.info",
    "system.reboot",
    "system.shutdown",
];

/// The event topics a client may subscribe to.
pub const TOPICS: &[&str] = &["state", "notifier", "clock", "ota", "service"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, code.as_str());
        }
    }
}
