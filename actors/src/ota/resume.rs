//! The durable copy of an image download that lets it resume after a
//! daemon restart: the compressed bytes received so far and a record of
//! the manifest they belong to.
//!
//! The gzip and SHA-512 states cannot be saved, so what is kept is the
//! compressed prefix itself; a resume replays it through the pipeline
//! (local CPU and flash only) and asks the server for the rest with a
//! Range request. The final size and SHA-512 check is unchanged, so a
//! resume can never install a wrong image.
//!
//! # On disk
//! Under the given directory (`<state-dir>/ota/` in the daemon), both 0600
//! and never opened through a symlink:
//! - `download.json`: [`Record`], replaced atomically (temp file, fsync,
//!   rename, directory fsync). Written only after the old prefix is gone,
//!   so a prefix never sits beside another manifest's record.
//! - `download.gz.partial`: the compressed bytes, appended as they arrive.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use lwsys_messages::ota::OtaError;
use serde::{Deserialize, Serialize};

use super::Manifest;

/// The record file's name.
pub const RECORD: &str = "download.json";
/// The compressed prefix's name.
pub const PARTIAL: &str = "download.gz.partial";
/// A record is a few hundred bytes; anything larger is not ours.
const MAX_RECORD_BYTES: u64 = 4096;

/// Which release a saved prefix belongs to: all of it must match the
/// manifest being installed for the prefix to be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Format version, 1.
    pub version: u32,
    /// The manifest's image SHA-512 (hex).
    pub sha512: String,
    /// The manifest's inflated size.
    pub size: u64,
    /// The manifest's unixtime.
    pub unixtime: u64,
    /// The manifest's image file name.
    pub path: String,
}

impl Record {
    fn of(m: &Manifest) -> Self {
        Self {
            version: 1,
            sha512: m.sha512.clone(),
            size: m.size,
            unixtime: m.unixtime,
            path: m.path.clone(),
        }
    }
}

/// The saved download of one release, in one directory.
#[derive(Debug, Clone)]
pub struct DownloadCache {
    dir: PathBuf,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> OtaError {
    OtaError::Io(format!("{what} {}: {e}", path.display()))
}

/// Opens `path` without following a symlink, creating it 0600 if asked,
/// and tightens an existing file's mode to 0600.
pub(super) fn open_private(path: &Path, opts: &mut OpenOptions) -> Result<File, OtaError> {
    let f = opts
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| io("open", path, e))?;
    let meta = f.metadata().map_err(|e| io("stat", path, e))?;
    if !meta.is_file() {
        return Err(OtaError::Io(format!("{} is not a regular file", path.display())));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        f.set_permissions(Permissions::from_mode(0o600)).map_err(|e| io("chmod", path, e))?;
    }
    Ok(f)
}

pub(super) fn remove(path: &Path) -> Result<(), OtaError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", path, e)),
    }
}

impl DownloadCache {
    /// The cache in `dir` (which must exist).
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }

    /// The directory the copy (and a chunked install's journal) is kept in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The compressed prefix file.
    pub fn partial_path(&self) -> PathBuf {
        self.dir.join(PARTIAL)
    }

    fn record(&self) -> Option<Record> {
        let path = self.dir.join(RECORD);
        let f = open_private(&path, OpenOptions::new().read(true)).ok()?;
        let mut bytes = Vec::new();
        f.take(MAX_RECORD_BYTES + 1).read_to_end(&mut bytes).ok()?;
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return None;
        }
        serde_json::from_slice(&bytes).ok()
    }

    /// The saved prefix of `m`'s image and its length, if there is a
    /// non-empty one and its record names exactly `m`.
    pub fn prefix(&self, m: &Manifest) -> Option<(File, u64)> {
        if self.record()? != Record::of(m) {
            return None;
        }
        let f = open_private(&self.partial_path(), OpenOptions::new().read(true)).ok()?;
        let len = f.metadata().ok()?.len();
        (len > 0).then_some((f, len))
    }

    /// Forgets any saved download, records `m` as the one being saved, and
    /// opens an empty prefix file to append to.
    pub fn begin(&self, m: &Manifest) -> Result<File, OtaError> {
        self.clear()?;
        let bytes = serde_json::to_vec(&Record::of(m))
            .map_err(|e| OtaError::Io(format!("encode download record: {e}")))?;
        let tmp = self.dir.join(format!("{RECORD}.tmp"));
        remove(&tmp)?;
        let mut f = open_private(&tmp, OpenOptions::new().write(true).create_new(true))?;
        f.write_all(&bytes).map_err(|e| io("write", &tmp, e))?;
        f.sync_all().map_err(|e| io("fsync", &tmp, e))?;
        drop(f);
        let path = self.dir.join(RECORD);
        fs::rename(&tmp, &path).map_err(|e| io("rename", &tmp, e))?;
        self.sync_dir()?;
        open_private(&self.partial_path(), OpenOptions::new().append(true).create_new(true))
    }

    /// Opens the prefix to append to after its first `len` bytes (anything
    /// beyond them is dropped).
    pub fn append(&self, len: u64) -> Result<File, OtaError> {
        let path = self.partial_path();
        let f = open_private(&path, OpenOptions::new().append(true))?;
        f.set_len(len).map_err(|e| io("truncate", &path, e))?;
        Ok(f)
    }

    /// Removes the prefix, then its record (durably, so a power cut cannot
    /// bring an old prefix back beside a new record).
    pub fn clear(&self) -> Result<(), OtaError> {
        remove(&self.partial_path())?;
        remove(&self.dir.join(RECORD))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), OtaError> {
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io("fsync", &self.dir, e))
    }
}
