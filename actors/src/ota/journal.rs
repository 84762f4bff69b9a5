//! The journal of a chunked install (`install.json`): which release the
//! partly written slot image belongs to, so that after a lost connection,
//! a daemon restart, SIGKILL or a reboot the install resumes instead of
//! starting over, and a changed manifest starts clean.
//!
//! The journal is written once per install, before the first byte, not
//! per chunk: how far the image got is learned on resume by re-hashing the
//! partial image's chunks against the signed index (local CPU only), which
//! also catches bytes a power cut left unwritten or torn. So it costs no
//! fsync per chunk and never trusts a byte it has not re-verified.
//!
//! # On disk
//! `<dir>/install.json` (the daemon's `<state-dir>/ota/`), 0600, never
//! opened through a symlink, at most 4 KiB, unknown fields refused;
//! replaced atomically (temp file, fsync, rename, directory fsync).

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use lwsys_messages::ota::OtaError;
use serde::{Deserialize, Serialize};

use super::resume::{open_private, remove};
use super::Manifest;

/// The journal's file name.
pub const JOURNAL: &str = "install.json";
/// A journal is a few hundred bytes; anything larger is not ours.
const MAX_JOURNAL_BYTES: u64 = 4096;

/// Which release a partly written image belongs to: all of it must match
/// the manifest being installed for the image to be resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Format version, 1.
    pub version: u32,
    /// The manifest's image SHA-512 (hex).
    pub sha512: String,
    /// The manifest's inflated size.
    pub size: u64,
    /// The manifest's unixtime.
    pub unixtime: u64,
    /// The signed SHA-256 of the chunk index (hex).
    pub index_sha256: String,
}

impl Entry {
    /// The entry for `m` (`None` if it has no chunk index).
    pub fn of(m: &Manifest) -> Option<Self> {
        let c = m.chunks.as_ref()?;
        Some(Self {
            version: 1,
            sha512: m.sha512.clone(),
            size: m.size,
            unixtime: m.unixtime,
            index_sha256: c.index_sha256.clone(),
        })
    }
}

/// The journal in one directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> OtaError {
    OtaError::Io(format!("{what} {}: {e}", path.display()))
}

impl Journal {
    /// The journal in `dir` (which must exist).
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }

    /// The recorded entry, if there is a readable, well-formed one.
    pub fn read(&self) -> Option<Entry> {
        let f = open_private(&self.path(), OpenOptions::new().read(true)).ok()?;
        let mut bytes = Vec::new();
        f.take(MAX_JOURNAL_BYTES + 1).read_to_end(&mut bytes).ok()?;
        if bytes.len() as u64 > MAX_JOURNAL_BYTES {
            return None;
        }
        serde_json::from_slice::<Entry>(&bytes).ok().filter(|e| e.version == 1)
    }

    /// Whether the journal names exactly `m`.
    pub fn names(&self, m: &Manifest) -> bool {
        Entry::of(m).is_some_and(|want| self.read() == Some(want))
    }

    /// Records `m` as the release being written (durably).
    pub fn begin(&self, m: &Manifest) -> Result<(), OtaError> {
        let entry = Entry::of(m).ok_or_else(|| OtaError::ChunkIndex("no chunk index".into()))?;
        let bytes = serde_json::to_vec(&entry)
            .map_err(|e| OtaError::Io(format!("encode install journal: {e}")))?;
        let tmp = self.dir.join(format!("{JOURNAL}.tmp"));
        remove(&tmp)?;
        let mut f = open_private(&tmp, OpenOptions::new().write(true).create_new(true))?;
        f.write_all(&bytes).map_err(|e| io("write", &tmp, e))?;
        f.sync_all().map_err(|e| io("fsync", &tmp, e))?;
        drop(f);
        fs::rename(&tmp, self.path()).map_err(|e| io("rename", &tmp, e))?;
        self.sync_dir()
    }

    /// Forgets the install (durably).
    pub fn clear(&self) -> Result<(), OtaError> {
        remove(&self.path())?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), OtaError> {
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io("fsync", &self.dir, e))
    }
}
