//! The store under storage faults: writes that fail with ENOSPC until
//! healed (a full disk; the real-tmpfs version is in
//! tests/tests/store_faults.rs), and damaged, oversized, symlinked or
//! garbled record files, which must be refused with an error naming the
//! file, never a panic and never a value.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;

use super::*;
use crate::BlobService;
use lwsys_messages::blobs::{BlobError, DEFAULT_DURABLE};

/// Makes every write of `store` fail with ENOSPC while `full`.
fn disk_full(store: &Store, full: bool) {
    let code = if full { libc::ENOSPC } else { 0 };
    store.shared.fail_writes.store(code, Ordering::SeqCst);
}

const TOKEN: BlobId = BlobId::new(BlobKind::Auth, 1);

fn log() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

#[test]
fn writes_work_again_once_a_full_disk_has_space() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.put("t", b"k", b"old").unwrap();
    disk_full(&store, true);
    let e = store.put("t", b"k", b"new").unwrap_err();
    assert!(e.to_string().contains("No space left"), "{e}");
    assert!(e.environmental());
    // Still full: still an error, not a panic, and nothing changed.
    assert!(store.put("t", b"k", b"new").is_err());
    assert!(store.delete("t", b"k").is_err());
    assert!(store.flush().is_err());
    assert_eq!(store.get("t", b"k").unwrap().as_deref(), Some(&b"old"[..]));
    disk_full(&store, false);
    // Healed: the next write succeeds without reopening the Store.
    store.put("t", b"k", b"new").unwrap();
    store.flush().unwrap();
    drop(store);
    let again = Store::open(dir.path()).unwrap();
    assert_eq!(again.get("t", b"k").unwrap().as_deref(), Some(&b"new"[..]));
}

#[test]
fn a_blob_keeps_its_old_value_while_the_disk_is_full_and_takes_the_new_one_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut svc = BlobService::new(&log(), 1024, &DEFAULT_DURABLE, Some(store.clone())).unwrap();
    svc.set(TOKEN, b"old-token").unwrap();
    disk_full(&store, true);
    for _ in 0..3 {
        assert!(matches!(svc.set(TOKEN, b"new-token"), Err(BlobError::Store(_))));
        assert!(matches!(svc.append(TOKEN, b"-more"), Err(BlobError::Store(_))));
        assert!(matches!(svc.destroy(TOKEN), Err(BlobError::Store(_))));
        let now = svc.model().get(TOKEN, 0, usize::MAX).unwrap();
        assert_eq!(&now.data[..], b"old-token");
    }
    disk_full(&store, false);
    assert_eq!(svc.set(TOKEN, b"new-token").unwrap(), 9);
    drop((svc, store));
    let reloaded = BlobService::with_defaults(&log(), Some(Store::open(dir.path()).unwrap()));
    let got = reloaded.unwrap().model().get(TOKEN, 0, usize::MAX).unwrap().data.to_vec();
    assert_eq!(got, b"new-token");
}

/// A store holding a few blobs; the AUTH/1 record's path and bytes.
fn stored(dir: &Path) -> (PathBuf, Vec<u8>) {
    let s = Store::open(dir).unwrap();
    for i in 0..4usize {
        let id = BlobId::new(BlobKind::Auth, i % 2);
        s.put_blob(id, format!("token-{i}").repeat(50).as_bytes()).unwrap();
    }
    s.put_blob(BlobId::new(BlobKind::DeviceSerial, 0), b"SN-1").unwrap();
    let path = s.record_path(BLOBS_TABLE, b"AUTH/1").unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// Opening and reading the whole store: an error or a success, never a
/// panic.
fn open_and_load(dir: &Path) -> Result<StoredBlobs, StoreError> {
    let s = Store::open(dir)?;
    s.check_integrity()?;
    s.load_blobs()
}

#[test]
fn truncated_garbled_or_flipped_records_are_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (path, good) = stored(dir.path());
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [0, 1, 7, 8, 39, 40, 41, good.len() / 2, good.len() - 1] {
        cases.push((format!("truncated to {cut}"), good[..cut].to_vec()));
    }
    let mut longer = good.clone();
    longer.push(b'!');
    cases.push(("one byte appended".into(), longer));
    for at in [0, 8, 39, 40, good.len() - 1] {
        let mut flipped = good.clone();
        flipped[at] ^= 0x01;
        cases.push((format!("bit flipped at {at}"), flipped));
    }
    cases.push(("all garbage".into(), (0..good.len()).map(|i| (i * 31 % 251) as u8).collect()));
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let r = std::panic::catch_unwind(|| open_and_load(dir.path()).map(|_| ()));
        let e = r.unwrap_or_else(|_| panic!("{what}: panicked")).unwrap_err();
        assert!(matches!(e, StoreError::Damaged { .. }), "{what}: {e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{what}: {e}");
        // A plain read sees it too: damage is never returned as a value.
        let s = Store::open(dir.path()).unwrap();
        assert!(s.get_blob(TOKEN).is_err(), "{what}");
        assert_eq!(s.get_blob(BlobId::new(BlobKind::DeviceSerial, 0)).unwrap().unwrap(), b"SN-1");
    }
    // A record copied under another key's name is damage too.
    let serial =
        dir.path().join(STORE_DIR).join(record::name("get", BLOBS_TABLE, b"AUTH/0").unwrap());
    std::fs::write(&path, &good).unwrap();
    std::fs::copy(&path, &serial).unwrap();
    assert!(matches!(open_and_load(dir.path()), Err(StoreError::Damaged { .. })));
}

#[test]
fn an_oversized_record_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = stored(dir.path());
    // Sparse: as long as the bound plus a header plus one, on no disk.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len((record::HEADER_BYTES + MAX_VALUE_BYTES + 1) as u64).unwrap();
    drop(f);
    let e = open_and_load(dir.path()).unwrap_err();
    assert!(e.to_string().contains("longer than any record"), "{e}");
}

#[test]
fn a_store_directory_with_more_files_than_the_bound_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.put_blob(TOKEN, b"t").unwrap();
    // Not records (no '.'), so only the count can refuse them.
    for i in 0..MAX_FILES {
        std::fs::File::create(s.path().join(format!("x{i}"))).unwrap();
    }
    let e = s.load_blobs().unwrap_err();
    assert!(e.to_string().contains(&format!("more than {MAX_FILES} files")), "{e}");
    assert!(s.check_integrity().is_err());
}

#[test]
fn a_symlinked_record_or_store_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, good) = stored(dir.path());
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("x");
    std::fs::write(&target, &good).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let e = open_and_load(dir.path()).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    // The whole directory as a link: refused, nothing made behind it.
    let state = tempfile::tempdir().unwrap();
    let away = elsewhere.path().join("away");
    std::os::unix::fs::symlink(&away, state.path().join(STORE_DIR)).unwrap();
    let e = Store::open(state.path()).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert!(!away.exists());
}

#[test]
fn an_unreadable_or_non_file_record_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = stored(dir.path());
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let e = open_and_load(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::File { .. }), "{e}");
    std::fs::remove_dir(&path).unwrap();
    if nix::unistd::geteuid().is_root() {
        return; // root reads a mode 000 file anyway; the directory case stands in.
    }
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let e = open_and_load(dir.path()).unwrap_err();
    assert!(e.to_string().contains("ermission denied"), "{e}");
}

#[test]
fn loose_modes_are_tightened_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = stored(dir.path());
    let store_dir = dir.path().join(STORE_DIR);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.tightened_from(), Some(0o644));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    drop(s);
    std::fs::set_permissions(&store_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.tightened_from(), Some(0o755));
    assert_eq!(std::fs::metadata(&store_dir).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(s.get_blob(TOKEN).unwrap().unwrap(), "token-3".repeat(50).as_bytes());
}

#[test]
fn an_old_store_is_refused_without_the_import_feature() {
    if cfg!(feature = "redb-import") {
        return; // import.rs tests the import itself.
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(LEGACY_FILE), b"old").unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::Legacy { .. }), "{e}");
    assert!(e.to_string().contains("redb-import"), "{e}");
    assert!(!e.environmental() && !e.in_use());
    assert_eq!(std::fs::read(dir.path().join(LEGACY_FILE)).unwrap(), b"old", "left as is");
}

#[test]
fn a_full_disk_is_the_systems_fault_not_the_files() {
    let path = PathBuf::from("/x/store");
    let io = |code| std::io::Error::from_raw_os_error(code);
    let file = |code| StoreError::File { path: path.clone(), source: io(code) };
    assert!(file(libc::ENOSPC).environmental());
    assert!(file(libc::EROFS).environmental());
    assert!(!file(libc::EACCES).environmental(), "an unreadable file is the file's fault");
    let op = StoreError::Op { op: "put", table: "t".into(), source: io(libc::EDQUOT) };
    assert!(op.environmental());
    assert!(!StoreError::Damaged { path: path.clone(), detail: "x".into() }.environmental());
    assert!(!StoreError::InUse { path }.environmental());
}
