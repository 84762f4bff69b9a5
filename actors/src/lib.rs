//! The lwsys service actors. Each file owns one service and its state; the
//! rest of the system reaches it only through typed messages from
//! `lwsys-messages`.
//!
//! # Layout
//! - [`blobs`]: `BlobService`, the sole owner of the system blobs, with the
//!   pure lws blob model in [`blobs::model`].
//! - [`store`]: `Store`, the durable store (a directory of files, one per key) in the state directory,
//!   shared by the services that keep state across restarts; `store/file.rs`
//!   makes the state dir's private files (0600, `O_NOFOLLOW`) and dirs.
//! - [`state`]: `StateService`, the sole owner of the current system state,
//!   the consent journal, observers and waiters.
//! - [`trust`]: `TrustService`, just-in-time CA trust: the trust query op
//!   (`TrustQuery`), TBLB and cert-dir backends, the host cache and the
//!   rustls `JitVerifier`.
//! - [`clock`]: `ClockService`, which holds TIME_VALID until the time is
//!   known (host clock, SNTP or `clock.set`), with the clock ops, the soft
//!   clock and the SNTP client.
//! - [`ota`]: `OtaService` (scheduled checks, consent via MODAL_UPDATING,
//!   install on its worker thread, trial confirm, reboot), signed
//!   manifests, the streaming download pipeline, the `OtaOps` trait and the
//!   default A/B `SlotDir` platform.
//! - [`attach`]: `AttachService` and `AttachHandle`, callbacks from foreign
//!   threads run on the loop once a state is reached.
//! - [`platform`]: the platform ops (`SystemOps`, `ClockOps`, `TrustQuery`,
//!   `OtaOps`), their default Linux implementations, and `Ops`, what a
//!   running system provides.
//! - [`lifecycle`]: `DeathNotice`, how a supervised service reports that
//!   it is gone.
//! - [`logsafe`]: `LogSafe`, client-chosen text escaped for log lines.
#![forbid(unsafe_code)]

pub mod attach;
pub mod blobs;
pub mod clock;
pub mod lifecycle;
pub mod logsafe;
pub mod ota;
pub mod platform;
pub mod state;
pub mod store;
pub mod time;
pub mod trust;

pub use attach::{AttachCtx, AttachHandle, AttachService, AttachTicket};
pub use blobs::BlobService;
pub use clock::ClockService;
pub use logsafe::LogSafe;
pub use state::{StatePublisher, StateService};
pub use store::Store;
pub use trust::TrustService;
