//! The lwsys service actors. Each file owns one service and its state; the
//! rest of the system reaches it only through typed messages from
//! `lwsys-messages`.
//!
//! # Layout
//! - [`state`]: `StateService`, the sole owner of the current system state,
//!   the consent journal, observers and waiters.
//! - [`trust`]: `TrustService`, just-in-time CA trust: the trust query op
//!   (`TrustQuery`), TBLB and cert-dir backends, the host cache and the
//!   rustls `JitVerifier`.
#![forbid(unsafe_code)]

pub mod state;
pub mod time;
pub mod trust;

pub use state::StateService;
pub use trust::TrustService;
