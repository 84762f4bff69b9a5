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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lwsys_messages::blobs::{BlobId, BlobKind};
use redb::{Database, ReadableTable, TableDefinition, TableError};

/// The store's file name inside the state directory.
pub const STORE_FILE: &str = "lwsys.redb";

/// The table holding durable blobs, keyed by `"<KIND>/<idx>"`.
pub const BLOBS_TABLE: &str = "blobs";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("cannot create state directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database file could not be opened: unreadable, corrupt, not a
    /// redb file, or already open in this process.
    #[error("cannot open store {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: Box<redb::DatabaseError>,
    },
    /// A read or write failed; a failed write changed nothing.
    #[error("store {op} on table {table:?} failed: {source}")]
    Op {
        /// What was being done (`put`, `get`, ...).
        op: &'static str,
        /// The table.
        table: String,
        /// The cause.
        source: Box<redb::Error>,
    },
}

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

/// A handle to the durable store; clones share one open database (redb
/// allows a file to be open once per process). See the module docs.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: Arc<Path>,
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

impl Store {
    /// Opens (or creates) `<state_dir>/lwsys.redb`, creating the directory
    /// if needed.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|source| StoreError::Dir { path: state_dir.to_owned(), source })?;
        Self::open_file(&state_dir.join(STORE_FILE))
    }

    /// Opens (or creates) the database file at `path`. A file that is not a
    /// readable redb database is an error, never silently replaced.
    pub fn open_file(path: &Path) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| StoreError::Open { path: path.to_owned(), source: Box::new(e) })?;
        Ok(Self { db: Arc::new(db), path: path.into() })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn op_err<'a>(op: &'static str, name: &'a str) -> impl Fn(redb::Error) -> StoreError + 'a {
        move |e| StoreError::Op { op, table: name.to_owned(), source: Box::new(e) }
    }

    /// Sets `key` to `value` in `table` (created on first use), durably.
    pub fn put(&self, name: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let err = Self::op_err("put", name);
        let tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut t = tx.open_table(table(name)).map_err(|e| err(e.into()))?;
            t.insert(key, value).map_err(|e| err(e.into()))?;
        }
        tx.commit().map_err(|e| err(e.into()))
    }

    /// Removes `key` from `table`, durably; whether it was there.
    pub fn delete(&self, name: &str, key: &[u8]) -> Result<bool, StoreError> {
        let err = Self::op_err("delete", name);
        let tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        let had = {
            let mut t = tx.open_table(table(name)).map_err(|e| err(e.into()))?;
            let old = t.remove(key).map_err(|e| err(e.into()))?;
            old.is_some()
        };
        tx.commit().map_err(|e| err(e.into()))?;
        Ok(had)
    }

    /// The value of `key` in `table`, if any.
    pub fn get(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let err = Self::op_err("get", name);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = match tx.open_table(table(name)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(e.into())),
        };
        let v = t.get(key).map_err(|e| err(e.into()))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// Every key and value in `table`, in key order.
    pub fn entries(&self, name: &str) -> Result<Entries, StoreError> {
        let err = Self::op_err("entries", name);
        let tx = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = match tx.open_table(table(name)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(err(e.into())),
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Makes sure everything written so far is on disk. Each update is
    /// already durable when it returns, so this only commits an empty
    /// durable transaction: a cheap check that the store is still writable,
    /// and the hook for a later batching writer.
    pub fn flush(&self) -> Result<(), StoreError> {
        let err = Self::op_err("flush", "");
        let tx = self.db.begin_write().map_err(|e| err(e.into()))?;
        tx.commit().map_err(|e| err(e.into()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put("t", b"k", b"v1").unwrap();
            s.put("t", b"k", b"v2").unwrap();
            s.put("t", b"gone", b"x").unwrap();
            assert!(s.delete("t", b"gone").unwrap());
            assert!(!s.delete("t", b"gone").unwrap());
            s.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.path(), dir.path().join(STORE_FILE));
        assert_eq!(s.get("t", b"k").unwrap().as_deref(), Some(&b"v2"[..]));
        assert_eq!(s.get("t", b"gone").unwrap(), None);
        assert_eq!(s.entries("t").unwrap(), vec![(b"k".to_vec(), b"v2".to_vec())]);
    }

    #[test]
    fn values_far_larger_than_the_page_cache_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..(3 * CACHE_BYTES) as u32).map(|i| (i % 253) as u8).collect();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put("t", b"big", &big).unwrap();
            s.put("t", b"big2", &big[..CACHE_BYTES + 1]).unwrap();
            assert_eq!(s.get("t", b"big").unwrap().as_deref(), Some(&big[..]));
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.get("t", b"big").unwrap().as_deref(), Some(&big[..]));
        assert_eq!(s.get("t", b"big2").unwrap().as_deref(), Some(&big[..CACHE_BYTES + 1]));
    }

    #[test]
    fn missing_tables_read_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.get("nope", b"k").unwrap(), None);
        assert!(s.entries("nope").unwrap().is_empty());
        assert!(!s.delete("nope", b"k").unwrap());
    }

    #[test]
    fn tables_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.put("a", b"k", b"1").unwrap();
        s.put("b", b"k", b"2").unwrap();
        assert_eq!(s.get("a", b"k").unwrap().unwrap(), b"1");
        assert_eq!(s.get("b", b"k").unwrap().unwrap(), b"2");
    }

    #[test]
    fn a_corrupt_file_is_a_clear_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let e = Store::open(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::Open { .. }), "{e}");
        assert!(e.to_string().contains("lwsys.redb"), "{e}");
        // The file was not replaced.
        assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 8192]);
    }

    #[test]
    fn a_state_dir_that_is_a_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(Store::open(&file), Err(StoreError::Dir { .. })));
    }

    #[test]
    fn blobs_are_keyed_by_kind_name_and_idx() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let id = BlobId::new(BlobKind::Auth, 1);
        assert_eq!(Store::blob_key(id), "AUTH/1");
        s.put_blob(id, b"token").unwrap();
        s.put(BLOBS_TABLE, b"NOPE/0", b"x").unwrap();
        s.put(BLOBS_TABLE, b"DEVICE_SERIAL/1", b"x").unwrap();
        let stored = s.load_blobs().unwrap();
        assert_eq!(stored.blobs, vec![(id, b"token".to_vec())]);
        assert_eq!(stored.unknown_keys.len(), 2);
        assert_eq!(s.get_blob(id).unwrap().unwrap(), b"token");
        assert!(s.delete_blob(id).unwrap());
        assert_eq!(s.get_blob(id).unwrap(), None);
    }
}
