//! Tests of `Store`: values and tables round-trip through reopening, a
//! write is all-or-nothing across a crash (a leftover temporary file is
//! ignored and removed), the directory is locked while open, and a file
//! that is not a record is an error, never a value.

use std::os::unix::fs::MetadataExt;

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
    assert_eq!(s.path(), dir.path().join(STORE_DIR));
    assert_eq!(s.get("t", b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(s.get("t", b"gone").unwrap(), None);
    assert_eq!(s.entries("t").unwrap(), vec![(b"k".to_vec(), b"v2".to_vec())]);
}

#[test]
fn large_values_round_trip_and_oversized_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..(12 << 20) as u32).map(|i| (i % 253) as u8).collect();
    {
        let s = Store::open(dir.path()).unwrap();
        s.put("t", b"big", &big).unwrap();
        s.put("t", b"empty", b"").unwrap();
        assert_eq!(s.get("t", b"big").unwrap().as_deref(), Some(&big[..]));
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.get("t", b"big").unwrap().as_deref(), Some(&big[..]));
    assert_eq!(s.get("t", b"empty").unwrap().as_deref(), Some(&b""[..]));
    // Over the bound: refused before anything is written.
    let over = vec![0u8; MAX_VALUE_BYTES + 1];
    let e = s.put("t", b"big", &over).unwrap_err();
    assert!(matches!(e, StoreError::Refused { .. }), "{e}");
    assert!(e.to_string().contains(&MAX_VALUE_BYTES.to_string()), "{e}");
    assert_eq!(s.get("t", b"big").unwrap().as_deref(), Some(&big[..]));
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
fn tables_are_separate_and_keys_come_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.put("a", b"k", b"1").unwrap();
    s.put("b", b"k", b"2").unwrap();
    s.put("a", b"\x00", b"0").unwrap();
    s.put("a", b"../x", b"p").unwrap();
    assert_eq!(s.get("a", b"k").unwrap().unwrap(), b"1");
    assert_eq!(s.get("b", b"k").unwrap().unwrap(), b"2");
    let keys: Vec<Vec<u8>> = s.entries("a").unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![b"\x00".to_vec(), b"../x".to_vec(), b"k".to_vec()]);
    // A key that looks like a path stays a name inside the store.
    assert!(!dir.path().join("x").exists());
    assert_eq!(std::fs::read_dir(s.path()).unwrap().count(), 4);
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

#[test]
fn a_crash_before_the_rename_leaves_the_old_value_and_the_temp_file_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.put("t", b"k", b"old").unwrap();
    let path = s.record_path("t", b"k").unwrap();
    let never = s.record_path("t", b"l").unwrap();
    drop(s);
    // What a kill between the write and the rename leaves: the new value
    // complete (or not) under the temporary name, the old one in place.
    let tmp = PathBuf::from(format!("{}{TMP_SUFFIX}", path.display()));
    let mut new = record::header("t", b"k", b"new").to_vec();
    new.extend_from_slice(b"new");
    std::fs::write(&tmp, &new).unwrap();
    // And a half-written one for another key that was never stored.
    let other = PathBuf::from(format!("{}{TMP_SUFFIX}", never.display()));
    std::fs::write(&other, &new[..10]).unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.temp_removed(), 2);
    assert!(!tmp.exists() && !other.exists(), "leftovers removed at open");
    assert_eq!(s.get("t", b"k").unwrap().unwrap(), b"old");
    assert_eq!(s.entries("t").unwrap().len(), 1, "a temp file is never a key");
    // A crash after the rename: the new value, whole.
    std::fs::write(&path, &new).unwrap();
    assert_eq!(s.get("t", b"k").unwrap().unwrap(), b"new");
}

#[test]
fn a_second_open_of_the_same_store_is_refused_as_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(e.in_use(), "{e}");
    assert!(!e.environmental());
    assert!(e.to_string().contains("open in another process"), "{e}");
    // A clone shares the lock; dropping every handle releases it.
    let c = s.clone();
    drop(s);
    assert!(Store::open(dir.path()).unwrap_err().in_use());
    drop(c);
    Store::open(dir.path()).unwrap();
}

#[test]
fn new_files_are_0600_in_a_0700_directory() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.put("t", b"k", b"v").unwrap();
    assert_eq!(std::fs::metadata(s.path()).unwrap().mode() & 0o7777, 0o700);
    let rec = s.record_path("t", b"k").unwrap();
    assert_eq!(std::fs::metadata(rec).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(s.tightened_from(), None);
}
