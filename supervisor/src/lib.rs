#![doc = include_str!("../../README.md")]
//! # The library
//!
//! The consent engine and its wiring. The client, `lwsysctl`, is the
//! separate crate `lwsys-ctl` (`ctl/`): it links none of this.
//!
//! ## Layout
//! - [`supervisor`]: the `Supervisor` actor (notifier registry, transition
//!   queue, consent rounds, service restarts).
//! - [`consent`]: the consent round as a plain state machine (no actix).
//! - [`supervision`]: restart limits and the `Supervised` trait services
//!   implement.
//! - [`notifier`]: inline notifiers, build-time notifier specs, actor
//!   registrations.
//! - [`config`]: the `lwsysd` command line and TOML config, and the one
//!   mapping from it to each component's settings.
//! - [`control`]: the JSON-lines control server, one session per client.
//! - [`daemon`]: the `lwsysd` runner: sockets, signals, orderly exit.
//! - [`fdlimit`]: the open-file limit and how many clients fit in it.
//! - [`logging`]: slog to stderr, term or JSON.
//! - [`builder`]: `Builder`, the context-creation info (notifiers seen from
//!   the first transition, timing, boot target).
//! - [`systemd`]: sd_notify for `Type=notify` units.
//! - [`services`]: the blob, clock, trust and OTA services of a full
//!   system, their settings, and how they are started and restarted.
//! - [`handle`]: `SystemHandle`, the cloneable way in from any thread.
//!
//! Imports go one way: `config` and `daemon` at the top; `builder` over
//! `handle`, `services` and `supervisor`; those over `notifier`,
//! `supervision` and `consent`, which import no module of this crate.
#![forbid(unsafe_code)]

pub mod builder;
pub mod config;
pub mod consent;
pub mod control;
pub mod daemon;
pub mod fdlimit;
pub mod fleet;
pub mod handle;
pub mod journal;
pub mod logging;
pub mod notifier;
pub mod services;
pub mod supervision;
pub mod supervisor;
pub mod systemd;

#[cfg(test)]
mod system_tests;

pub use builder::{Builder, NotifierSpec};
pub use handle::{Error, SystemHandle};
pub use lwsys_messages as messages;
pub use supervisor::{InlineNotifier, Supervisor, SupervisorConfig};
