//! The lwsys service actors. Each file owns one service and its state; the
//! rest of the system reaches it only through typed messages from
//! `lwsys-messages`.
//!
//! # Layout
//! - [`state`]: `StateService`, the sole owner of the current system state,
//!   the consent journal, observers and waiters.
//! - [`attach`]: `AttachService` and `AttachHandle`, callbacks from foreign
//!   threads run on the loop once a state is reached.
#![forbid(unsafe_code)]

pub mod attach;
pub mod state;
pub mod time;

pub use attach::{AttachCtx, AttachHandle, AttachService, AttachTicket};
pub use state::StateService;
