//! Messages to the `Supervisor`: transition requests, the notifier registry,
//! explanations and event subscriptions.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::state::{JournalEntry, SystemState};
use crate::ErrorCode;

/// Walk one state at a time to `target` (lws_state_transition_steps); a
/// no-op when the current state is at or past it. Sent by the
/// `SystemHandle` and the control server; answered when the walk settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "WalkResult"))]
pub struct Steps {
    /// The state to reach.
    pub target: SystemState,
}

/// One atomic transition to `target` (lws_state_transition): consent is
/// asked once for (current, target). Answered when it settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "WalkResult"))]
pub struct Jump {
    /// The state to enter.
    pub target: SystemState,
}

/// The built-in cycles of DESIGN §3. Answered when the last step settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "WalkResult"))]
pub enum Cycle {
    /// Jump POLICY_INVALID, jump INITIALIZED, steps OPERATIONAL.
    PolicyInvalidate,
    /// Jump AWAITING_MODAL_UPDATING, jump MODAL_UPDATING.
    EnterModal,
    /// Jump OPERATIONAL.
    LeaveModal,
    /// As `EnterModal`, but a `Defer` (or a consent timeout) does not stop
    /// it: the notifiers are asked and told, and only a `Deny` stops it.
    /// The OTA service sends it once a release's deferral budget is spent.
    EnterModalPastDefer,
    /// As `EnterModal`, but no verdict stops it: the notifiers are asked
    /// (each may hold it up to its consent timeout) and told. The OTA
    /// service sends it for a security release at its deadline.
    ForceModal,
    /// A health round at OPERATIONAL: every notifier is asked consent for
    /// OPERATIONAL -> OPERATIONAL (a socket notifier sees `check:
    /// "health"`) and nothing changes. `reached`: all allowed (healthy);
    /// `pending`: who deferred (not yet; the walk is not parked); an error
    /// `Denied`: who found the system unhealthy. Not at OPERATIONAL:
    /// `reached: false`, nobody asked. The OTA service sends it before
    /// confirming a trial boot.
    HealthCheck,
}

/// Shut the system down: a forced jump to CONTEXT_DESTROYING (notifiers are
/// asked and told, but cannot veto; the whole pass is bounded by the grace
/// period). Answered once CONTEXT_DESTROYING is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "WalkResult"))]
pub struct Shutdown;

/// Where a settled walk left the system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkReport {
    /// The state the system is in now.
    pub state: SystemState,
    /// Whether the requested target was reached.
    pub reached: bool,
    /// Who holds the walk and why, when a notifier deferred it.
    pub pending: Option<Pending>,
}

/// A notifier holding a walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The notifier that deferred.
    pub by: Arc<str>,
    /// Its reason (`"timeout"` for silence).
    pub reason: String,
    /// The transition it holds.
    pub target: SystemState,
    /// Since when, in Unix microseconds.
    pub since_us: u64,
}

/// Why a walk request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    /// A notifier denied a transition.
    #[error("{by} denied the transition to {target}: {reason}")]
    Denied {
        /// The notifier that denied.
        by: Arc<str>,
        /// Its reason.
        reason: String,
        /// The transition refused.
        target: SystemState,
        /// The state the system stays in.
        state: SystemState,
    },
    /// The system is shutting down; the request was dropped.
    #[error("the system is shutting down")]
    ShuttingDown,
    /// The supervisor or state service is gone.
    #[error("internal error: {0}")]
    Internal(String),
}

impl WalkError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Denied { .. } => ErrorCode::Denied,
            Self::ShuttingDown => ErrorCode::Busy,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// The answer to a walk request.
pub type WalkResult = Result<WalkReport, WalkError>;

/// Longest notifier name, in bytes.
pub const MAX_NOTIFIER_NAME: usize = 64;

/// Longest reason a control-protocol notifier may give with a verdict, in
/// bytes: reasons are kept in the journal, so their size bounds its memory.
pub const MAX_REASON: usize = 256;

/// Whether `name` may name a notifier: 1 to [`MAX_NOTIFIER_NAME`] bytes of
/// ASCII letters, digits and `_ - . : @`. Names appear in logs, events,
/// `lwsysctl` tables and MQTT topics, so nothing in them may need quoting.
pub fn is_valid_notifier_name(name: &str) -> bool {
    (1..=MAX_NOTIFIER_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:@".contains(&b))
}

/// Whether `reason` may be given with a verdict: at most [`MAX_REASON`]
/// bytes and no control characters (it is shown in terminals and logs).
pub fn is_valid_reason(reason: &str) -> bool {
    reason.len() <= MAX_REASON && !reason.chars().any(char::is_control)
}

/// The first [`MAX_NOTIFIER_NAME`] bytes of a client-chosen string (cut at
/// a character boundary, with `…` when cut), for error messages that quote
/// it: a reply never echoes an unbounded string.
pub fn preview(s: &str) -> String {
    if s.len() <= MAX_NOTIFIER_NAME {
        return s.to_owned();
    }
    let mut end = MAX_NOTIFIER_NAME;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A notifier registry error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifierError {
    /// The name is taken by a live notifier.
    #[error("a notifier named {0:?} is already registered")]
    Duplicate(String),
    /// The name is empty, too long, or has a character outside the
    /// allowed set (see [`is_valid_notifier_name`]); holds a [`preview`].
    #[error("bad notifier name {0:?}: 1 to 64 bytes of ASCII letters, digits and _ - . : @")]
    BadName(String),
    /// No notifier has that name.
    #[error("no notifier named {0:?}")]
    NotFound(String),
}

impl NotifierError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Duplicate(_) | Self::BadName(_) => ErrorCode::BadRequest,
            Self::NotFound(_) => ErrorCode::NotFound,
        }
    }
}

/// Remove the notifier named `name`; a walk it holds continues. Replies
/// `NotFound` when there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "Result<(), NotifierError>"))]
pub struct Unregister {
    /// The notifier's name.
    pub name: String,
}

/// Ask the `Supervisor` why the system is where it is: the current state,
/// the walks held by notifiers, and the journal of recent consent rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "Explanation"))]
pub struct Explain;

/// The answer to [`Explain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The current state.
    pub state: SystemState,
    /// When it was entered, in Unix microseconds.
    pub since_us: u64,
    /// The walk currently held by a notifier, if any (the oldest first when
    /// several are parked).
    pub pending: Option<Pending>,
    /// Every parked walk.
    pub parked: Vec<Pending>,
    /// Recent consent rounds, oldest first.
    pub journal: Vec<JournalEntry>,
}

/// Ask the `Supervisor` for its registry: the notifiers' names and kinds in
/// consent order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "Vec<NotifierInfo>"))]
pub struct ListNotifiers;

/// One registered notifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifierInfo {
    /// Its name.
    pub name: Arc<str>,
    /// What kind of party it is.
    pub kind: NotifierKind,
}

/// What kind of party a notifier is; on the wire, its snake_case name
/// (`"builtin"`, `"inline"`, `"actor"`, `"connection"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifierKind {
    /// A service of the system itself, such as the clock.
    Builtin,
    /// A closure run on the supervisor's thread.
    Inline,
    /// An actor asked by message.
    Actor,
    /// A control-protocol client.
    Connection,
}

impl NotifierKind {
    /// The name used on the wire and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Builtin => "builtin",
            Self::Inline => "inline",
            Self::Actor => "actor",
            Self::Connection => "connection",
        }
    }
}

impl std::fmt::Display for NotifierKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A supervised service of a full system; on the wire and in logs, its
/// snake_case name (`"blobs"`, `"clock"`, `"trust"`, `"ota"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// The system blobs.
    Blobs,
    /// The clock (also a notifier).
    Clock,
    /// The CA trust store.
    Trust,
    /// OTA updates.
    Ota,
}

impl ServiceKind {
    /// Every kind, in the order services are started and listed.
    pub const ALL: [Self; 4] = [Self::Blobs, Self::Clock, Self::Trust, Self::Ota];

    /// The name used on the wire and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Blobs => "blobs",
            Self::Clock => "clock",
            Self::Trust => "trust",
            Self::Ota => "ota",
        }
    }

    /// The kind named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What happened to a notifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifierEventKind {
    /// It joined the registry.
    Registered,
    /// It left (asked to, or its actor or connection went away).
    Unregistered,
    /// It did not answer a consent request in time.
    Timeout,
}

/// Register an actor as a notifier under `name`: it is asked for
/// [`Consent`](crate::state::Consent) before every transition (in
/// registration order), told [`Changed`](crate::state::Changed) after
/// each, and [`Aborted`](crate::state::Aborted) when a transition it allowed
/// was not made. Replies with the notifier's registry id.
#[cfg(feature = "actor")]
#[derive(actix::Message)]
#[rtype(result = "Result<u64, NotifierError>")]
pub struct RegisterNotifier {
    /// A unique name, 1 to 64 bytes.
    pub name: String,
    /// Asked before every transition.
    pub consent: actix::Recipient<crate::state::Consent>,
    /// Told after every transition.
    pub changed: actix::Recipient<crate::state::Changed>,
    /// Told when a transition it allowed was not made.
    pub aborted: actix::Recipient<crate::state::Aborted>,
    /// What kind of party this is, for explanations (an actor or a
    /// connection).
    pub kind: NotifierKind,
}

#[cfg(feature = "actor")]
impl std::fmt::Debug for RegisterNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterNotifier")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_keep_their_wire_names() {
        let notifiers = [
            (NotifierKind::Builtin, "\"builtin\""),
            (NotifierKind::Inline, "\"inline\""),
            (NotifierKind::Actor, "\"actor\""),
            (NotifierKind::Connection, "\"connection\""),
        ];
        for (k, wire) in notifiers {
            assert_eq!(serde_json::to_string(&k).ok().as_deref(), Some(wire));
            assert_eq!(format!("\"{k}\""), wire);
        }
        let info = NotifierInfo { name: Arc::from("w"), kind: NotifierKind::Connection };
        assert_eq!(
            serde_json::to_string(&info).ok().as_deref(),
            Some(r#"{"name":"w","kind":"connection"}"#)
        );
        for k in ServiceKind::ALL {
            let wire = serde_json::to_string(&k).ok();
            assert_eq!(wire, Some(format!("\"{}\"", k.name())));
            assert_eq!(ServiceKind::from_name(k.name()), Some(k));
        }
        assert_eq!(ServiceKind::ALL.map(ServiceKind::name), ["blobs", "clock", "trust", "ota"]);
        assert_eq!(ServiceKind::from_name("attach"), None);
    }
}
