//! `Store`: the durable store, a directory `<state-dir>/store/` shared by
//! every service that keeps state across restarts, one file per key.
//!
//! A key's file is named after its table and key, hex-encoded
//! (`store/record.rs`), so nothing a caller chooses becomes a path. It
//! holds a magic, a SHA-256 over table, key and value, then the value;
//! every read checks all three, so a flipped byte is an error, never a
//! value.
//!
//! An update writes `<name>.tmp` (0600, `O_EXCL`, `O_NOFOLLOW`), fsyncs
//! it, renames it over `<name>` and fsyncs the directory before the call
//! returns: a crash at any moment leaves each key with its value from
//! before or after the update, never a mix, and a failed write (a full
//! disk) leaves the old file as it was, so writes work again as soon as
//! there is space. A leftover `.tmp` from a crash is never read and is
//! removed at the next open. Callers that need several keys to change
//! together keep them under one key; blobs keep each blob's whole value
//! under one key for that reason.
//!
//! Why files and not a database: the store holds a handful of small
//! blobs, and a directory costs nothing while idle (redb, used before,
//! allocated about 1.9 MB on opening an empty store). A store of the old
//! format (`lwsys.redb`) is imported once when this crate is built with
//! the `redb-import` feature (`store/import.rs`), and refused otherwise.
//!
//! The calls block the calling thread on disk I/O (two fsyncs per
//! update), which suits small, rare updates such as blobs.
//!
//! The directory is created 0700, never followed through a symlink, and
//! locked (`flock`) for as long as a handle is open, so a second daemon on
//! the same state dir is refused with [`StoreError::InUse`]. Looser modes
//! on it or its files are tightened at open and reported by
//! [`Store::tightened_from`].

mod error;
mod file;
#[cfg(feature = "redb-import")]
mod import;
mod record;

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lwsys_messages::blobs::{BlobId, BlobKind};
use nix::fcntl::{Flock, FlockArg};

pub use self::error::StoreError;
pub use self::file::{create_private_dir, open_private, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE};
pub use self::record::MAX_VALUE_BYTES;
use self::record::TMP_SUFFIX;

/// The store's directory name inside the state directory.
pub const STORE_DIR: &str = "store";

/// The file the store of the format before this one was kept in, inside
/// the state directory; imported once (feature `redb-import`) and then
/// renamed to [`LEGACY_DONE`].
pub const LEGACY_FILE: &str = "lwsys.redb";

/// What [`LEGACY_FILE`] is renamed to once imported: kept, not deleted,
/// so that a downgrade or an audit can still find it.
pub const LEGACY_DONE: &str = "lwsys.redb.migrated";

/// The most files the store directory may hold: far more than every
/// blob kind and index together, and a bound on what a listing allocates.
pub const MAX_FILES: usize = 65_536;

/// The table holding durable blobs, keyed by `"<KIND>/<idx>"`.
pub const BLOBS_TABLE: &str = "blobs";

/// Every key and value of a table, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// What the blobs table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredBlobs {
    /// Each stored blob and its value.
    pub blobs: Vec<(BlobId, Vec<u8>)>,
    /// Keys that name no valid blob (written by another version), so the
    /// caller can report them.
    pub unknown_keys: Vec<Vec<u8>>,
}

/// What every clone of a [`Store`] shares.
struct Shared {
    /// The directory, open and locked while any clone lives.
    _lock: Flock<File>,
    /// Serializes updates: two writers of one key would share its `.tmp`.
    writing: Mutex<()>,
    /// Tests set an errno here to make every write fail with it (a full
    /// disk without a filesystem to fill).
    #[cfg(test)]
    fail_writes: std::sync::atomic::AtomicI32,
}

/// A handle to the durable store; clones share one lock on the
/// directory. See the module docs.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    dir: Arc<Path>,
    tightened_from: Option<u32>,
    temp_removed: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// Makes the error of an `open` of the store directory say why a symlink
/// failed, rather than "too many levels of symbolic links".
fn no_link_dir(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is a symbolic link or not a directory; refused \
             (state files are never opened through links)",
        )
    } else {
        e
    }
}

/// fsyncs `dir`, making the renames and unlinks in it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Store {
    /// Opens (or creates) `<state_dir>/store/`, creating the state
    /// directory (0700) if needed, and imports an old `lwsys.redb` there
    /// first (feature `redb-import`; without it an old store is
    /// [`StoreError::Legacy`]).
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(state_dir)
            .map_err(|source| StoreError::Dir { path: state_dir.to_owned(), source })?;
        let store = Self::open_dir(&state_dir.join(STORE_DIR))?;
        let legacy = state_dir.join(LEGACY_FILE);
        match std::fs::symlink_metadata(&legacy) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::File { path: legacy, source }),
            Ok(_) => store.import_legacy(state_dir, &legacy)?,
        }
        Ok(store)
    }

    #[cfg(feature = "redb-import")]
    fn import_legacy(&self, state_dir: &Path, legacy: &Path) -> Result<(), StoreError> {
        import::import(self, state_dir, legacy)
    }

    #[cfg(not(feature = "redb-import"))]
    fn import_legacy(&self, _state_dir: &Path, legacy: &Path) -> Result<(), StoreError> {
        Err(StoreError::Legacy {
            path: legacy.to_owned(),
            detail: "this lwsysd was built without the redb-import feature, so it cannot \
                     read it; run a build with --features redb-import once to import it"
                .into(),
        })
    }

    /// Opens (or creates, 0700) the store directory `dir` itself, locks
    /// it, removes leftover temporary files and tightens loose modes.
    pub fn open_dir(dir: &Path) -> Result<Self, StoreError> {
        let file_err = |source| StoreError::File { path: dir.to_owned(), source };
        match std::fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(dir) {
            Ok(()) => {
                // The umask may have narrowed the mode, never widened it;
                // set it anyway so that it is exactly 0700.
                std::fs::set_permissions(dir, PermissionsExt::from_mode(PRIVATE_DIR_MODE))
                    .map_err(|source| StoreError::Dir { path: dir.to_owned(), source })?;
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(parent)
                        .map_err(|source| StoreError::Dir { path: dir.to_owned(), source })?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(StoreError::Dir { path: dir.to_owned(), source }),
        }
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir)
            .map_err(|e| file_err(no_link_dir(e)))?;
        let lock = match Flock::lock(handle, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(StoreError::InUse { path: dir.to_owned() })
            }
            Err((_, e)) => return Err(file_err(io::Error::from(e))),
        };
        let mode = lock.metadata().map_err(file_err)?.mode() & 0o7777;
        let mut tightened_from = None;
        if mode & !PRIVATE_DIR_MODE != 0 {
            lock.set_permissions(PermissionsExt::from_mode(PRIVATE_DIR_MODE)).map_err(file_err)?;
            tightened_from = Some(mode);
        }
        let mut temp_removed = 0;
        for entry in std::fs::read_dir(dir).map_err(file_err)? {
            let entry = entry.map_err(file_err)?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(TMP_SUFFIX) {
                // A write that never reached its rename: never read, and
                // its key still has its old value.
                std::fs::remove_file(&path).map_err(|source| StoreError::File { path, source })?;
                temp_removed += 1;
                continue;
            }
            let meta = entry.metadata().map_err(|source| StoreError::File { path, source })?;
            if meta.is_file() && meta.mode() & 0o7777 & !PRIVATE_FILE_MODE != 0 {
                let path = entry.path();
                let f = open_private(&path, false)
                    .map_err(|source| StoreError::File { path: path.clone(), source })?;
                tightened_from = tightened_from.max(f.tightened_from);
            }
        }
        if temp_removed > 0 {
            sync_dir(dir).map_err(file_err)?;
        }
        Ok(Self {
            shared: Arc::new(Shared {
                _lock: lock,
                writing: Mutex::new(()),
                #[cfg(test)]
                fail_writes: std::sync::atomic::AtomicI32::new(0),
            }),
            dir: dir.into(),
            tightened_from,
            temp_removed,
        })
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The loosest mode found on the directory or a record file at open,
    /// when one was looser than 0700 / 0600 (all were tightened).
    pub fn tightened_from(&self) -> Option<u32> {
        self.tightened_from
    }

    /// How many temporary files of interrupted writes were removed at
    /// open (their keys kept their old values).
    pub fn temp_removed(&self) -> usize {
        self.temp_removed
    }

    /// Reads every record and checks its checksum, as every read does;
    /// for start-up, to find damage before anything depends on it.
    /// `Ok(true)`: sound (the `bool` is kept from the old API, where a
    /// repair could happen; this store never repairs).
    pub fn check_integrity(&self) -> Result<bool, StoreError> {
        for (table, key) in self.keys(None)? {
            self.read(&table, &key)?;
        }
        Ok(true)
    }

    /// Every (table, key) in the directory, of `table` only if given, in
    /// table and key order.
    fn keys(&self, table: Option<&str>) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let file_err = |source| StoreError::File { path: self.dir.to_path_buf(), source };
        let mut out = Vec::new();
        for (n, entry) in std::fs::read_dir(&self.dir).map_err(file_err)?.enumerate() {
            if n >= MAX_FILES {
                return Err(StoreError::Damaged {
                    path: self.dir.to_path_buf(),
                    detail: format!("more than {MAX_FILES} files; the store never makes so many"),
                });
            }
            let name = entry.map_err(file_err)?.file_name();
            let Some((t, k)) = name.to_str().and_then(record::parse_name) else { continue };
            if table.is_none_or(|want| want == t) {
                out.push((t, k));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The checked value of `key` in `table`, `None` if it has no file.
    fn read(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.dir.join(record::name("get", table, key)?);
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::File { path, source: file::no_link(e) }),
        };
        let meta =
            file.metadata().map_err(|source| StoreError::File { path: path.clone(), source })?;
        if !meta.is_file() {
            let source = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
            return Err(StoreError::File { path, source });
        }
        record::read(file, &path, table, key).map(Some)
    }

    /// Fails like a full disk while a test says so.
    fn injected_fault(&self) -> io::Result<()> {
        #[cfg(test)]
        {
            let code = self.shared.fail_writes.load(std::sync::atomic::Ordering::SeqCst);
            if code != 0 {
                return Err(io::Error::from_raw_os_error(code));
            }
        }
        Ok(())
    }

    /// Writes `name` through `<name>.tmp`: write, fsync, rename, fsync
    /// the directory.
    fn write_file(&self, name: &str, header: &[u8], value: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let written = (|| {
            self.injected_fault()?;
            let mut f = open_private(&tmp, true)?.file;
            f.write_all(header)?;
            f.write_all(value)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(name))
        })();
        if let Err(e) = written {
            // Nothing was renamed: the old value stands; the partial
            // temp file only takes space.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(&self.dir)
    }

    /// Sets `key` to `value` in `table`, durably.
    pub fn put(&self, table: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let name = record::name("put", table, key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::Refused {
                op: "put",
                table: table.to_owned(),
                detail: format!("{} bytes; at most {MAX_VALUE_BYTES}", value.len()),
            });
        }
        let header = record::header(table, key, value);
        let _guard = self.shared.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.write_file(&name, &header, value).map_err(|source| StoreError::Op {
            op: "put",
            table: table.to_owned(),
            source,
        })
    }

    /// Removes `key` from `table`, durably; whether it was there.
    pub fn delete(&self, table: &str, key: &[u8]) -> Result<bool, StoreError> {
        let name = record::name("delete", table, key)?;
        let op = |source| StoreError::Op { op: "delete", table: table.to_owned(), source };
        let _guard = self.shared.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.injected_fault().map_err(op)?;
        match std::fs::remove_file(self.dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(op(e)),
        }
        sync_dir(&self.dir).map_err(op)?;
        Ok(true)
    }

    /// The value of `key` in `table`, if any; a damaged record is an
    /// error, never a value.
    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(table, key)
    }

    /// Every key and value in `table`, in key order.
    pub fn entries(&self, table: &str) -> Result<Entries, StoreError> {
        let mut out = Vec::new();
        self.scan(table, &mut out)?;
        Ok(out)
    }

    /// Reads `table` into `out` row by row, so that when a damaged record
    /// stops the scan, `out` still holds every row read before it.
    pub fn scan(&self, table: &str, out: &mut Entries) -> Result<(), StoreError> {
        for (t, key) in self.keys(Some(table))? {
            // Gone since the listing (deleted meanwhile): skipped.
            if let Some(v) = self.read(&t, &key)? {
                out.push((key, v));
            }
        }
        Ok(())
    }

    /// Makes sure everything written so far is on disk. Each update is
    /// already durable when it returns, so this only fsyncs the directory:
    /// a cheap check that the store is still there and writable.
    pub fn flush(&self) -> Result<(), StoreError> {
        let op = |source| StoreError::Op { op: "flush", table: String::new(), source };
        self.injected_fault().map_err(op)?;
        sync_dir(&self.dir).map_err(op)
    }

    /// The key a blob is stored under, `"<KIND>/<idx>"`: by name rather
    /// than number so that reordering the enum cannot mix blobs up.
    pub fn blob_key(id: BlobId) -> String {
        format!("{}/{}", id.kind, id.idx)
    }

    fn parse_blob_key(key: &[u8]) -> Option<BlobId> {
        let s = std::str::from_utf8(key).ok()?;
        let (kind, idx) = s.split_once('/')?;
        let id = BlobId::new(kind.parse::<BlobKind>().ok()?, idx.parse().ok()?);
        id.is_valid().then_some(id)
    }

    /// Stores a blob's whole value in one durable update.
    pub fn put_blob(&self, id: BlobId, value: &[u8]) -> Result<(), StoreError> {
        self.put(BLOBS_TABLE, Self::blob_key(id).as_bytes(), value)
    }

    /// Removes a blob's stored value; whether there was one.
    pub fn delete_blob(&self, id: BlobId) -> Result<bool, StoreError> {
        self.delete(BLOBS_TABLE, Self::blob_key(id).as_bytes())
    }

    /// A blob's stored value, if any.
    pub fn get_blob(&self, id: BlobId) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(BLOBS_TABLE, Self::blob_key(id).as_bytes())
    }

    /// Every stored blob.
    pub fn load_blobs(&self) -> Result<StoredBlobs, StoreError> {
        let mut out = StoredBlobs::default();
        for (k, v) in self.entries(BLOBS_TABLE)? {
            match Self::parse_blob_key(&k) {
                Some(id) => out.blobs.push((id, v)),
                None => out.unknown_keys.push(k),
            }
        }
        Ok(out)
    }

    /// The record file of `key` in `table` (for tests and diagnostics);
    /// `None` when the pair cannot be a record.
    pub fn record_path(&self, table: &str, key: &[u8]) -> Option<PathBuf> {
        record::name("get", table, key).ok().map(|n| self.dir.join(n))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fault_tests;
