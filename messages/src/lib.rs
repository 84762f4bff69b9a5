//! Plain data shared by every part of lwsys: system states, verdicts, the
//! service messages and the JSON control protocol's types.
//!
//! # Layout
//! - [`state`]: [`SystemState`], [`Verdict`] and the messages of the state
//!   machine (`Consent`, `Changed`, `Aborted`, `Resume`, `Commit`, ...).
//! - [`protocol`]: the control protocol's error codes and framing constants.
//! - [`attach`]: the foreign-thread attach service's error, statistics and
//!   messages (`GetAttachStats`, `SetSystem`).
//!
//! This crate has no behaviour and no I/O. With the `actor` feature the
//! service messages also implement `actix::Message`.
#![forbid(unsafe_code)]

pub mod attach;
pub mod protocol;
pub mod state;

pub use attach::{AttachError, AttachStats, GetAttachStats};
pub use protocol::ErrorCode;
#[cfg(feature = "actor")]
pub use state::Observe;
pub use state::{
    Aborted, Changed, Commit, CommitRefused, Consent, GetJournal, GetState, Journal, JournalEntry,
    NotifierVerdict, RecordRound, Resume, RoundOutcome, StateReading, SystemState, Verdict,
    WaitFor, WaitTimedOut, ALL_STATES,
};
