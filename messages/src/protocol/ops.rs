//! The one table of the protocol's ops: each op's wire name, the role it
//! needs, and its typed parameters. The [`Op`] and [`Request`] enums are
//! both generated from it, so an op name is spelled once.

use std::sync::LazyLock;

use serde::Serialize;

use crate::blobs::BlobKind;
use crate::state::{SystemState, Verdict};

use super::params::BlobData;
use super::Topic;

/// What a client must be to run an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any client that may connect: the op changes nothing and reveals no
    /// secret (`blob.get` of a secret kind is checked where it is served).
    Read,
    /// An admin: the op changes something.
    Admin,
}

/// An op's row in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpInfo {
    /// The op.
    pub op: Op,
    /// Its wire name.
    pub name: &'static str,
    /// Who may run it.
    pub access: Access,
    /// Whether it is a hidden test hook (see [`Op::is_hidden`]).
    pub hidden: bool,
}

macro_rules! ops {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $name:literal, $access:ident, $hidden:literal {
            $( $(#[$fattr:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    )*) => {
        /// An op of the control protocol, without its parameters.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Op {
            $( $(#[$doc])* $variant, )*
        }

        /// Every op with its wire name and the role it needs.
        pub const OP_TABLE: &[OpInfo] = &[
            $( OpInfo { op: Op::$variant, name: $name, access: Access::$access, hidden: $hidden }, )*
        ];

        impl Op {
            /// The wire name, such as `"blob.set"`.
            pub const fn name(self) -> &'static str {
                match self { $( Op::$variant => $name, )* }
            }

            /// Who may run it.
            pub const fn access(self) -> Access {
                match self { $( Op::$variant => Access::$access, )* }
            }

            /// Whether it is a test hook that exists only when the daemon
            /// runs with fault injection on (`debug.crash`); it is not
            /// documented and is `unknown_op` otherwise.
            pub const fn is_hidden(self) -> bool {
                match self { $( Op::$variant => $hidden, )* }
            }

            /// The op named `name` on the wire, if there is one.
            pub fn from_name(name: &str) -> Option<Op> {
                match name { $( $name => Some(Op::$variant), )* _ => None }
            }
        }

        /// One request of the control protocol: the op and its typed
        /// parameters (DESIGN §5). On the wire it is an object with an
        /// `"op"` member naming the variant and one member per field; the
        /// client's `id` travels beside it (see [`Envelope`](super::Envelope)).
        ///
        /// Serialized with serde; decoded by
        /// [`decode_request`](super::decode_request) (or its
        /// `Deserialize`), which checks each parameter with a clear message.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(tag = "op")]
        pub enum Request {
            $(
                $(#[$doc])*
                #[serde(rename = $name)]
                $variant {
                    $( $(#[$fattr])* $field: $ty, )*
                },
            )*
        }

        impl Request {
            /// Its op.
            pub fn op(&self) -> Op {
                match self { $( Request::$variant { .. } => Op::$variant, )* }
            }
        }
    };
}

ops! {
    /// `hello`: version, protocol and state.
    Hello = "hello", Read, false {}
    /// `state.get`: the current state and since when.
    StateGet = "state.get", Read, false {}
    /// `state.steps {target}`: walk one state at a time to `target`.
    StateSteps = "state.steps", Admin, false {
        /// The state to reach.
        target: SystemState,
    }
    /// `state.jump {target}`: one transition to `target`.
    StateJump = "state.jump", Admin, false {
        /// The state to enter.
        target: SystemState,
    }
    /// `state.wait {state, timeout_ms?}`: answer once at or past `state`.
    StateWait = "state.wait", Read, false {
        /// The state to wait for.
        state: SystemState,
        /// How long to wait at most, in milliseconds (none: no limit).
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    }
    /// `state.explain`: why the system is where it is.
    StateExplain = "state.explain", Read, false {}
    /// `state.policy_invalidate`: the policy-invalidate cycle.
    StatePolicyInvalidate = "state.policy_invalidate", Admin, false {}
    /// `state.enter_modal`: enter MODAL_UPDATING.
    StateEnterModal = "state.enter_modal", Admin, false {}
    /// `state.leave_modal`: back to OPERATIONAL.
    StateLeaveModal = "state.leave_modal", Admin, false {}
    /// `notifier.register {name}`: make this connection a notifier.
    NotifierRegister = "notifier.register", Admin, false {
        /// The notifier's name, unique among notifiers.
        name: String,
    }
    /// `notifier.resume {name}`: continue the walk `name` deferred.
    NotifierResume = "notifier.resume", Admin, false {
        /// The notifier that deferred.
        name: String,
    }
    /// `notifier.unregister {name}`: remove a notifier.
    NotifierUnregister = "notifier.unregister", Admin, false {
        /// The notifier to remove.
        name: String,
    }
    /// `consent.reply {ticket, verdict, reason?}`: answer a consent event.
    ConsentReply = "consent.reply", Admin, false {
        /// The ticket of the `consent` event answered.
        ticket: u64,
        /// The answer; on the wire `verdict` and, for defer and deny,
        /// `reason`.
        #[serde(flatten)]
        verdict: Verdict,
    }
    /// `subscribe {events}`: push events of these topics.
    Subscribe = "subscribe", Read, false {
        /// The topics to add.
        events: Vec<Topic>,
    }
    /// `blob.set {kind, idx?, data | data_b64}`: replace a blob.
    BlobSet = "blob.set", Admin, false {
        /// The blob's kind.
        kind: BlobKind,
        /// Its slot (default 0).
        #[serde(skip_serializing_if = "Option::is_none")]
        idx: Option<u64>,
        /// The bytes.
        #[serde(flatten)]
        data: BlobData,
    }
    /// `blob.append {kind, idx?, data | data_b64}`: append to a blob.
    BlobAppend = "blob.append", Admin, false {
        /// The blob's kind.
        kind: BlobKind,
        /// Its slot (default 0).
        #[serde(skip_serializing_if = "Option::is_none")]
        idx: Option<u64>,
        /// The bytes.
        #[serde(flatten)]
        data: BlobData,
    }
    /// `blob.empty {kind, idx?}`: empty a blob.
    BlobEmpty = "blob.empty", Admin, false {
        /// The blob's kind.
        kind: BlobKind,
        /// Its slot (default 0).
        #[serde(skip_serializing_if = "Option::is_none")]
        idx: Option<u64>,
    }
    /// `blob.get {kind, idx?, offset?, len?}`: read a blob.
    BlobGet = "blob.get", Read, false {
        /// The blob's kind.
        kind: BlobKind,
        /// Its slot (default 0).
        #[serde(skip_serializing_if = "Option::is_none")]
        idx: Option<u64>,
        /// Where to start reading (default 0).
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// How many bytes to read at most (default: to the end).
        #[serde(skip_serializing_if = "Option::is_none")]
        len: Option<u64>,
    }
    /// `blob.size {kind, idx?}`: a blob's size.
    BlobSize = "blob.size", Read, false {
        /// The blob's kind.
        kind: BlobKind,
        /// Its slot (default 0).
        #[serde(skip_serializing_if = "Option::is_none")]
        idx: Option<u64>,
    }
    /// `blob.destroy {kind, idx?}`: destroy a blob, durable copy included.
    BlobDestroy = "blob.destroy", Admin, false {
        /// The blob's kind.
        kind: BlobKind,
        /// Its slot (default 0).
        #[serde(skip_serializing_if = "Option::is_none")]
        idx: Option<u64>,
    }
    /// `attach {state, request}`: run `request` once at or past `state`.
    Attach = "attach", Read, false {
        /// The state at or past which the request runs.
        state: SystemState,
        /// The request to run then.
        request: Box<Request>,
    }
    /// `clock.get`: read the clock service.
    ClockGet = "clock.get", Read, false {}
    /// `clock.set {unix_us}`: set the time.
    ClockSet = "clock.set", Admin, false {
        /// The time, in Unix microseconds.
        unix_us: u64,
    }
    /// `trust.query {skid}`: the trusted CAs with this SKID (hex).
    TrustQuery = "trust.query", Read, false {
        /// The Subject Key Identifier in hex (pairs may be separated by `:`).
        skid: String,
    }
    /// `ota.status`: the OTA service's status.
    OtaStatus = "ota.status", Read, false {}
    /// `ota.check`: check for a release now.
    OtaCheck = "ota.check", Admin, false {}
    /// `ota.report_current {bad}`: confirm or reject the running slot.
    OtaReportCurrent = "ota.report_current", Admin, false {
        /// Whether the running slot is bad (true) or confirmed (false).
        bad: bool,
    }
    /// `system.info`: the daemon's figures.
    SystemInfo = "system.info", Read, false {}
    /// `system.reboot`: reboot through CONTEXT_DESTROYING.
    SystemReboot = "system.reboot", Admin, false {}
    /// `system.shutdown`: shut the daemon down.
    SystemShutdown = "system.shutdown", Admin, false {}
    /// `debug.crash {service}`: make a service panic (fault injection only).
    DebugCrash = "debug.crash", Admin, true {
        /// `blobs`, `clock`, `trust` or `ota`.
        service: String,
    }
}

impl Op {
    /// Whether it changes something and so needs an admin.
    pub const fn needs_admin(self) -> bool {
        matches!(self.access(), Access::Admin)
    }
}

/// The names of every documented op, in table order (hidden test hooks
/// left out). `docs/protocol.md` documents each (a test checks).
pub static OPS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| OP_TABLE.iter().filter(|o| !o.hidden).map(|o| o.name).collect());
