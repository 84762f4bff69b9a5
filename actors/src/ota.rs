//! OTA updates in the lws_ota model: the platform ops trait ([`OtaOps`]),
//! and the library pieces `OtaService` is built from.
//!
//! The flow, all blocking and meant for the service's own worker thread:
//! [`fetch::Fetcher::manifest`] -> [`manifest::verify_manifest`] ->
//! (consent, by the caller) -> [`pipeline::install`], which streams
//! HTTP -> gunzip -> SHA-512 -> [`OtaOps::write`] and calls
//! [`OtaOps::finalize`] only once the hash and size match.
//! [`slots::SlotDir`] is the default A/B platform; [`sign`] is the issuer's
//! side (`lwsysctl ota keygen` / `ota publish`).

pub mod fetch;
pub mod jwk;
pub mod manifest;
pub mod pipeline;
pub mod sign;
pub mod slots;

pub use fetch::{FetchConfig, Fetcher};
pub use jwk::{keygen, parse_private_jwk, parse_public_jwk};
pub use lwsys_messages::ota::{OtaError, OtaEvent, OtaPhase, OtaStatus, SlotStatus};
pub use manifest::{verify_manifest, Manifest, ManifestPolicy};
pub use pipeline::{check, check_and_install, install};
pub use sign::publish;
pub use slots::{Bootloader, SlotDir};

/// The platform's OTA operations (upstream's `lws_ota_ops_t`), called from
/// the OTA worker thread. The lead will move this trait to `platform.rs`.
pub trait OtaOps: Send {
    /// Opens the inactive slot for writing `m`'s image. The slot is marked
    /// bad before the first byte is written.
    fn start(&mut self, m: &Manifest) -> Result<(), OtaError>;
    /// Appends inflated image bytes.
    fn write(&mut self, chunk: &[u8]) -> Result<(), OtaError>;
    /// Drops a partly written image; the slot stays bad and unselected.
    fn abort(&mut self) -> Result<(), OtaError>;
    /// Called once size and hash are verified: make the image durable,
    /// mark the slot `trial` and select it.
    fn finalize(&mut self, m: &Manifest) -> Result<(), OtaError>;
    /// How the current boot looks: `false` confirms a trial, `true` marks
    /// the current slot bad and selects the other good one.
    fn report_current(&mut self, bad: bool) -> Result<(), OtaError>;
    /// Progress, for a display or a platform that cares.
    fn progress(&mut self, _phase: OtaPhase, _percent: u8) {}
    /// The last *confirmed* install's unixtime (0 if none).
    fn last_fw_unixtime(&self) -> u64;
    /// The newest release rolled back on this device (0 if none); it and
    /// older ones are not retried.
    fn rolled_back_unixtime(&self) -> u64 {
        0
    }
    /// Seconds between periodic checks.
    fn periodic_check_secs(&self) -> u64 {
        86_400
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testserver;
