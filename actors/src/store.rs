//! `Store`: the durable store, one redb database at
//! `<state-dir>/lwsys.redb` shared by every service that keeps state across
//! restarts, each in its own named table.
//!
//! Every update is one redb write transaction, committed with redb's
//! default (immediate, fsync'd) durability before the call returns, so a
//! crash at any moment leaves each key with its value from before or after
//! the update, never a mix. Callers that need several keys to change
//! together write them in one [`Store::put`]-like call of their own rather
//! than key by key; blobs keep each blob's whole value under one key for
//! that reason.
//!
//! The calls block the calling thread on disk I/O (an fsync per commit).
//! That is acceptable for small, rare updates such as blobs; a service
//! with heavy write traffic should move its writes to a thread of its own.
//!
//! The file is opened by the store itself, never by redb: created 0600
//! whatever the umask, opened with `O_NOFOLLOW` so a symlink planted at its
//! path is refused, and an existing file with looser modes is tightened to
//! 0600 (reported by [`Store::tightened_from`] so the caller can warn).
//!
//! redb poisons a database after an I/O error in a commit (every later
//! call fails with `PreviousIo`). A transient fault such as a full disk
//! must not break durable writes until a restart, so after any I/O error
//! the store drops its database and reopens the file at the next call:
//! once space is freed, writes succeed again.
//!
//! redb asserts (panics) on some damaged files, a truncated one among them;
//! the store catches that and answers [`StoreError::Damaged`], and a new
//! store is initialized under a temporary name and renamed into place, so
//! an empty file at the path is damage too, never taken for a new store.

mod error;
mod file;

use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use lwsys_messages::blobs::{BlobId, BlobKind};
use redb::{Database, ReadableTable, StorageBackend, TableDefinition, TableError};

pub use self::error::StoreError;
pub use self::file::{create_private_dir, open_private, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE};

/// The store's file name inside the state directory.
pub const STORE_FILE: &str = "lwsys.redb";

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

/// Makes the storage a database is (re)opened on; called again after an
/// I/O error, so it must open the file afresh each time.
pub type BackendOpener =
    dyn Fn() -> Result<Box<dyn StorageBackend>, StoreError> + Send + Sync + 'static;

/// The database, `None` after an I/O error poisoned it until the next call
/// reopens it.
struct Shared {
    db: Mutex<Option<Database>>,
    open: Box<BackendOpener>,
}

/// A handle to the durable store; clones share one open database (redb
/// allows a file to be open once per process). See the module docs.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    path: Arc<Path>,
    tightened_from: Option<u32>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

fn table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// The store's page cache. Blobs are few and small and the blob service
/// keeps its own copies, so redb's default (1 GiB) would only let a burst
/// of writes grow the daemon's memory for nothing.
const CACHE_BYTES: usize = 4 << 20;

/// A redb error, boxed (redb's is large) and convertible from each of
/// redb's narrower errors, for `?` in the closures of `Store::with_db`.
struct RedbError(Box<redb::Error>);

impl<E: Into<redb::Error>> From<E> for RedbError {
    fn from(e: E) -> Self {
        Self(Box::new(e.into()))
    }
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "inconsistent file".to_owned(),
    }
}

/// Whether `e` leaves the database poisoned (or says it already is).
fn is_io(e: &RedbError) -> bool {
    matches!(*e.0, redb::Error::Io(_) | redb::Error::PreviousIo)
}

impl Store {
    /// Opens (or creates) `<state_dir>/lwsys.redb`, creating the directory
    /// (0700) if needed.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(state_dir)
            .map_err(|source| StoreError::Dir { path: state_dir.to_owned(), source })?;
        Self::open_file(&state_dir.join(STORE_FILE))
    }

    /// Opens (or creates) the database file at `path`: 0600, never through
    /// a symlink. A file that is not a readable redb database is an error,
    /// never silently replaced; so is an empty one (a new store is made only
    /// where there is none).
    pub fn open_file(path: &Path) -> Result<Self, StoreError> {
        let file_err = |source| StoreError::File { path: path.to_owned(), source };
        let first = match open_private(path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Self::create(path),
            Err(e) => return Err(file_err(e)),
        };
        if first.file.metadata().map_err(file_err)?.len() == 0 {
            // redb would take it for a new database and start empty: a
            // store truncated to nothing would lose its secrets silently.
            return Err(StoreError::Damaged {
                path: path.to_owned(),
                detail: "the file is empty (truncated to 0 bytes); \
                    a new store is only made where there is none"
                    .into(),
            });
        }
        let tightened_from = first.tightened_from;
        let mut store = Self::with_backend(path, Self::file_opener(path, Some(first.file)))?;
        store.tightened_from = tightened_from;
        Ok(store)
    }

    /// Makes a new store at `path`: initialized under a temporary name
    /// (`<path>.new`) and renamed into place, so that a crash never leaves
    /// an empty file at `path` (which [`Store::open_file`] refuses).
    fn create(path: &Path) -> Result<Self, StoreError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        let file_err = |p: &Path| {
            let p = p.to_owned();
            move |source| StoreError::File { path: p, source }
        };
        // A leftover from a crash mid-creation holds nothing.
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_err(&tmp)(e)),
        }
        let file = open_private(&tmp, true).map_err(file_err(&tmp))?.file;
        let store = Self::with_backend(path, Self::file_opener(path, Some(file)))?;
        // redb has written and synced its header; the rename is atomic and
        // the open database follows the file.
        std::fs::rename(&tmp, path).map_err(file_err(path))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(file_err(dir))?;
        }
        Ok(store)
    }

    /// Opens the database file: `first` (already open and checked) the
    /// first time, then, after an I/O error, `path` afresh (never creating
    /// it: a store that vanished is not silently replaced).
    fn file_opener(path: &Path, first: Option<File>) -> Box<BackendOpener> {
        let first = Mutex::new(first);
        let path = path.to_owned();
        Box::new(move || -> Result<Box<dyn StorageBackend>, StoreError> {
            let taken = first.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            let file = match taken {
                Some(f) => f,
                None => {
                    open_private(&path, false)
                        .map_err(|source| StoreError::File { path: path.clone(), source })?
                        .file
                }
            };
            let backend = redb::backends::FileBackend::new(file)
                .map_err(|e| StoreError::Open { path: path.clone(), source: Box::new(e) })?;
            Ok(Box::new(backend))
        })
    }

    /// A store on the storage `open` makes, named `path` in errors; `open`
    /// is called again to reopen the database after an I/O error. For tests
    /// that inject storage faults, and for other media.
    pub fn with_backend(path: &Path, open: Box<BackendOpener>) -> Result<Self, StoreError> {
        let db = Self::open_db(path, &open)?;
        Ok(Self {
            shared: Arc::new(Shared { db: Mutex::new(Some(db)), open }),
            path: path.into(),
            tightened_from: None,
        })
    }

    fn open_db(path: &Path, open: &BackendOpener) -> Result<Database, StoreError> {
        let backend = open()?;
        let opened = std::panic::catch_unwind(AssertUnwindSafe(|| {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create_with_backend(BoxedBackend(backend))
        }));
        match opened {
            Ok(Ok(db)) => Ok(db),
            Ok(Err(e)) => Err(StoreError::Open { path: path.to_owned(), source: Box::new(e) }),
            Err(panic) => {
                Err(StoreError::Damaged { path: path.to_owned(), detail: panic_text(&*panic) })
            }
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's mode before it was tightened to 0600 at open, when it
    /// was looser (group or other bits set).
    pub fn tightened_from(&self) -> Option<u32> {
        self.tightened_from
    }

    fn lock(&self) -> MutexGuard<'_, Option<Database>> {
        // A panic while holding the lock cannot leave the database half
        // changed (redb transactions are atomic), so a poisoned lock is
        // still usable.
        self.shared.db.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the database, reopening it first if an earlier I/O
    /// error dropped it, and dropping it after an I/O error so that the
    /// next call starts from what is on disk.
    fn with_db<T>(
        &self,
        op: &'static str,
        name: &str,
        f: impl FnOnce(&Database) -> Result<T, RedbError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.lock();
        let db = match guard.take() {
            Some(db) => db,
            None => Self::open_db(&self.path, &self.shared.open).map_err(|e| match e {
                StoreError::Open { source, .. } => StoreError::Op {
                    op,
                    table: name.to_owned(),
                    source: Box::new((*source).into()),
                },
                other => other,
            })?,
        };
        let out = match std::panic::catch_unwind(AssertUnwindSafe(|| f(&db))) {
            Ok(out) => out,
            Err(panic) => {
                // Damage found mid-read: the database may be inconsistent
                // in memory, so it is dropped like a poisoned one.
                drop(db);
                let detail = panic_text(&*panic);
                return Err(StoreError::Damaged { path: self.path.to_path_buf(), detail });
            }
        };
        match &out {
            // Poisoned: dropped here (releasing the file lock) so that the
            // next call reopens a healthy database from what is on disk.
            Err(e) if is_io(e) => drop(db),
            _ => *guard = Some(db),
        }
        out.map_err(|e| StoreError::Op { op, table: name.to_owned(), source: e.0 })
    }

    /// Verifies every page of the file against its checksum, which reads
    /// alone do not (a flipped byte in a value would be read back as is).
    /// `Ok(true)`: sound; `Ok(false)`: redb found damage it could repair
    /// (and did); an error: damage it could not repair. Slow on a big file:
    /// for start-up, not for every call.
    pub fn check_integrity(&self) -> Result<bool, StoreError> {
        let mut guard = self.lock();
        let mut db = match guard.take() {
            Some(db) => db,
            None => Self::open_db(&self.path, &self.shared.open)?,
        };
        let checked = std::panic::catch_unwind(AssertUnwindSafe(|| db.check_integrity()));
        match checked {
            Ok(Ok(clean)) => {
                *guard = Some(db);
                Ok(clean)
            }
            Ok(Err(e)) => {
                Err(StoreError::Open { path: self.path.to_path_buf(), source: Box::new(e) })
            }
            Err(panic) => Err(StoreError::Damaged {
                path: self.path.to_path_buf(),
                detail: panic_text(&*panic),
            }),
        }
    }

    /// Sets `key` to `value` in `table` (created on first use), durably.
    pub fn put(&self, name: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.with_db("put", name, |db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(table(name))?;
                t.insert(key, value)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Removes `key` from `table`, durably; whether it was there.
    pub fn delete(&self, name: &str, key: &[u8]) -> Result<bool, StoreError> {
        self.with_db("delete", name, |db| {
            let tx = db.begin_write()?;
            let had = {
                let mut t = tx.open_table(table(name))?;
                let old = t.remove(key)?;
                old.is_some()
            };
            tx.commit()?;
            Ok(had)
        })
    }

    /// The value of `key` in `table`, if any.
    pub fn get(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_db("get", name, |db| {
            let tx = db.begin_read()?;
            let t = match tx.open_table(table(name)) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let v = t.get(key)?;
            Ok(v.map(|v| v.value().to_vec()))
        })
    }

    /// Every key and value in `table`, in key order.
    pub fn entries(&self, name: &str) -> Result<Entries, StoreError> {
        let mut out = Vec::new();
        self.scan(name, &mut out)?;
        Ok(out)
    }

    /// Reads `table` into `out` row by row, so that when a damaged page
    /// stops the scan, `out` still holds every row read before it.
    pub fn scan(&self, name: &str, out: &mut Entries) -> Result<(), StoreError> {
        self.with_db("entries", name, |db| {
            let tx = db.begin_read()?;
            let t = match tx.open_table(table(name)) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            for row in t.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_vec(), v.value().to_vec()));
            }
            Ok(())
        })
    }

    /// Makes sure everything written so far is on disk. Each update is
    /// already durable when it returns, so this only commits an empty
    /// durable transaction: a cheap check that the store is still writable,
    /// and the hook for a later batching writer.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.with_db("flush", "", |db| {
            db.begin_write()?.commit()?;
            Ok(())
        })
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

    /// Stores a blob's whole value in one durable transaction.
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
}

/// A boxed backend as redb wants one (`impl StorageBackend`).
#[derive(Debug)]
struct BoxedBackend(Box<dyn StorageBackend>);

impl StorageBackend for BoxedBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.0.read(offset, len)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
        self.0.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fault_tests;
