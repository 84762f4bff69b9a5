//! `SlotDir`, the default A/B OTA platform: two slot directories, a
//! crash-safe JSON state file, trial boots and rollback.
//!
//! # On disk
//! Under `<state-dir>/ota/`:
//! - `a/image`, `b/image`: the slot images (`a` holds the factory image,
//!   which may be absent: it is whatever runs now).
//! - `<slot>/image.partial`: an image being written; never selected, and
//!   removed when the directory is reopened, unless the chunked-install
//!   journal (`install.json`, [`super::journal`]) names the release the
//!   slot's record says is being written there: then it is kept for a
//!   resume, which re-hashes it before keeping a byte ([`super::chunked`]).
//! - `<slot>/image.idx`: the chunk index of that slot's image (see
//!   [`super::chunked`]), removed before the slot is written again.
//! - `state.json`: [`SlotState`], replaced atomically: written to
//!   `state.json.tmp`, fsynced, renamed over `state.json`, and the
//!   directory fsynced. A crash leaves either the old or the new state.
//!
//! # Invariants
//! The selected slot is always `good` or `trial`, and a `trial` slot's
//! image was verified before it was selected. The slot being written is
//! marked `bad` (durably) before its first byte, and becomes `trial` and
//! selected only in [`OtaOps::finalize`], after the image is fsynced and
//! renamed into place.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use lwsys_messages::ota::{OtaError, OtaStatus, SlotInfo, SlotStatus};
use serde::{Deserialize, Serialize};

use super::{Manifest, OtaOps};

mod bootloader;
mod chunked;

pub use bootloader::Bootloader;

/// The slot names, in index order.
pub const SLOT_NAMES: [&str; 2] = ["a", "b"];

/// One slot's durable record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SlotRecord {
    /// Its health.
    pub status: SlotStatus,
    /// The release written there (0: factory or none).
    pub unixtime: u64,
}

/// The durable state of the slots (`state.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotState {
    /// Format version, 1.
    pub version: u32,
    /// The slot to boot next: `a` or `b`.
    pub selected: String,
    /// Records of `a` and `b`.
    pub slots: [SlotRecord; 2],
    /// Boots of the selected trial slot so far without confirmation.
    pub boot_attempts: u32,
    /// The last release written and selected as a trial.
    pub attempted_unixtime: u64,
    /// The last release confirmed good.
    pub confirmed_unixtime: u64,
    /// The newest release rolled back; not retried.
    pub rolled_back_unixtime: u64,
    /// Why the last rollback happened.
    pub last_rollback_reason: Option<String>,
    /// The slot last handed to the bootloader hook.
    pub bootloader_slot: Option<String>,
}

impl Default for SlotState {
    /// A fresh device: the running (factory) image is a good `a`.
    fn default() -> Self {
        Self {
            version: 1,
            selected: "a".into(),
            slots: [SlotRecord { status: SlotStatus::Good, unixtime: 0 }, SlotRecord::default()],
            boot_attempts: 0,
            attempted_unixtime: 0,
            confirmed_unixtime: 0,
            rolled_back_unixtime: 0,
            last_rollback_reason: None,
            bootloader_slot: None,
        }
    }
}

impl SlotState {
    /// Index of the selected slot.
    pub fn selected_index(&self) -> usize {
        usize::from(self.selected == "b")
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> OtaError {
    OtaError::Io(format!("{what} {}: {e}", path.display()))
}

/// Creates (or truncates) a file in the slot dir: 0600 whatever the umask
/// (set again through the fd, for a stale file left with another mode) and
/// never through a symlink, since images and state may hold secrets.
fn create_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::store::PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(crate::store::PRIVATE_FILE_MODE))?;
    Ok(f)
}

fn sync_dir(dir: &Path) -> Result<(), OtaError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("fsync", dir, e))
}

/// The default A/B slot platform.
pub struct SlotDir {
    dir: PathBuf,
    state: SlotState,
    writing: Option<(usize, BufWriter<File>)>,
    max_boot_attempts: u32,
    periodic_check_secs: u64,
    bootloader: Bootloader,
    log: slog::Logger,
    /// Test hook: fail (as a power cut would stop) at this step number.
    crash_at: Option<u32>,
    steps: u32,
}

impl SlotDir {
    /// Opens (creating if need be) the slots under `<state_dir>/ota/`,
    /// dropping any leftover `.partial` image and state temp file.
    pub fn open(state_dir: &Path, log: &slog::Logger) -> Result<Self, OtaError> {
        let dir = state_dir.join("ota");
        for name in SLOT_NAMES {
            let d = dir.join(name);
            crate::store::create_private_dir(&d).map_err(|e| io("create", &d, e))?;
        }
        let _ = fs::remove_file(dir.join("state.json.tmp"));
        let path = dir.join("state.json");
        let state = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<SlotState>(&bytes)
                .map_err(|e| OtaError::Io(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SlotState::default(),
            Err(e) => return Err(io("read", &path, e)),
        };
        if !SLOT_NAMES.contains(&state.selected.as_str()) {
            return Err(OtaError::Io(format!(
                "{}: selected slot {:?} unknown",
                path.display(),
                state.selected
            )));
        }
        chunked::drop_unfinished(&dir, &state, log)?;
        Ok(Self {
            dir,
            state,
            writing: None,
            max_boot_attempts: 3,
            periodic_check_secs: 86_400,
            bootloader: Bootloader::record_only(),
            log: log.new(slog::o!("service" => "ota")),
            crash_at: None,
            steps: 0,
        })
    }

    /// Unconfirmed boots of a trial before it is rolled back (default 3).
    pub fn with_max_boot_attempts(mut self, n: u32) -> Self {
        self.max_boot_attempts = n;
        self
    }

    /// The bootloader hook (default: record only).
    pub fn with_bootloader(mut self, b: Bootloader) -> Self {
        self.bootloader = b;
        self
    }

    /// Seconds between periodic checks (default 86400).
    pub fn with_periodic_check_secs(mut self, secs: u64) -> Self {
        self.periodic_check_secs = secs;
        self
    }

    /// Test hook: the `n`th durable step from now fails as if the power
    /// had been cut there.
    #[cfg(test)]
    pub(crate) fn crash_at(&mut self, n: u32) {
        self.crash_at = Some(n);
        self.steps = 0;
    }

    fn step(&mut self) -> Result<(), OtaError> {
        self.steps += 1;
        if self.crash_at == Some(self.steps) {
            return Err(OtaError::Io("injected power cut".into()));
        }
        Ok(())
    }

    /// The durable state.
    pub fn state(&self) -> &SlotState {
        &self.state
    }

    /// The selected slot's name.
    pub fn selected(&self) -> &str {
        &self.state.selected
    }

    /// The image file of `slot` (`a` or `b`).
    pub fn image_path(&self, slot: &str) -> PathBuf {
        self.dir.join(slot).join("image")
    }

    /// The slots part of `ota.status` (phase idle).
    pub fn status(&self) -> OtaStatus {
        let s = &self.state;
        OtaStatus {
            slots: SLOT_NAMES
                .iter()
                .zip(s.slots.iter())
                .map(|(name, r)| SlotInfo {
                    name: (*name).to_owned(),
                    status: r.status,
                    unixtime: r.unixtime,
                })
                .collect(),
            selected: s.selected.clone(),
            attempted_unixtime: s.attempted_unixtime,
            confirmed_unixtime: s.confirmed_unixtime,
            last_rollback_reason: s.last_rollback_reason.clone(),
            ..OtaStatus::default()
        }
    }

    fn persist(&mut self, next: SlotState) -> Result<(), OtaError> {
        let bytes = serde_json::to_vec_pretty(&next)
            .map_err(|e| OtaError::Io(format!("encode state: {e}")))?;
        let tmp = self.dir.join("state.json.tmp");
        let path = self.dir.join("state.json");
        self.step()?;
        let mut f = create_private(&tmp).map_err(|e| io("create", &tmp, e))?;
        f.write_all(&bytes).map_err(|e| io("write", &tmp, e))?;
        f.sync_all().map_err(|e| io("fsync", &tmp, e))?;
        drop(f);
        self.step()?;
        fs::rename(&tmp, &path).map_err(|e| io("rename", &tmp, e))?;
        sync_dir(&self.dir)?;
        self.state = next;
        Ok(())
    }

    fn select(&mut self, next: SlotState) -> Result<(), OtaError> {
        let slot = next.selected.clone();
        self.persist(next)?;
        self.bootloader.run(&slot)?;
        let mut recorded = self.state.clone();
        recorded.bootloader_slot = Some(slot);
        self.persist(recorded)
    }

    /// Called once per boot, before anything else: counts a boot of a
    /// trial slot, and after `max_boot_attempts` unconfirmed boots marks it
    /// bad and selects the previous good slot again.
    pub fn on_boot(&mut self) -> Result<(), OtaError> {
        let cur = self.state.selected_index();
        let status = self.state.slots.get(cur).map(|r| r.status);
        match status {
            Some(SlotStatus::Trial) if self.state.boot_attempts >= self.max_boot_attempts => {
                let reason = format!(
                    "slot {} not confirmed after {} boots",
                    self.state.selected, self.state.boot_attempts
                );
                self.roll_back(reason)
            }
            Some(SlotStatus::Trial) => {
                let mut next = self.state.clone();
                next.boot_attempts += 1;
                self.persist(next)
            }
            _ => Ok(()),
        }
    }

    /// Confirms a trial boot: the selected slot becomes `good` and its
    /// release the last confirmed install. A good slot is left alone.
    pub fn confirm(&mut self) -> Result<(), OtaError> {
        let cur = self.state.selected_index();
        let mut next = self.state.clone();
        let Some(rec) = next.slots.get_mut(cur) else {
            return Ok(());
        };
        if rec.status != SlotStatus::Trial {
            return Ok(());
        }
        rec.status = SlotStatus::Good;
        next.confirmed_unixtime = rec.unixtime;
        next.boot_attempts = 0;
        slog::info!(self.log, "trial confirmed"; "slot" => %next.selected, "unixtime" => next.confirmed_unixtime);
        self.persist(next)
    }

    fn roll_back(&mut self, reason: String) -> Result<(), OtaError> {
        let cur = self.state.selected_index();
        let other = 1 - cur;
        let mut next = self.state.clone();
        let other_rec = next.slots.get(other).copied().unwrap_or_default();
        if other_rec.status != SlotStatus::Good {
            return Err(OtaError::Busy(format!("no good slot to fall back to ({reason})")));
        }
        if let Some(rec) = next.slots.get_mut(cur) {
            rec.status = SlotStatus::Bad;
            next.rolled_back_unixtime = next.rolled_back_unixtime.max(rec.unixtime);
        }
        next.selected = SLOT_NAMES.get(other).copied().unwrap_or("a").to_owned();
        next.confirmed_unixtime = other_rec.unixtime;
        next.boot_attempts = 0;
        slog::warn!(self.log, "rolled back"; "to" => %next.selected, "reason" => %reason);
        next.last_rollback_reason = Some(reason);
        self.select(next)
    }
}

impl OtaOps for SlotDir {
    fn on_boot(&mut self) -> Result<(), OtaError> {
        SlotDir::on_boot(self)
    }

    fn start(&mut self, m: &Manifest) -> Result<(), OtaError> {
        if self.writing.is_some() {
            self.abort()?;
        }
        let cur = self.state.selected_index();
        if self.state.slots.get(cur).map(|r| r.status) == Some(SlotStatus::Trial) {
            return Err(OtaError::Busy("the selected slot is an unconfirmed trial".into()));
        }
        let target = 1 - cur;
        let mut next = self.state.clone();
        if let Some(rec) = next.slots.get_mut(target) {
            *rec = SlotRecord { status: SlotStatus::Bad, unixtime: m.unixtime };
        }
        // Bad before the first byte: a crash from here on never selects it.
        self.persist(next)?;
        let name = SLOT_NAMES.get(target).copied().unwrap_or("b");
        // Its index no longer describes it.
        chunked::drop_index(&self.dir.join(name))?;
        let partial = self.dir.join(name).join("image.partial");
        let f = create_private(&partial).map_err(|e| io("create", &partial, e))?;
        self.writing = Some((target, BufWriter::with_capacity(256 * 1024, f)));
        slog::info!(self.log, "writing slot"; "slot" => name, "unixtime" => m.unixtime);
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), OtaError> {
        self.step()?;
        let Some((_, w)) = self.writing.as_mut() else {
            return Err(OtaError::Busy("no slot open for writing".into()));
        };
        w.write_all(chunk).map_err(|e| OtaError::Io(format!("write slot: {e}")))
    }

    fn abort(&mut self) -> Result<(), OtaError> {
        if let Some((target, w)) = self.writing.take() {
            drop(w);
            let name = SLOT_NAMES.get(target).copied().unwrap_or("b");
            let partial = self.dir.join(name).join("image.partial");
            match fs::remove_file(&partial) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove", &partial, e)),
            }
            slog::info!(self.log, "slot write aborted"; "slot" => name);
        }
        Ok(())
    }

    fn finalize(&mut self, m: &Manifest) -> Result<(), OtaError> {
        let Some((target, w)) = self.writing.take() else {
            return Err(OtaError::Busy("no slot open for writing".into()));
        };
        let name = SLOT_NAMES.get(target).copied().unwrap_or("b");
        let slot_dir = self.dir.join(name);
        let partial = slot_dir.join("image.partial");
        let image = slot_dir.join("image");
        self.step()?;
        let f = w.into_inner().map_err(|e| OtaError::Io(format!("flush slot: {}", e.error())))?;
        f.sync_all().map_err(|e| io("fsync", &partial, e))?;
        drop(f);
        self.step()?;
        fs::rename(&partial, &image).map_err(|e| io("rename", &partial, e))?;
        self.step()?;
        sync_dir(&slot_dir)?;
        let mut next = self.state.clone();
        if let Some(rec) = next.slots.get_mut(target) {
            *rec = SlotRecord { status: SlotStatus::Trial, unixtime: m.unixtime };
        }
        next.selected = name.to_owned();
        next.boot_attempts = 0;
        next.attempted_unixtime = m.unixtime;
        slog::info!(self.log, "slot selected for a trial boot"; "slot" => name, "unixtime" => m.unixtime);
        self.select(next)
    }

    fn report_current(&mut self, bad: bool) -> Result<(), OtaError> {
        if !bad {
            return self.confirm();
        }
        let cur = self.state.selected_index();
        match self.state.slots.get(cur).map(|r| r.status) {
            Some(SlotStatus::Trial) | Some(SlotStatus::Good) => {
                let reason = format!("slot {} reported bad", self.state.selected);
                self.roll_back(reason)
            }
            _ => Ok(()),
        }
    }

    fn last_fw_unixtime(&self) -> u64 {
        self.state.confirmed_unixtime
    }

    fn rolled_back_unixtime(&self) -> u64 {
        self.state.rolled_back_unixtime
    }

    fn status(&self) -> OtaStatus {
        SlotDir::status(self)
    }

    fn periodic_check_secs(&self) -> u64 {
        self.periodic_check_secs
    }

    fn read_active(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, OtaError> {
        self.read_active_image(offset, buf)
    }

    fn load_index(&mut self) -> Option<Vec<u8>> {
        self.load_active_index()
    }

    fn store_index(&mut self, index: &[u8]) -> Result<(), OtaError> {
        self.store_active_index(index)
    }

    fn read_partial(
        &mut self,
        m: &Manifest,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, OtaError> {
        self.read_partial_image(m, offset, buf)
    }

    fn start_at(&mut self, m: &Manifest, keep: u64) -> Result<u64, OtaError> {
        self.start_keeping(m, keep)
    }

    fn checkpoint(&mut self) -> Result<(), OtaError> {
        self.flush_partial()
    }

    fn suspend(&mut self) -> Result<(), OtaError> {
        self.close_partial()
    }
}
