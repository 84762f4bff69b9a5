//! The lwsys service actors. Each file owns one service and its state; the
//! rest of the system reaches it only through typed messages from
//! `lwsys-messages`.
//!
//! # Layout
//! - [`state`]: `StateService`, the sole owner of the current system state,
//!   the consent journal, observers and waiters.
//! - [`clock`]: `ClockService`, which holds TIME_VALID until the time is
//!   known (host clock, SNTP or `clock.set`), with the clock ops, the soft
//!   clock and the SNTP client.
#![forbid(unsafe_code)]

pub mod clock;
pub mod state;
pub mod time;

pub use clock::ClockService;
pub use state::StateService;
