//! Tests of `Store`: values and tables round-trip through reopening, and
//! a file that is not a store is an error, never replaced.

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

#[test]
fn an_empty_store_file_is_damage_not_a_new_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(STORE_FILE);
    std::fs::write(&path, b"").unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
    assert!(e.to_string().contains("empty"), "{e}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left as it was");
}

#[test]
fn a_new_store_is_made_under_a_temporary_name_and_renamed_into_place() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join(format!("{STORE_FILE}.new"));
    // What a crash in the middle of a creation leaves behind.
    std::fs::write(&tmp, b"half").unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert!(!tmp.exists());
    let len = std::fs::metadata(dir.path().join(STORE_FILE)).unwrap().len();
    assert!(len > 0, "never empty at its path");
    s.put("t", b"k", b"v").unwrap();
    drop(s);
    assert_eq!(Store::open(dir.path()).unwrap().get("t", b"k").unwrap().unwrap(), b"v");
}
