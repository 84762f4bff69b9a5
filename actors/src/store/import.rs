//! The one-time import of a store of the old format (`lwsys.redb`, one
//! redb database) into the directory store, for devices upgrading from a
//! version that kept it; built only with the `redb-import` feature.
//!
//! Every row of every table is written to the new store (each one a
//! durable update), then the old file is renamed `lwsys.redb.migrated` and
//! the state directory fsync'd. A crash before the rename leaves the old
//! file in place and the import simply runs again at the next start
//! (writing the same values); after it, the old file is never read again.
//! The old file is opened as the store always opened it (`O_NOFOLLOW`,
//! never created) and redb's assertions on a damaged file are caught.

use std::panic::AssertUnwindSafe;
use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition, TableHandle};

use super::{open_private, Store, StoreError, LEGACY_DONE};

type Rows = Vec<(String, Vec<u8>, Vec<u8>)>;

/// Reads every row of every table of the redb file at `legacy`.
fn read_all(legacy: &Path) -> Result<Rows, String> {
    let file = open_private(legacy, false).map_err(|e| e.to_string())?.file;
    if file.metadata().map_err(|e| e.to_string())?.len() == 0 {
        // redb would take an empty file for a new database.
        return Err("the file is empty (truncated to 0 bytes)".into());
    }
    let backend = redb::backends::FileBackend::new(file).map_err(|e| e.to_string())?;
    let db = Database::builder().create_with_backend(backend).map_err(|e| e.to_string())?;
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for handle in tx.list_tables().map_err(|e| e.to_string())? {
        let name = handle.name().to_owned();
        let def: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new(&name);
        let table = tx.open_table(def).map_err(|e| format!("table {name:?}: {e}"))?;
        for row in table.iter().map_err(|e| e.to_string())? {
            let (k, v) = row.map_err(|e| format!("table {name:?}: {e}"))?;
            rows.push((name.clone(), k.value().to_vec(), v.value().to_vec()));
        }
    }
    Ok(rows)
}

/// Imports `legacy` into `store`, then renames it to
/// `<state_dir>/lwsys.redb.migrated`.
pub(super) fn import(store: &Store, state_dir: &Path, legacy: &Path) -> Result<(), StoreError> {
    let fail = |detail: String| StoreError::Legacy { path: legacy.to_owned(), detail };
    let read = std::panic::catch_unwind(AssertUnwindSafe(|| read_all(legacy)));
    let rows = match read {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => return Err(fail(e)),
        Err(_) => return Err(fail("redb found the file inconsistent".into())),
    };
    for (table, key, value) in &rows {
        store.put(table, key, value).map_err(|e| fail(format!("writing the new store: {e}")))?;
    }
    let done = state_dir.join(LEGACY_DONE);
    std::fs::rename(legacy, &done).map_err(|e| fail(format!("renaming it when done: {e}")))?;
    std::fs::File::open(state_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail(format!("syncing the state directory: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{LEGACY_FILE, STORE_DIR};
    use super::*;
    use lwsys_messages::blobs::{BlobId, BlobKind};

    /// A redb file laid out as the old store wrote it: tables of byte
    /// keys and values, blobs under `"<KIND>/<idx>"`.
    fn old_store(path: &Path, rows: &[(&str, &[u8], &[u8])]) {
        let db = Database::create(path).unwrap();
        let tx = db.begin_write().unwrap();
        for (t, k, v) in rows {
            let mut table = tx.open_table(TableDefinition::<&[u8], &[u8]>::new(t)).unwrap();
            table.insert(*k, *v).unwrap();
        }
        tx.commit().unwrap();
    }

    #[test]
    fn an_old_store_is_imported_once_and_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(LEGACY_FILE);
        old_store(
            &legacy,
            &[
                ("blobs", b"AUTH/1", b"s3cr3t"),
                ("blobs", b"DEVICE_SERIAL/0", b"SN-1"),
                ("x", b"k", b"v"),
            ],
        );
        let s = Store::open(dir.path()).unwrap();
        let blobs = s.load_blobs().unwrap().blobs;
        assert_eq!(blobs.len(), 2);
        assert_eq!(s.get_blob(BlobId::new(BlobKind::Auth, 1)).unwrap().unwrap(), b"s3cr3t");
        assert_eq!(s.get("x", b"k").unwrap().unwrap(), b"v");
        assert!(!legacy.exists(), "renamed");
        assert!(dir.path().join(LEGACY_DONE).is_file(), "kept under its new name");
        assert!(dir.path().join(STORE_DIR).is_dir());
        // Later changes are not undone by a second import.
        s.put_blob(BlobId::new(BlobKind::Auth, 1), b"newer").unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.get_blob(BlobId::new(BlobKind::Auth, 1)).unwrap().unwrap(), b"newer");
    }

    #[test]
    fn a_damaged_old_store_is_an_error_and_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(LEGACY_FILE);
        for bytes in [Vec::new(), vec![0x5a; 8192]] {
            std::fs::write(&legacy, &bytes).unwrap();
            let e = Store::open(dir.path()).unwrap_err();
            assert!(matches!(e, StoreError::Legacy { .. }), "{e}");
            assert!(e.to_string().contains(LEGACY_FILE), "{e}");
            assert_eq!(std::fs::read(&legacy).unwrap(), bytes, "left as it was");
        }
    }
}
