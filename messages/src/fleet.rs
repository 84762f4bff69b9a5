//! The fleet's MQTT wire contract: topic names under `<prefix>/<device>/`,
//! the rules for prefixes and device ids, and the JSON payloads `lwsysd`
//! publishes and `lwsysctl fleet` reads (DESIGN §8, docs/protocol.md
//! "Fleet topics").
//!
//! Topics, all under `<prefix>/<device>/`:
//! - `status`: retained plain text `online` once connected, `lost` by the
//!   last will ([`LinkStatus`]).
//! - `state`: retained JSON [`StatePayload`].
//! - `explain`: retained JSON [`ExplainSummary`].
//! - `ota`: retained JSON [`OtaPayload`].
//! - `info`: retained JSON [`InfoPayload`].
//! - `cmd`: one control-protocol request line; not retained.
//! - `reply`: the reply line to a `cmd`, with the request's `id`; not
//!   retained.
//!
//! The fleet-wide command topic is `<prefix>/_all/cmd` ([`fleet_cmd_topic`]);
//! device ids cannot start with `_`, so it never names a device.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ota::{OtaEvent, OtaPhase, OtaStatus};
use crate::state::{JournalEntry, RoundOutcome, SystemState};
use crate::supervisor::{Explanation, Pending};

/// Longest device id, in bytes.
pub const MAX_DEVICE_ID: usize = 64;

/// Longest topic prefix, in bytes.
pub const MAX_PREFIX: usize = 128;

/// The topic level of the fleet-wide command topic (`<prefix>/_all/cmd`).
pub const ALL_DEVICES: &str = "_all";

/// Longest command payload a device runs, in bytes: longer ones are
/// answered with an error and never parsed. Commands are single requests,
/// so this is far below the socket's line limit.
pub const MAX_COMMAND: usize = 64 * 1024;

/// Why a device id or prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidName(pub &'static str);

impl fmt::Display for InvalidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for InvalidName {}

/// Checks a device id: 1 to [`MAX_DEVICE_ID`] bytes of ASCII letters,
/// digits and `_ - . : @`, not starting with `_` or `.` (`_all` is the
/// fleet-wide topic). So an id is exactly one topic level and can never
/// carry `/`, `+` or `#`, nor need escaping in logs or tables.
pub fn check_device_id(id: &str) -> Result<(), InvalidName> {
    if id.is_empty() {
        return Err(InvalidName("empty"));
    }
    if id.len() > MAX_DEVICE_ID {
        return Err(InvalidName("longer than 64 bytes"));
    }
    if id.starts_with('_') || id.starts_with('.') {
        return Err(InvalidName("must not start with '_' or '.'"));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:@".contains(&b)) {
        return Err(InvalidName("only ASCII letters, digits and _ - . : @ are allowed"));
    }
    Ok(())
}

/// Turns an untrusted string (a blob, a hostname) into a device id when it
/// can be one as it stands after trimming ASCII whitespace; `None` when it
/// cannot (ids are never rewritten, so two devices cannot collide by
/// mangling).
pub fn device_id_from(raw: &str) -> Option<String> {
    let t = raw.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0');
    check_device_id(t).ok().map(|()| t.to_owned())
}

/// Checks a topic prefix: 1 to [`MAX_PREFIX`] bytes, one or more non-empty
/// `/`-separated levels of ASCII letters, digits and `_ - . : @`; no
/// wildcards, no leading `$` (broker-reserved), no empty level.
pub fn check_prefix(prefix: &str) -> Result<(), InvalidName> {
    if prefix.is_empty() {
        return Err(InvalidName("empty"));
    }
    if prefix.len() > MAX_PREFIX {
        return Err(InvalidName("longer than 128 bytes"));
    }
    for level in prefix.split('/') {
        if level.is_empty() {
            return Err(InvalidName("empty topic level (leading, trailing or double '/')"));
        }
        if !level.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:@".contains(&b)) {
            return Err(InvalidName("only ASCII letters, digits, '/' and _ - . : @ are allowed"));
        }
    }
    Ok(())
}

/// A per-device topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// `state`: [`StatePayload`], retained.
    State,
    /// `explain`: [`ExplainSummary`], retained.
    Explain,
    /// `ota`: [`OtaPayload`], retained.
    Ota,
    /// `info`: [`InfoPayload`], retained.
    Info,
    /// `status`: `online` / `lost`, retained. Ordered after the payloads
    /// so a device that sends what is dirty in order says `online` last.
    Status,
    /// `cmd`: a request line to the device.
    Cmd,
    /// `reply`: the device's reply line.
    Reply,
}

/// The retained topics a device publishes, in the order it publishes them
/// on (re)connect (`status` last, once the rest are in place).
pub const RETAINED: [Topic; 5] =
    [Topic::State, Topic::Explain, Topic::Ota, Topic::Info, Topic::Status];

impl Topic {
    /// The last topic level.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::State => "state",
            Self::Explain => "explain",
            Self::Ota => "ota",
            Self::Info => "info",
            Self::Cmd => "cmd",
            Self::Reply => "reply",
        }
    }

    /// The topic for a suffix, if it is one of ours.
    pub fn from_suffix(s: &str) -> Option<Self> {
        Some(match s {
            "status" => Self::Status,
            "state" => Self::State,
            "explain" => Self::Explain,
            "ota" => Self::Ota,
            "info" => Self::Info,
            "cmd" => Self::Cmd,
            "reply" => Self::Reply,
            _ => return None,
        })
    }

    /// Whether the device publishes it retained.
    pub fn retained(self) -> bool {
        !matches!(self, Self::Cmd | Self::Reply)
    }

    /// `<prefix>/<device>/<suffix>`. The caller has checked both names
    /// ([`check_prefix`], [`check_device_id`]).
    pub fn of(self, prefix: &str, device: &str) -> String {
        format!("{prefix}/{device}/{}", self.suffix())
    }

    /// `<prefix>/+/<suffix>`: this topic of every device, for observers.
    pub fn every_device(self, prefix: &str) -> String {
        format!("{prefix}/+/{}", self.suffix())
    }
}

/// `<prefix>/<device>/status`.
pub fn status_topic(prefix: &str, device: &str) -> String {
    Topic::Status.of(prefix, device)
}

/// `<prefix>/<device>/state`.
pub fn state_topic(prefix: &str, device: &str) -> String {
    Topic::State.of(prefix, device)
}

/// `<prefix>/<device>/explain`.
pub fn explain_topic(prefix: &str, device: &str) -> String {
    Topic::Explain.of(prefix, device)
}

/// `<prefix>/<device>/ota`.
pub fn ota_topic(prefix: &str, device: &str) -> String {
    Topic::Ota.of(prefix, device)
}

/// `<prefix>/<device>/info`.
pub fn info_topic(prefix: &str, device: &str) -> String {
    Topic::Info.of(prefix, device)
}

/// `<prefix>/<device>/cmd`.
pub fn cmd_topic(prefix: &str, device: &str) -> String {
    Topic::Cmd.of(prefix, device)
}

/// `<prefix>/<device>/reply`.
pub fn reply_topic(prefix: &str, device: &str) -> String {
    Topic::Reply.of(prefix, device)
}

/// `<prefix>/_all/cmd`: commands to every device; each answers on its own
/// `reply` topic.
pub fn fleet_cmd_topic(prefix: &str) -> String {
    format!("{prefix}/{ALL_DEVICES}/cmd")
}

/// Splits a topic into its device and [`Topic`] when it is
/// `<prefix>/<device>/<suffix>` with a valid device id; `None` otherwise
/// (so an observer ignores what it does not understand).
pub fn parse_topic<'a>(prefix: &str, topic: &'a str) -> Option<(&'a str, Topic)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let (device, suffix) = rest.split_once('/')?;
    check_device_id(device).ok()?;
    Some((device, Topic::from_suffix(suffix)?))
}

/// The `status` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkStatus {
    /// Connected (published by the device).
    Online,
    /// Gone without a clean goodbye (the last will), or shut down.
    Lost,
}

impl LinkStatus {
    /// The payload text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Lost => "lost",
        }
    }
}

impl fmt::Display for LinkStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LinkStatus {
    type Err = InvalidName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "online" => Ok(Self::Online),
            "lost" => Ok(Self::Lost),
            _ => Err(InvalidName("status is neither 'online' nor 'lost'")),
        }
    }
}

/// The retained `state` payload: `{"state","since_us","pending"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatePayload {
    /// The current state.
    pub state: SystemState,
    /// When it was entered, in Unix microseconds.
    pub since_us: u64,
    /// Who holds the walk, why, toward which state and since when; null
    /// when nothing is parked.
    pub pending: Option<Pending>,
}

/// The newest consent round that did not commit: the last denial or
/// deferral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// `denied` or `deferred`.
    pub outcome: RefusalKind,
    /// The notifier that refused.
    pub by: Arc<str>,
    /// Its reason.
    pub reason: String,
    /// The state the system was in.
    pub current: SystemState,
    /// The state refused.
    pub target: SystemState,
    /// When the round started, in Unix microseconds.
    pub at_us: u64,
}

/// Whether a [`Refusal`] was a denial or a deferral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefusalKind {
    /// The notifier said no.
    Denied,
    /// The notifier said not yet (or was silent).
    Deferred,
}

impl Refusal {
    /// The refusal a journal entry records, if it records one.
    pub fn from_entry(e: &JournalEntry) -> Option<Self> {
        let (outcome, by, reason) = match &e.outcome {
            RoundOutcome::Denied { by, reason } => (RefusalKind::Denied, by, reason),
            RoundOutcome::Deferred { by, reason } => (RefusalKind::Deferred, by, reason),
            RoundOutcome::Committed | RoundOutcome::Forced => return None,
        };
        Some(Self {
            outcome,
            by: by.clone(),
            reason: reason.clone(),
            current: e.current,
            target: e.target,
            at_us: e.at_us,
        })
    }
}

/// The retained `explain` payload: a compact answer to "why is this device
/// not OPERATIONAL?" (the full journal stays on the device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainSummary {
    /// The current state.
    pub state: SystemState,
    /// When it was entered, in Unix microseconds.
    pub since_us: u64,
    /// The walk held by a notifier (the oldest when several are parked).
    pub pending: Option<Pending>,
    /// How many walks are parked.
    pub parked: usize,
    /// The newest denial or deferral in the journal, if any.
    pub last_refusal: Option<Refusal>,
}

impl ExplainSummary {
    /// The summary of a full explanation.
    pub fn from_explanation(x: &Explanation) -> Self {
        Self {
            state: x.state,
            since_us: x.since_us,
            pending: x.pending.clone(),
            parked: x.parked.len(),
            last_refusal: x.journal.iter().rev().find_map(Refusal::from_entry),
        }
    }
}

/// The retained `ota` payload: where an update stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OtaPayload {
    /// Current phase.
    pub phase: OtaPhase,
    /// Progress of the phase, 0..=100.
    pub percent: u8,
    /// Inflated image bytes written so far.
    pub bytes: u64,
    /// Unixtime of the release confirmed good (0: factory image or unknown).
    #[serde(default)]
    pub confirmed_unixtime: u64,
    /// The kind of the last failure (`deadline`, `network`, ...), if any.
    #[serde(default)]
    pub last_error_kind: Option<String>,
}

impl OtaPayload {
    /// The payload of a full status.
    pub fn from_status(s: &OtaStatus) -> Self {
        Self {
            phase: s.phase,
            percent: s.percent,
            bytes: s.bytes,
            confirmed_unixtime: s.confirmed_unixtime,
            last_error_kind: s.last_error_kind.clone(),
        }
    }

    /// Applies a progress event, keeping what it does not carry.
    pub fn apply(&mut self, e: &OtaEvent) {
        self.phase = e.phase;
        self.percent = e.percent;
        self.bytes = e.bytes;
    }
}

/// The retained `info` payload: what the device runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InfoPayload {
    /// The daemon's version.
    pub version: String,
    /// The OTA variant (`[ota] variant`; empty when unset).
    pub variant: String,
    /// The control protocol version it speaks.
    pub protocol: u32,
    /// What broker commands may do: `none`, `readonly` or `admin`.
    pub commands: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_one_safe_topic_level() {
        for ok in ["dev-1", "A.b:c@d_e", &"x".repeat(MAX_DEVICE_ID)] {
            assert!(check_device_id(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", "a/b", "a+b", "a#", "_all", ".x", "a b", "é", &"x".repeat(MAX_DEVICE_ID + 1)]
        {
            assert!(check_device_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(device_id_from(" serial-7\n").as_deref(), Some("serial-7"));
        assert_eq!(device_id_from("a/b"), None);
    }

    #[test]
    fn prefixes_have_no_wildcards_or_empty_levels() {
        for ok in ["lwsys", "acme/site-3/lwsys"] {
            assert!(check_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/x", "x/", "a//b", "a/+", "#", "$SYS", &"p".repeat(MAX_PREFIX + 1)] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topics_build_and_parse_back() {
        assert_eq!(status_topic("lwsys", "d1"), "lwsys/d1/status");
        assert_eq!(state_topic("a/b", "d1"), "a/b/d1/state");
        assert_eq!(cmd_topic("lwsys", "d1"), "lwsys/d1/cmd");
        assert_eq!(reply_topic("lwsys", "d1"), "lwsys/d1/reply");
        assert_eq!(fleet_cmd_topic("lwsys"), "lwsys/_all/cmd");
        assert_eq!(Topic::State.every_device("lwsys"), "lwsys/+/state");
        for t in [
            Topic::Status,
            Topic::State,
            Topic::Explain,
            Topic::Ota,
            Topic::Info,
            Topic::Cmd,
            Topic::Reply,
        ] {
            assert_eq!(parse_topic("a/b", &t.of("a/b", "dev")), Some(("dev", t)));
        }
        assert_eq!(parse_topic("lwsys", "lwsys/_all/cmd"), None);
        assert_eq!(parse_topic("lwsys", "lwsysx/d/state"), None);
        assert_eq!(parse_topic("lwsys", "lwsys/d/state/x"), None);
        assert!(!Topic::Reply.retained() && Topic::State.retained());
    }

    #[test]
    fn state_payload_has_the_designed_shape() {
        let p = StatePayload { state: SystemState::Registered, since_us: 5, pending: None };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"state":"REGISTERED","since_us":5,"pending":null}"#
        );
        let held = StatePayload {
            pending: Some(Pending {
                by: "fleet".into(),
                reason: "broker unreachable".into(),
                target: SystemState::Registered,
                since_us: 3,
            }),
            ..p
        };
        let v: serde_json::Value = serde_json::to_value(&held).unwrap();
        assert_eq!(v["pending"]["by"], "fleet");
        assert_eq!(v["pending"]["target"], "REGISTERED");
        assert_eq!(serde_json::from_value::<StatePayload>(v).unwrap(), held);
    }

    #[test]
    fn status_round_trips() {
        assert_eq!("online".parse::<LinkStatus>().unwrap(), LinkStatus::Online);
        assert_eq!(LinkStatus::Lost.as_str(), "lost");
        assert!("gone".parse::<LinkStatus>().is_err());
    }

    #[test]
    fn explain_summary_names_the_newest_refusal() {
        let entry = |at_us, outcome| JournalEntry {
            at_us,
            current: SystemState::PolicyValid,
            target: SystemState::Registered,
            verdicts: vec![],
            inline_ns: 0,
            outcome,
        };
        let x = Explanation {
            state: SystemState::PolicyValid,
            since_us: 1,
            pending: None,
            parked: vec![],
            journal: vec![
                entry(1, RoundOutcome::Denied { by: "a".into(), reason: "no".into() }),
                entry(2, RoundOutcome::Deferred { by: "b".into(), reason: "later".into() }),
                entry(3, RoundOutcome::Committed),
            ],
        };
        let s = ExplainSummary::from_explanation(&x);
        let r = s.last_refusal.unwrap();
        assert_eq!((r.outcome, &*r.by, r.at_us), (RefusalKind::Deferred, "b", 2));
    }

    #[test]
    fn ota_payload_follows_events() {
        let mut p = OtaPayload { confirmed_unixtime: 9, ..Default::default() };
        p.apply(&OtaEvent {
            phase: OtaPhase::Downloading,
            percent: 40,
            bytes: 4,
            ..OtaEvent::default()
        });
        assert_eq!(
            (p.phase, p.percent, p.bytes, p.confirmed_unixtime),
            (OtaPhase::Downloading, 40, 4, 9)
        );
    }
}
