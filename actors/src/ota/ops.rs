//! The `OtaOps` platform trait (upstream's `lws_ota_ops_t`); the lead
//! moves it to `platform.rs`.

use lwsys_messages::ota::{OtaError, OtaPhase, OtaStatus, RollbackRecord};

use super::Manifest;

/// The platform's OTA operations (upstream's `lws_ota_ops_t`), called from
/// the OTA worker thread. The lead will move this trait to `platform.rs`.
pub trait OtaOps: Send {
    /// Called once per boot, before anything else (trial boot counting and
    /// rollback on the default platform).
    fn on_boot(&mut self) -> Result<(), OtaError> {
        Ok(())
    }
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
    /// Rolls a trial boot back for `reason` (a failed health check, the
    /// confirm deadline): marks it bad, selects the previous good slot and
    /// records `reason` durably where `ota.status` shows it. The default
    /// is `report_current(true)`, for platforms that keep no reasons.
    fn roll_back(&mut self, reason: RollbackRecord) -> Result<(), OtaError> {
        let _ = reason;
        self.report_current(true)
    }
    /// Progress, for a display or a platform that cares.
    fn progress(&mut self, _phase: OtaPhase, _percent: u8) {}
    /// The last *confirmed* install's unixtime (0 if none).
    fn last_fw_unixtime(&self) -> u64;
    /// The newest release rolled back on this device (0 if none); it and
    /// older ones are not retried.
    fn rolled_back_unixtime(&self) -> u64 {
        0
    }
    /// The slots part of `ota.status` (slots, selection, unixtimes).
    fn status(&self) -> OtaStatus {
        OtaStatus::default()
    }
    /// Seconds between periodic checks.
    fn periodic_check_secs(&self) -> u64 {
        86_400
    }
}
