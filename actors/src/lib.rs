//! The lwsys service actors. Each file owns one service and its state; the
//! rest of the system reaches it only through typed messages from
//! `lwsys-messages`.
//!
//! # Layout
//! - [`state`]: `StateService`, the sole owner of the current system state,
//!   the consent journal, observers and waiters.
//! - [`ota`]: signed manifests, the streaming download pipeline, the
//!   `OtaOps` trait and the default A/B `SlotDir` platform.
#![forbid(unsafe_code)]

pub mod ota;
pub mod state;
pub mod time;

pub use state::StateService;
