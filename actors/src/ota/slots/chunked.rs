//! What `SlotDir` does for chunked installs: reads of the active image
//! and of a partial image (for reuse and resume), the active image's
//! saved chunk index (`<slot>/image.idx`), and reopening a partial image
//! that an interrupted install of the same release left.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use lwsys_messages::ota::{OtaError, SlotStatus};

use super::{create_private, io, SlotDir, SlotState, SLOT_NAMES};
use crate::ota::journal::Journal;
use crate::ota::{Manifest, OtaOps};

/// The saved index's name in a slot directory.
const INDEX: &str = "image.idx";
/// An index is 32 bytes per chunk: 16 MiB covers 512 Ki chunks (32 GiB
/// of image in 64 KiB chunks); a larger file is not ours.
const MAX_INDEX_BYTES: u64 = 16 << 20;

/// The slot whose `image.partial` an interrupted chunked install left for
/// a resume: the inactive one, if its record says it is being written
/// (bad) with the release the journal in `dir` names.
pub(super) fn resumable_slot(dir: &Path, state: &SlotState) -> Option<usize> {
    let entry = Journal::new(dir).read()?;
    let target = 1 - state.selected_index();
    let rec = state.slots.get(target)?;
    (rec.status == SlotStatus::Bad && rec.unixtime == entry.unixtime).then_some(target)
}

/// Removes every slot's unfinished `image.partial` except the one an
/// interrupted chunked install left for a resume ([`resumable_slot`]).
pub(super) fn drop_unfinished(
    dir: &Path,
    state: &SlotState,
    log: &slog::Logger,
) -> Result<(), OtaError> {
    let resumable = resumable_slot(dir, state);
    for (i, name) in SLOT_NAMES.iter().enumerate() {
        if resumable == Some(i) {
            continue;
        }
        let partial = dir.join(name).join("image.partial");
        match fs::remove_file(&partial) {
            Ok(()) => slog::warn!(log, "dropped an unfinished image"; "slot" => *name),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &partial, e)),
        }
    }
    Ok(())
}

/// Removes a slot's saved index (its image is about to change).
pub(super) fn drop_index(slot_dir: &Path) -> Result<(), OtaError> {
    let path = slot_dir.join(INDEX);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", &path, e)),
    }
}

/// Opens `path` for reading, never through a symlink; `None` if absent.
fn open_read(path: &Path) -> Result<Option<File>, OtaError> {
    match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("open", path, e)),
    }
}

/// Reads from `path` at `offset` into `buf` (0 at its end or if absent).
fn read_at(path: &Path, offset: u64, buf: &mut [u8]) -> Result<usize, OtaError> {
    let Some(mut f) = open_read(path)? else { return Ok(0) };
    f.seek(SeekFrom::Start(offset)).map_err(|e| io("seek", path, e))?;
    let mut filled = 0;
    while filled < buf.len() {
        let Some(rest) = buf.get_mut(filled..) else { break };
        match f.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io("read", path, e)),
        }
    }
    Ok(filled)
}

impl SlotDir {
    fn slot_name(i: usize) -> &'static str {
        SLOT_NAMES.get(i).copied().unwrap_or("b")
    }

    /// The inactive slot, if it is being written with `m` (bad, with
    /// `m`'s unixtime): where `m`'s partial image is.
    fn partial_slot_of(&self, m: &Manifest) -> Option<usize> {
        let target = 1 - self.state.selected_index();
        let rec = self.state.slots.get(target)?;
        (rec.status == SlotStatus::Bad && rec.unixtime == m.unixtime).then_some(target)
    }

    pub(super) fn read_active_image(
        &mut self,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, OtaError> {
        read_at(&self.image_path(&self.state.selected.clone()), offset, buf)
    }

    pub(super) fn load_active_index(&mut self) -> Option<Vec<u8>> {
        let path = self.dir.join(&self.state.selected).join(INDEX);
        let f = open_read(&path).ok()??;
        let mut bytes = Vec::new();
        f.take(MAX_INDEX_BYTES + 1).read_to_end(&mut bytes).ok()?;
        (bytes.len() as u64 <= MAX_INDEX_BYTES).then_some(bytes)
    }

    pub(super) fn store_active_index(&mut self, index: &[u8]) -> Result<(), OtaError> {
        if index.len() as u64 > MAX_INDEX_BYTES {
            return Err(OtaError::Io(format!("index of {} bytes is too large", index.len())));
        }
        let slot_dir = self.dir.join(&self.state.selected);
        let tmp = slot_dir.join(format!("{INDEX}.tmp"));
        let mut f = create_private(&tmp).map_err(|e| io("create", &tmp, e))?;
        f.write_all(index).map_err(|e| io("write", &tmp, e))?;
        f.sync_all().map_err(|e| io("fsync", &tmp, e))?;
        drop(f);
        let path = slot_dir.join(INDEX);
        fs::rename(&tmp, &path).map_err(|e| io("rename", &tmp, e))?;
        super::sync_dir(&slot_dir)
    }

    pub(super) fn read_partial_image(
        &mut self,
        m: &Manifest,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, OtaError> {
        let Some(target) = self.partial_slot_of(m) else { return Ok(0) };
        let path = self.dir.join(Self::slot_name(target)).join("image.partial");
        read_at(&path, offset, buf)
    }

    /// [`OtaOps::start_at`]: reopens `m`'s partial image keeping its first
    /// `keep` bytes, or starts afresh (0 kept) if there is none that long.
    pub(super) fn start_keeping(&mut self, m: &Manifest, keep: u64) -> Result<u64, OtaError> {
        if self.writing.is_some() {
            self.close_partial()?;
        }
        let cur = self.state.selected_index();
        let resumable = self.state.slots.get(cur).map(|r| r.status) != Some(SlotStatus::Trial);
        let Some(target) = self.partial_slot_of(m).filter(|_| keep > 0 && resumable) else {
            return OtaOps::start(self, m).map(|()| 0);
        };
        let name = Self::slot_name(target);
        let path = self.dir.join(name).join("image.partial");
        let f = match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            Err(_) => return OtaOps::start(self, m).map(|()| 0),
        };
        let meta = f.metadata().map_err(|e| io("stat", &path, e))?;
        if !meta.is_file() || meta.len() < keep {
            drop(f);
            return OtaOps::start(self, m).map(|()| 0);
        }
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(fs::Permissions::from_mode(crate::store::PRIVATE_FILE_MODE))
            .map_err(|e| io("chmod", &path, e))?;
        // Whatever follows the verified prefix is dropped, never kept.
        f.set_len(keep).map_err(|e| io("truncate", &path, e))?;
        let mut f = f;
        f.seek(SeekFrom::End(0)).map_err(|e| io("seek", &path, e))?;
        self.writing = Some((target, BufWriter::with_capacity(256 * 1024, f)));
        slog::info!(self.log, "resuming slot write"; "slot" => name, "unixtime" => m.unixtime, "kept" => keep);
        Ok(keep)
    }

    pub(super) fn flush_partial(&mut self) -> Result<(), OtaError> {
        let Some((_, w)) = self.writing.as_mut() else {
            return Err(OtaError::Busy("no slot open for writing".into()));
        };
        w.flush().map_err(|e| OtaError::Io(format!("write slot: {e}")))
    }

    /// [`OtaOps::suspend`]: closes the partial image, keeping it.
    pub(super) fn close_partial(&mut self) -> Result<(), OtaError> {
        if let Some((target, mut w)) = self.writing.take() {
            w.flush().map_err(|e| OtaError::Io(format!("write slot: {e}")))?;
            slog::info!(self.log, "slot write suspended"; "slot" => Self::slot_name(target));
        }
        Ok(())
    }
}
