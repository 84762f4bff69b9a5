//! Plain data shared by every part of lwsys: system states, verdicts, the
//! service messages and the JSON control protocol's types.
//!
//! # Layout
//! - [`blobs`]: [`BlobKind`], [`BlobError`] and the messages of the system
//!   blobs (`SetBlob`, `AppendBlob`, `GetBlob`, ...).
//! - [`state`]: [`SystemState`], [`Verdict`] and the messages of the state
//!   machine (`Consent`, `Changed`, `Aborted`, `Resume`, `Commit`, ...).
//! - [`supervisor`]: requests to the `Supervisor` (walks, cycles, shutdown,
//!   the notifier registry, explanations) and the events it pushes.
//! - [`protocol`]: the control protocol's wire types: the op table and
//!   typed requests, their decoding, replies, events and error codes.
//! - [`trust`]: the trust service's messages (`QueryTrust`, `GetTrustInfo`),
//!   its answers (`TrustedCerts`, `TrustInfo`) and `TrustError`.
//! - [`lifecycle`]: service supervision (`ServiceDied`, `WatchDeath`, the
//!   `Crash` fault hook).
//! - [`error`]: [`ErrorCode`], the protocol's error codes every service
//!   error maps to.
//! - [`clock`]: reading and setting the time, `clock` events and errors.
//! - [`ota`]: OTA status, progress events, `CheckOta`, `ReportCurrent`,
//!   `GetOtaStatus` and `OtaError`.
//! - [`attach`]: the foreign-thread attach service's error, statistics and
//!   messages (`GetAttachStats`, `SetSystem`).
//! - [`fleet`]: the fleet's MQTT topics, name rules and payloads.
//! - [`socket`]: where the control socket is, the rules both `lwsysd` and
//!   `lwsysctl` read.
//!
//! This crate has no behaviour and no I/O (the [`socket`] rules take the
//! environment and the file system as closures). With the `actor` feature the
//! service messages also implement `actix::Message`.
#![forbid(unsafe_code)]

pub mod attach;
pub mod blobs;
pub mod clock;
pub mod error;
pub mod fleet;
pub mod lifecycle;
pub mod ota;
pub mod protocol;
pub mod socket;
pub mod state;
pub mod trust;

pub use attach::{AttachError, AttachStats, GetAttachStats};
pub use blobs::{BlobError, BlobId, BlobKind};
#[cfg(feature = "actor")]
pub use clock::SubscribeClock;
pub use clock::{ClockError, ClockEvent, ClockReading, ClockSource, GetClock, SetClock};
pub use error::ErrorCode;
pub use ota::{OtaError, OtaEvent, OtaPhase, OtaStatus, SlotStatus};
#[cfg(feature = "actor")]
pub use state::Observe;
pub use state::{
    Aborted, Changed, Commit, CommitRefused, CommitRound, CommitRounds, Consent, GetState,
    JournalEntry, NotifierVerdict, Resume, RoundOutcome, StateChanges, StateReading, SystemState,
    Verdict, WaitFor, WaitTimedOut, ALL_STATES,
};
pub mod supervisor;
