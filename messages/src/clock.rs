//! The clock service's data (owned by `ClockService`): reading and setting
//! the time lwsys uses, and the `clock` events of its SNTP client.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// The earliest time `clock.set` accepts: 2000-01-01T00:00:00Z, in Unix
/// microseconds. Anything earlier is a device that lost its RTC, not a time.
pub const MIN_VALID_UNIX_US: u64 = 946_684_800_000_000;

/// The latest time `clock.set` accepts: 2200-01-01T00:00:00Z, in Unix
/// microseconds.
pub const MAX_VALID_UNIX_US: u64 = 7_258_118_400_000_000;

/// Where the time lwsys uses came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockSource {
    /// Not known yet: TIME_VALID is held back.
    None,
    /// The host clock, trusted as it is (`time.source = "system"`).
    System,
    /// SNTP stepped the host clock.
    Sntp,
    /// `clock.set` stepped the host clock.
    Set,
    /// SNTP or `clock.set` gave the time but the host clock could not or
    /// may not be stepped, so lwsys keeps its own offset from the host
    /// clock and uses it for everything it timestamps.
    Soft,
}

impl ClockSource {
    /// The wire name, such as `"sntp"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::System => "system",
            Self::Sntp => "sntp",
            Self::Set => "set",
            Self::Soft => "soft",
        }
    }
}

impl fmt::Display for ClockSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Asks `ClockService` for the time (protocol `clock.get`); the reply is a
/// [`ClockReading`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "ClockReading"))]
pub struct GetClock;

/// The time lwsys uses and how it knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockReading {
    /// The time now, in Unix microseconds (host clock plus any soft offset).
    pub unix_us: u64,
    /// Whether the time is known (TIME_VALID may be entered).
    pub valid: bool,
    /// Where the time came from.
    pub source: ClockSource,
    /// The offset measured by the last successful SNTP exchange, in
    /// microseconds (positive: the server is ahead of us).
    pub last_offset_us: Option<i64>,
    /// The round-trip delay of the last successful SNTP exchange, in
    /// microseconds.
    pub last_delay_us: Option<u64>,
    /// When the last successful SNTP exchange or `clock.set` happened, in
    /// Unix microseconds.
    pub last_sync_us: Option<u64>,
}

/// Sets the time (protocol `clock.set`, sent by the control session after it
/// checked the client's uid). Replies with the new [`ClockReading`], or
/// [`ClockError::OutOfRange`] for a time before 2000 or after 2200, or
/// [`ClockError::Io`] if the platform op failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "actor",
    derive(actix::Message),
    rtype(result = "Result<ClockReading, ClockError>")
)]
pub struct SetClock {
    /// The time to set, in Unix microseconds.
    pub unix_us: u64,
}

/// A `clock` event, pushed by `ClockService` to its subscribers and by the
/// control protocol to clients subscribed to the `clock` topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "()"))]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ClockEvent {
    /// An SNTP exchange succeeded and the time was applied.
    Synced {
        /// The measured offset, in microseconds (positive: we were behind).
        offset_us: i64,
        /// The round-trip delay, in microseconds.
        delay_us: u64,
        /// The server asked, as configured (host or host:port).
        server: String,
    },
    /// An SNTP exchange failed; the next attempt is in `retry_in_ms`.
    Failed {
        /// Why, for people: "timeout", "kiss-of-death RATE", ...
        reason: String,
        /// The server asked, as configured.
        server: String,
        /// When the next attempt is due, in milliseconds.
        retry_in_ms: u64,
    },
}

/// Sent to `ClockService`: push every [`ClockEvent`] to this recipient from
/// now on. No reply; a recipient whose actor stopped is dropped.
#[cfg(feature = "actor")]
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct SubscribeClock(pub actix::Recipient<ClockEvent>);

#[cfg(feature = "actor")]
impl fmt::Debug for SubscribeClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubscribeClock(..)")
    }
}

/// Why a clock request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum ClockError {
    /// The time asked for is before 2000-01-01 or after 2200-01-01.
    #[error("time {unix_us} us is outside 2000-01-01 .. 2200-01-01")]
    OutOfRange {
        /// The rejected time, in Unix microseconds.
        unix_us: u64,
    },
    /// The client may not set the clock (not the daemon's uid).
    #[error("setting the clock is not permitted: {0}")]
    Forbidden(String),
    /// The platform op failed for a reason other than permission.
    #[error("setting the clock failed: {0}")]
    Io(String),
    /// The clock service is not running.
    #[error("clock service unavailable: {0}")]
    Unavailable(String),
}

impl ClockError {
    /// The protocol error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::OutOfRange { .. } => ErrorCode::BadRequest,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::Io(_) => ErrorCode::Io,
            Self::Unavailable(_) => ErrorCode::Internal,
        }
    }

    /// `Ok` if `unix_us` lies in 2000-01-01 .. 2200-01-01, else
    /// [`ClockError::OutOfRange`].
    pub fn check_range(unix_us: u64) -> Result<(), Self> {
        if (MIN_VALID_UNIX_US..=MAX_VALID_UNIX_US).contains(&unix_us) {
            Ok(())
        } else {
            Err(Self::OutOfRange { unix_us })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wild_times_are_bad_requests() {
        for t in [0, MIN_VALID_UNIX_US - 1, MAX_VALID_UNIX_US + 1, u64::MAX] {
            let e = ClockError::check_range(t).unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadRequest, "{t}");
        }
        for t in [MIN_VALID_UNIX_US, 1_800_000_000_000_000, MAX_VALID_UNIX_US] {
            assert!(ClockError::check_range(t).is_ok(), "{t}");
        }
        assert_eq!(ClockError::Forbidden("uid".into()).code(), ErrorCode::Forbidden);
        assert_eq!(ClockError::Io("x".into()).code(), ErrorCode::Io);
    }

    #[test]
    fn events_are_tagged_by_kind() {
        let e = ClockEvent::Failed { reason: "timeout".into(), server: "s".into(), retry_in_ms: 5 };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "failed");
        assert_eq!(v["retry_in_ms"], 5);
        let s: ClockEvent = serde_json::from_value(
            serde_json::json!({"kind": "synced", "offset_us": -3, "delay_us": 7, "server": "x"}),
        )
        .unwrap();
        assert_eq!(s, ClockEvent::Synced { offset_us: -3, delay_us: 7, server: "x".into() });
    }

    #[test]
    fn reading_source_uses_wire_names() {
        let r = ClockReading {
            unix_us: 1,
            valid: true,
            source: ClockSource::Soft,
            last_offset_us: None,
            last_delay_us: None,
            last_sync_us: None,
        };
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(v["source"], "soft");
        assert_eq!(ClockSource::None.to_string(), "none");
    }
}
