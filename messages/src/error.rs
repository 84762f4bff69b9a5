//! The control protocol's error codes: every service's error maps to one,
//! so they sit below both the services' messages and the protocol.

use std::fmt;

use serde::{Deserialize, Serialize};

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
