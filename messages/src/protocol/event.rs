//! The events of the control protocol: lines a connection is sent unasked,
//! tagged by `event`. Topic events (`state`, `notifier`, `clock`, `ota`,
//! `service`) go to connections subscribed to them; `consent`, `changed`
//! and `aborted` to a connection registered as a notifier; `reboot_failed`
//! to the connection that asked for the reboot.
//!
//! The same type is what the Supervisor broadcasts to its subscribers
//! (`SystemEvent`), so an event is typed from where it is made to the
//! socket.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ErrorBody, Topic};
use crate::clock::ClockEvent;
use crate::ota::OtaEvent;
use crate::state::SystemState;
use crate::supervisor::NotifierEventKind;

/// An event line. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "event", rename_all = "snake_case")]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "()"))]
pub enum Event {
    /// The state changed (topic `state`).
    State {
        /// The state left.
        from: SystemState,
        /// The state entered.
        to: SystemState,
        /// When, in Unix microseconds.
        at_us: u64,
    },
    /// The notifier registry changed, or a notifier missed its deadline
    /// (topic `notifier`).
    Notifier {
        /// `registered`, `unregistered` or `timeout`.
        kind: NotifierEventKind,
        /// The notifier's name.
        name: Arc<str>,
        /// Why, for `unregistered` (`"requested"`: asked for, or its
        /// connection closed; `"stopped"`: a notifier actor stopped).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// This connection, a notifier, is asked for consent; it answers with
    /// `consent.reply {ticket}`.
    Consent {
        /// The ticket to answer with.
        ticket: u64,
        /// The state the system is in.
        current: SystemState,
        /// The state it proposes to enter.
        target: SystemState,
        /// `"health"` for a health round (current and target both
        /// OPERATIONAL; nothing changes): allow = healthy, defer = not
        /// yet, deny = unhealthy. Absent for a transition.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        check: Option<String>,
    },
    /// This connection, a notifier, is told the state changed.
    Changed {
        /// The state left.
        from: SystemState,
        /// The state entered.
        to: SystemState,
    },
    /// This connection, a notifier, is told a transition it allowed was
    /// not made.
    Aborted {
        /// The state the system stays in.
        current: SystemState,
        /// The state it did not enter.
        target: SystemState,
    },
    /// A clock sync or failure (topic `clock`). On the wire `event` comes
    /// after the clock event's own members, as it always has.
    Clock(ClockEvent),
    /// OTA progress (topic `ota`).
    Ota(OtaProgress),
    /// A service restarted or was given up on (topic `service`).
    Service(ServiceEvent),
    /// The reboot this connection asked for failed; the daemon stays up.
    RebootFailed {
        /// Why.
        error: ErrorBody,
    },
}

impl Event {
    /// The topic a connection must subscribe to for this event; `None` for
    /// the events sent to one connection for what it did.
    pub fn topic(&self) -> Option<Topic> {
        match self {
            Self::State { .. } => Some(Topic::State),
            Self::Notifier { .. } => Some(Topic::Notifier),
            Self::Clock(_) => Some(Topic::Clock),
            Self::Ota(_) => Some(Topic::Ota),
            Self::Service(_) => Some(Topic::Service),
            Self::Consent { .. } | Self::Changed { .. } | Self::Aborted { .. } => None,
            Self::RebootFailed { .. } => None,
        }
    }

    /// The event as a protocol JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// A clock event on the wire: its own members, then `"event": "clock"`.
#[derive(Serialize)]
struct ClockLine<'a> {
    #[serde(flatten)]
    ev: &'a ClockEvent,
    event: &'static str,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Clock(ev) => ClockLine { ev, event: "clock" }.serialize(s),
            other => Event::serialize(other, s),
        }
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Event::deserialize(d)
    }
}

/// An `ota` event: progress, and the last error when there was one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OtaProgress {
    /// Phase, percent, bytes and bytes resumed.
    #[serde(flatten)]
    pub progress: OtaEvent,
    /// The last error, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last error's kind (`bad_signature`, ...), with `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// The update policy's decision about the release found, when this
    /// event reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::ota::PolicyDecision>,
    /// What the release found waits for, while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<crate::ota::Waiting>,
    /// A trial boot was just confirmed or rolled back (health gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<crate::ota::TrialOutcome>,
    /// With `trial: "rolled_back"`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<crate::ota::RollbackRecord>,
}

/// A `service` event: what the Supervisor did about a service that died.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServiceEvent {
    /// It was restarted.
    Restarted {
        /// Which (`blobs`, `clock`, `trust`, `ota`).
        service: String,
        /// Restarts within the window, this one included.
        restarts: usize,
    },
    /// It died too often or could not be restarted: the daemon shuts down.
    GaveUp {
        /// Which.
        service: String,
        /// Why, for people.
        reason: String,
    },
}

/// An event pushed to the Supervisor's subscribers: the protocol's
/// [`Event`], so it is typed from where it is made
/// to the client's socket. The Supervisor broadcasts the topic events
/// (`state`, `notifier`, `clock`, `ota`, `service`).
pub type SystemEvent = Event;

/// Send every [`SystemEvent`] to this recipient until it stops. No reply.
#[cfg(feature = "actor")]
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub actix::Recipient<SystemEvent>);

#[cfg(feature = "actor")]
impl std::fmt::Debug for Subscribe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscribe(..)")
    }
}
