//! The system state machine's data: the states, the verdicts notifiers give,
//! and the messages that move the machine (owned by `StateService` and the
//! `Supervisor`).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The system states, in upstream lws order. The numeric value is
/// upstream's; the JSON form is the name.
///
/// Ordering is numeric, which is the rule upstream uses for "at or past a
/// state": `POLICY_INVALID` counts as past `OPERATIONAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum SystemState {
    /// The context was just created.
    ContextCreated = 1,
    /// Before privileges are dropped.
    PrePrivDrop = 2,
    /// The services have been initialised.
    Initialized = 3,
    /// Reading configuration from standard input, where the device does.
    CollectingStdin = 4,
    /// Existing network interfaces have been iterated.
    IfaceColdplug = 5,
    /// Network identity is available.
    Dhcp = 6,
    /// Captive-portal detection before the time is known.
    CpdPreTime = 7,
    /// The system knows the time.
    TimeValid = 8,
    /// Captive-portal detection once the time is known.
    CpdPostTime = 9,
    /// The system has the policy it needs from the network.
    PolicyValid = 10,
    /// The device has a registered identity.
    Registered = 11,
    /// The device identity has produced a time-limited access token.
    Auth1 = 12,
    /// An optional second access token for other services.
    Auth2 = 13,
    /// One-time data operations of a firmware update run here.
    OneTimeUpdates = 14,
    /// The system is ready for user code to work normally.
    Operational = 15,
    /// Policy is changing; the system goes back to `INITIALIZED` and on.
    PolicyInvalid = 16,
    /// The system is going down.
    ContextDestroying = 17,
    /// Asking for agreement to enter `MODAL_UPDATING`.
    AwaitingModalUpdating = 18,
    /// A modal update (such as flashing firmware) is in progress.
    ModalUpdating = 19,
}

/// Every state, in order.
pub const ALL_STATES: [SystemState; 19] = [
    SystemState::ContextCreated,
    SystemState::PrePrivDrop,
    SystemState::Initialized,
    SystemState::CollectingStdin,
    SystemState::IfaceColdplug,
    SystemState::Dhcp,
    SystemState::CpdPreTime,
    SystemState::TimeValid,
    SystemState::CpdPostTime,
    SystemState::PolicyValid,
    SystemState::Registered,
    SystemState::Auth1,
    SystemState::Auth2,
    SystemState::OneTimeUpdates,
    SystemState::Operational,
    SystemState::PolicyInvalid,
    SystemState::ContextDestroying,
    SystemState::AwaitingModalUpdating,
    SystemState::ModalUpdating,
];

impl SystemState {
    /// The upstream numeric value (1 to 19).
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The state with upstream number `n`, if there is one.
    pub fn from_number(n: u8) -> Option<Self> {
        ALL_STATES.get(usize::from(n).checked_sub(1)?).copied()
    }

    /// The protocol name, such as `"TIME_VALID"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ContextCreated => "CONTEXT_CREATED",
            Self::PrePrivDrop => "PRE_PRIV_DROP",
            Self::Initialized => "INITIALIZED",
            Self::CollectingStdin => "COLLECTING_STDIN",
            Self::IfaceColdplug => "IFACE_COLDPLUG",
            Self::Dhcp => "DHCP",
            Self::CpdPreTime => "CPD_PRE_TIME",
            Self::TimeValid => "TIME_VALID",
            Self::CpdPostTime => "CPD_POST_TIME",
            Self::PolicyValid => "POLICY_VALID",
            Self::Registered => "REGISTERED",
            Self::Auth1 => "AUTH1",
            Self::Auth2 => "AUTH2",
            Self::OneTimeUpdates => "ONE_TIME_UPDATES",
            Self::Operational => "OPERATIONAL",
            Self::PolicyInvalid => "POLICY_INVALID",
            Self::ContextDestroying => "CONTEXT_DESTROYING",
            Self::AwaitingModalUpdating => "AWAITING_MODAL_UPDATING",
            Self::ModalUpdating => "MODAL_UPDATING",
        }
    }

    /// The next state up, or `None` at the last one.
    pub fn next(self) -> Option<Self> {
        Self::from_number(self.number() + 1)
    }
}

impl fmt::Display for SystemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A state name that is not one of the 19.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown system state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for SystemState {
    type Err = UnknownState;

    /// Accepts the protocol name in any case, with or without upstream's
    /// `LWS_SYSTATE_` prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bare =
            s.get(..12).filter(|p| p.eq_ignore_ascii_case("LWS_SYSTATE_")).map_or(s, |_| &s[12..]);
        ALL_STATES
            .iter()
            .copied()
            .find(|st| st.name().eq_ignore_ascii_case(bare))
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

impl Serialize for SystemState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for SystemState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A notifier's answer to a proposed transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "actor", derive(actix::MessageResponse))]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// Not yet: the notifier started a dependency and will send `Resume`.
    Defer {
        /// Why the transition waits.
        reason: String,
    },
    /// No: the request is refused.
    Deny {
        /// Why the transition is refused.
        reason: String,
    },
}

impl Verdict {
    /// A `Defer` with this reason.
    pub fn defer(reason: impl Into<String>) -> Self {
        Self::Defer { reason: reason.into() }
    }

    /// A `Deny` with this reason.
    pub fn deny(reason: impl Into<String>) -> Self {
        Self::Deny { reason: reason.into() }
    }

    /// Whether this is `Allow`.
    #[inline]
    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow)
    }
}

/// Sent by the `Supervisor` to an actor notifier before a transition; the
/// reply is its [`Verdict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "Verdict"))]
pub struct Consent {
    /// The state the system is in.
    pub current: SystemState,
    /// The state it proposes to enter.
    pub target: SystemState,
}

/// Sent after the state changed: by the `Supervisor` to every notifier, and
/// by `StateService` to its observers. No reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "()"))]
pub struct Changed {
    /// The state left.
    pub from: SystemState,
    /// The state entered.
    pub to: SystemState,
}

/// Sent by the `Supervisor` to the notifiers that allowed a transition that
/// was then not made (another notifier denied or deferred it, or timed out),
/// so that they can undo what they prepared. No reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "()"))]
pub struct Aborted {
    /// The state the system stays in.
    pub current: SystemState,
    /// The state it did not enter.
    pub target: SystemState,
}

/// Sent by a notifier that deferred, to the `Supervisor`: continue the walk
/// it holds. Replies whether a walk held by that notifier was waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "bool"))]
pub struct Resume {
    /// The name the notifier registered with.
    pub name: String,
}

/// Sent by the `Supervisor` to `StateService`: change the state from `from`
/// to `to`. Refused unless `from` is the current state (compare-and-set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "actor",
    derive(actix::Message),
    rtype(result = "Result<StateReading, CommitRefused>")
)]
pub struct Commit {
    /// The state the caller believes is current.
    pub from: SystemState,
    /// The state to enter.
    pub to: SystemState,
}

/// A commit whose `from` was not the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("commit from {expected} refused: current state is {current}")]
pub struct CommitRefused {
    /// The `from` of the refused commit.
    pub expected: SystemState,
    /// The state that is actually current.
    pub current: SystemState,
}

/// Asks `StateService` for the current state; the reply is a
/// [`StateReading`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "StateReading"))]
pub struct GetState;

/// The current state and when it was entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReading {
    /// The current state.
    pub state: SystemState,
    /// When it was entered, in Unix microseconds.
    pub since_us: u64,
}

/// Asks `StateService` to answer once the current state is at or past
/// `state`, or when `timeout` runs out (`None`: no timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "actor",
    derive(actix::Message),
    rtype(result = "Result<SystemState, WaitTimedOut>")
)]
pub struct WaitFor {
    /// The state to wait for.
    pub state: SystemState,
    /// How long to wait at most.
    pub timeout: Option<Duration>,
}

/// A [`WaitFor`] that ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out waiting for {wanted}; current state is {current}")]
pub struct WaitTimedOut {
    /// The state waited for.
    pub wanted: SystemState,
    /// The state at the time out.
    pub current: SystemState,
}

/// One transition the `Supervisor` committed (see [`CommitRounds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitRound {
    /// The state the Supervisor committed from.
    pub from: SystemState,
    /// The state it committed.
    pub to: SystemState,
    /// When `to` was entered, in Unix microseconds (stamped by the
    /// Supervisor, so that the reading it publishes and the service's agree).
    pub since_us: u64,
}

/// Sent by the `Supervisor` to `StateService` with the transitions it
/// committed since it last sent, oldest first, which it does not wait for
/// (it is the only writer, so it already knows the states it commits). A
/// walk of inline notifiers commits many transitions without waiting for
/// anything; they travel together, one message per burst. Each is applied
/// like a [`Commit`] from its `from`; one whose `from` is not current
/// changes nothing. No reply. The journal of consent rounds stays with the
/// Supervisor, which both writes and reads it.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "()"))]
pub struct CommitRounds {
    /// The transitions, oldest first.
    pub rounds: Vec<CommitRound>,
    /// The Supervisor already published these readings itself: the service
    /// must not publish them again, as newer commits may have been
    /// published since (it would move readers back).
    pub published: bool,
}

/// One consent round: who was asked about which transition, and what each
/// said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// When the round started, in Unix microseconds.
    pub at_us: u64,
    /// The state the system was in.
    pub current: SystemState,
    /// The state proposed.
    pub target: SystemState,
    /// Each notifier asked, in the order asked.
    pub verdicts: Vec<NotifierVerdict>,
    /// Time spent in inline notifiers, together, in nanoseconds: a clock
    /// read per closure would cost more than the closures themselves.
    pub inline_ns: u64,
    /// How the round ended.
    #[serde(flatten)]
    pub outcome: RoundOutcome,
}

/// One notifier's answer in a journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifierVerdict {
    /// The notifier's name.
    pub name: Arc<str>,
    /// What it answered (`Defer { reason: "timeout" }` for silence).
    #[serde(flatten)]
    pub verdict: Verdict,
    /// How long its answer took, in microseconds; `None` for inline
    /// notifiers (see [`JournalEntry::inline_ns`]).
    pub latency_us: Option<u64>,
}

/// How a consent round ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum RoundOutcome {
    /// Every notifier allowed; the state was committed.
    Committed,
    /// A notifier deferred (or was silent past its deadline).
    Deferred {
        /// The notifier that deferred.
        by: Arc<str>,
        /// Its reason.
        reason: String,
    },
    /// A notifier denied.
    Denied {
        /// The notifier that denied.
        by: Arc<str>,
        /// Its reason.
        reason: String,
    },
    /// Forced through despite the verdicts (shutdown cannot be vetoed;
    /// nor can an OTA entry past a spent deferral budget or at a security
    /// deadline).
    Forced,
}

/// Sent to `StateService`: send [`StateChanges`] to this recipient after
/// every commit, until it stops. No reply.
#[cfg(feature = "actor")]
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Observe(pub actix::Recipient<StateChanges>);

/// Sent by `StateService` to its observers: the transitions it applied
/// from one message, oldest first (a walk of inline notifiers makes many
/// in one turn of the Supervisor; they travel together). Each is what a
/// [`Changed`] would have said. No reply.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "()"))]
pub struct StateChanges(pub Arc<[Changed]>);

#[cfg(feature = "actor")]
impl fmt::Debug for Observe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Observe(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_follow_upstream() {
        assert_eq!(ALL_STATES.len(), 19);
        for (i, s) in ALL_STATES.iter().enumerate() {
            assert_eq!(usize::from(s.number()), i + 1);
            assert_eq!(SystemState::from_number(s.number()), Some(*s));
            assert_eq!(s.name().parse::<SystemState>(), Ok(*s));
        }
        assert_eq!(SystemState::TimeValid.number(), 8);
        assert_eq!(SystemState::Operational.number(), 15);
        assert_eq!(SystemState::ModalUpdating.number(), 19);
        assert_eq!(SystemState::from_number(0), None);
        assert_eq!(SystemState::from_number(20), None);
    }

    #[test]
    fn ordering_is_numeric() {
        assert!(SystemState::PolicyInvalid > SystemState::Operational);
        assert!(SystemState::ContextCreated < SystemState::PrePrivDrop);
        let mut sorted = ALL_STATES;
        sorted.sort();
        assert_eq!(sorted, ALL_STATES);
    }

    #[test]
    fn parse_accepts_any_case_and_upstream_prefix_but_nothing_else() {
        assert_eq!("operational".parse(), Ok(SystemState::Operational));
        assert_eq!("LWS_SYSTATE_DHCP".parse(), Ok(SystemState::Dhcp));
        assert!("DESTROYING".parse::<SystemState>().is_err());
        assert!("".parse::<SystemState>().is_err());
        assert!("LWS_SYSTATE_".parse::<SystemState>().is_err());
        assert!("é".parse::<SystemState>().is_err());
    }

    #[test]
    fn serde_uses_the_name() {
        let json = serde_json::to_string(&SystemState::CpdPreTime).unwrap();
        assert_eq!(json, "\"CPD_PRE_TIME\"");
        let back: SystemState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, SystemState::CpdPreTime);
        assert!(serde_json::from_str::<SystemState>("\"NOPE\"").is_err());
        assert!(serde_json::from_str::<SystemState>("8").is_err());
    }

    #[test]
    fn verdict_json_is_tagged() {
        let v = Verdict::defer("waiting for ntp");
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["verdict"], "defer");
        assert_eq!(json["reason"], "waiting for ntp");
        assert_eq!(
            serde_json::from_value::<Verdict>(serde_json::json!({"verdict": "allow"})).unwrap(),
            Verdict::Allow
        );
    }
}
