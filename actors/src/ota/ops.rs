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

    // What chunked installs (a manifest with `chunks`) use to reuse and
    // resume. The defaults mean "not supported": nothing is reused, and
    // an interrupted install starts from zero; third-party platforms keep
    // compiling and working as before.

    /// Reads the running (active) slot's image at `offset` into `buf`;
    /// `Ok(0)` at its end. The default has no image to read (no reuse).
    fn read_active(&mut self, _offset: u64, _buf: &mut [u8]) -> Result<usize, OtaError> {
        Ok(0)
    }
    /// The chunk index saved for the active image by [`OtaOps::store_index`]
    /// (opaque bytes the installer checks), if any. A platform must drop
    /// it whenever that slot's image changes.
    fn load_index(&mut self) -> Option<Vec<u8>> {
        None
    }
    /// Saves `index` as the active image's chunk index (after a finalize,
    /// the new image's). Best effort: without it the next install hashes
    /// the active image once more.
    fn store_index(&mut self, _index: &[u8]) -> Result<(), OtaError> {
        Ok(())
    }
    /// Reads the image of `m` written so far by an interrupted install
    /// (before [`OtaOps::start_at`]) or this one (after
    /// [`OtaOps::checkpoint`]) at `offset`; `Ok(0)` at its end or if
    /// there is none. The installer re-hashes what it reads.
    fn read_partial(
        &mut self,
        _m: &Manifest,
        _offset: u64,
        _buf: &mut [u8],
    ) -> Result<usize, OtaError> {
        Ok(0)
    }
    /// As [`OtaOps::start`], but keeping the first `keep` bytes already
    /// written for `m` by an interrupted install; returns the bytes kept
    /// (the next write follows them). The default keeps nothing.
    fn start_at(&mut self, m: &Manifest, _keep: u64) -> Result<u64, OtaError> {
        self.start(m).map(|()| 0)
    }
    /// Makes what was written so far survive a kill of this process (not
    /// a power cut: no fsync needed), and readable by
    /// [`OtaOps::read_partial`]. Called after every chunk.
    fn checkpoint(&mut self) -> Result<(), OtaError> {
        Ok(())
    }
    /// Stops writing for now (a lost network, a cancel) keeping what was
    /// written for a later [`OtaOps::start_at`]. The default aborts.
    fn suspend(&mut self) -> Result<(), OtaError> {
        self.abort()
    }
}
