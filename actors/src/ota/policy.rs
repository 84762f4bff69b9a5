//! The typed update policy (`[ota.policy]`) as pure rules: maintenance
//! windows, the deferral budget of a release and a security release's
//! deadline. Every function takes the time as an argument and touches
//! nothing, so each rule is tested without a clock; `OtaService` feeds it
//! lwsys's wall clock (soft clock included, so `clock.set` moves it too).
//!
//! # Rules
//! - Outside every window (when any is configured) an install waits until
//!   the next window opens; the check itself still runs and reports.
//! - A release's deferrals are the refused attempts to enter
//!   MODAL_UPDATING for it that a notifier deferred (each retry counts).
//!   Once `max_deferrals` of them were made, or `max_defer_secs` have
//!   passed since the release was first found, a `normal` release stops
//!   waiting for deferring notifiers: it enters MODAL_UPDATING past
//!   `Defer` verdicts, but a `Deny` still stops it (a deny is a veto the
//!   operator put there on purpose; a defer only asks for time, and the
//!   time is what the budget bounds).
//! - A `security` release installs at `first seen + security_deadline_secs`
//!   even outside windows and past every verdict (notifiers are still
//!   asked and told, and each may hold it up to its consent timeout).
//!   Before its deadline it follows the rules above, and a window wait
//!   never runs past the deadline.

use std::fmt;
use std::str::FromStr;

use lwsys_manifest::jws::Urgency;
use serde::{Deserialize, Serialize};

const DAY: u64 = 86_400;

/// The most windows `[ota.policy] windows` may list.
pub const MAX_WINDOWS: usize = 48;

/// A daily time range, minutes since local midnight; `start > end`
/// crosses midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start_min: u32,
    end_min: u32,
}

fn parse_hhmm(s: &str, allow_24: bool) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
    match (h, m) {
        (24, 0) if allow_24 => Some(24 * 60),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

impl FromStr for Window {
    type Err = String;

    /// `HH:MM-HH:MM` (the end may be `24:00`); start and end differ.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a window HH:MM-HH:MM (e.g. \"02:00-04:00\")");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let start_min = parse_hhmm(a, false).ok_or_else(bad)?;
        let end_min = parse_hhmm(b, true).ok_or_else(bad)?;
        if start_min == end_min {
            return Err(format!("window {s:?} is empty (start equals end)"));
        }
        Ok(Self { start_min, end_min })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.start_min), hm(self.end_min))
    }
}

impl Window {
    /// Whether `minute` (of the local day) is inside.
    fn contains(&self, minute: u32) -> bool {
        if self.start_min < self.end_min {
            (self.start_min..self.end_min).contains(&minute)
        } else {
            minute >= self.start_min || minute < self.end_min
        }
    }
}

/// Parses a fixed UTC offset `+HH:MM` / `-HH:MM` (or `Z`) into seconds
/// east of UTC; at most 14 hours either way.
pub fn parse_utc_offset(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a UTC offset +HH:MM or -HH:MM (e.g. \"+01:00\")");
    if s == "Z" {
        return Ok(0);
    }
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, s.get(1..).unwrap_or_default()),
        Some(b'-') => (-1, s.get(1..).unwrap_or_default()),
        _ => return Err(bad()),
    };
    let minutes = parse_hhmm(rest, false).ok_or_else(bad)?;
    if minutes > 14 * 60 {
        return Err(bad());
    }
    Ok(sign * i64::from(minutes) * 60)
}

/// The update policy. The default has no windows, no budget and a day's
/// security deadline: a release installs as soon as the notifiers allow,
/// as upstream does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatePolicy {
    /// Daily windows installs may start in; empty: any time.
    pub windows: Vec<Window>,
    /// The windows' time zone, seconds east of UTC.
    pub utc_offset_secs: i64,
    /// Deferred attempts allowed per release before `Defer` is overridden.
    pub max_deferrals: Option<u32>,
    /// Seconds after a release is first found before `Defer` is overridden.
    pub max_defer_secs: Option<u64>,
    /// Seconds after a security release is first found before it is
    /// installed past every verdict and outside windows.
    pub security_deadline_secs: u64,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        Self {
            windows: Vec::new(),
            utc_offset_secs: 0,
            max_deferrals: None,
            max_defer_secs: None,
            security_deadline_secs: DAY,
        }
    }
}

/// What the policy knows of the release being offered, persisted across
/// restarts ([`super::policy_store`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ReleaseRecord {
    /// The release (manifest unixtime); 0: none yet.
    pub release: u64,
    /// When it was first found, Unix seconds.
    pub first_seen_unix: u64,
    /// Refused (deferred) attempts to enter MODAL_UPDATING for it.
    pub deferrals: u32,
}

/// Unix seconds before which a clock is taken as not yet set (2000-01-01,
/// the protocol's `clock.set` floor).
const CLOCK_FLOOR: u64 = lwsys_messages::clock::MIN_VALID_UNIX_US / 1_000_000;

impl ReleaseRecord {
    /// The record for `release` at `now`: this one if it is about the same
    /// release, else a fresh one first seen now. A sighting made while the
    /// clock was not yet set (before 2000) is moved to `now` once it is,
    /// so a clock jumping from 1970 to today spends no budget and brings
    /// no deadline.
    pub fn for_release(self, release: u64, now: u64) -> Self {
        if self.release == release && release != 0 {
            let unset = self.first_seen_unix < CLOCK_FLOOR && now >= CLOCK_FLOOR;
            Self { first_seen_unix: if unset { now } else { self.first_seen_unix }, ..self }
        } else {
            Self { release, first_seen_unix: now, deferrals: 0 }
        }
    }
}

/// How MODAL_UPDATING is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// As usual: any `Defer` or `Deny` stops it.
    Normal,
    /// Past `Defer` verdicts (budget spent); a `Deny` stops it.
    PastDefer,
    /// Past every verdict (a security release at its deadline).
    Forced,
}

/// The policy's answer for a found release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Outside the windows: wait until this Unix second.
    Wait {
        /// When the next window opens (or the security deadline comes).
        until_unix: u64,
    },
    /// Ask for MODAL_UPDATING this way.
    Enter(Entry),
}

impl UpdatePolicy {
    fn local_minute(&self, now: u64) -> u32 {
        let local = i128::from(now) + i128::from(self.utc_offset_secs);
        let secs = local.rem_euclid(i128::from(DAY));
        u32::try_from(secs / 60).unwrap_or(0)
    }

    /// Whether an install may start at `now` as far as windows go.
    pub fn window_open(&self, now: u64) -> bool {
        if self.windows.is_empty() {
            return true;
        }
        let m = self.local_minute(now);
        self.windows.iter().any(|w| w.contains(m))
    }

    /// The next Unix second after `now` at which a window opens (`now`
    /// itself if one is open, or there are none).
    pub fn next_window(&self, now: u64) -> u64 {
        if self.window_open(now) {
            return now;
        }
        let minute_start = now - now % 60;
        let m = self.local_minute(now);
        let wait_min = self
            .windows
            .iter()
            .map(|w| (w.start_min + 24 * 60 - m) % (24 * 60))
            .filter(|d| *d > 0)
            .min()
            .unwrap_or(24 * 60);
        minute_start + u64::from(wait_min) * 60
    }

    /// When a security release first seen at `first_seen` is due.
    pub fn security_deadline(&self, first_seen: u64) -> u64 {
        first_seen.saturating_add(self.security_deadline_secs)
    }

    /// Whether `rec`'s deferral budget is spent at `now`.
    pub fn budget_spent(&self, rec: &ReleaseRecord, now: u64) -> bool {
        let by_count = self.max_deferrals.is_some_and(|n| rec.deferrals >= n);
        let by_time =
            self.max_defer_secs.is_some_and(|s| now.saturating_sub(rec.first_seen_unix) >= s);
        by_count || by_time
    }

    /// When the budget (or a security release's deadline) stops deferring
    /// notifiers from holding `rec`, if a time is known.
    pub fn defer_until(&self, rec: &ReleaseRecord, urgency: Urgency) -> Option<u64> {
        let budget = self.max_defer_secs.map(|s| rec.first_seen_unix.saturating_add(s));
        let deadline =
            (urgency == Urgency::Security).then(|| self.security_deadline(rec.first_seen_unix));
        match (budget, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What to do about the release `rec` (of `urgency`) at `now`.
    pub fn decide(&self, rec: &ReleaseRecord, urgency: Urgency, now: u64) -> Decision {
        let security = urgency == Urgency::Security;
        if security && now >= self.security_deadline(rec.first_seen_unix) {
            return Decision::Enter(Entry::Forced);
        }
        if !self.window_open(now) {
            let mut until = self.next_window(now);
            if security {
                until = until.min(self.security_deadline(rec.first_seen_unix));
            }
            return Decision::Wait { until_unix: until };
        }
        if self.budget_spent(rec, now) {
            Decision::Enter(Entry::PastDefer)
        } else {
            Decision::Enter(Entry::Normal)
        }
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
