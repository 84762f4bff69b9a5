//! The store under storage faults: a backend that fails writes with ENOSPC
//! until healed (a full disk), and damaged files that must be refused
//! with an error, never a panic.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;
use crate::BlobService;
use lwsys_messages::blobs::{BlobError, DEFAULT_DURABLE};

/// A file backend whose writes fail with ENOSPC while `full` is set.
#[derive(Debug)]
struct FullDisk {
    inner: redb::backends::FileBackend,
    full: Arc<AtomicBool>,
}

impl FullDisk {
    fn check(&self) -> std::io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        } else {
            Ok(())
        }
    }
}

impl StorageBackend for FullDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.inner.read(offset, len)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
        self.check()?;
        self.inner.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

/// A store on `dir`'s store file whose disk is full while the flag is set.
fn full_disk_store(dir: &Path) -> (Store, Arc<AtomicBool>) {
    let full = Arc::new(AtomicBool::new(false));
    let path = dir.join(STORE_FILE);
    let (p, f) = (path.clone(), full.clone());
    let open = move || -> Result<Box<dyn StorageBackend>, StoreError> {
        let file = open_private(&p, !p.exists()).unwrap().file;
        let inner = redb::backends::FileBackend::new(file).unwrap();
        Ok(Box::new(FullDisk { inner, full: f.clone() }))
    };
    (Store::with_backend(&path, Box::new(open)).unwrap(), full)
}

const TOKEN: BlobId = BlobId::new(BlobKind::Auth, 1);

fn log() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

#[test]
fn writes_work_again_once_a_full_disk_has_space() {
    let dir = tempfile::tempdir().unwrap();
    let (store, full) = full_disk_store(dir.path());
    store.put("t", b"k", b"old").unwrap();
    full.store(true, Ordering::SeqCst);
    let e = store.put("t", b"k", b"new").unwrap_err();
    assert!(e.to_string().contains("No space left"), "{e}");
    // Still full: still an error, not a panic, and nothing changed.
    assert!(store.put("t", b"k", b"new").is_err());
    assert!(store.flush().is_err());
    full.store(false, Ordering::SeqCst);
    assert_eq!(store.get("t", b"k").unwrap().as_deref(), Some(&b"old"[..]));
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
    let (store, full) = full_disk_store(dir.path());
    let mut svc = BlobService::new(&log(), 1024, &DEFAULT_DURABLE, Some(store)).unwrap();
    svc.set(TOKEN, b"old-token").unwrap();
    full.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert!(matches!(svc.set(TOKEN, b"new-token"), Err(BlobError::Store(_))));
        assert!(matches!(svc.append(TOKEN, b"-more"), Err(BlobError::Store(_))));
        assert!(matches!(svc.destroy(TOKEN), Err(BlobError::Store(_))));
        let now = svc.model().get(TOKEN, 0, usize::MAX).unwrap();
        assert_eq!(&now.data[..], b"old-token");
    }
    full.store(false, Ordering::SeqCst);
    assert_eq!(svc.set(TOKEN, b"new-token").unwrap(), 9);
    drop(svc);
    let reloaded = BlobService::with_defaults(&log(), Some(Store::open(dir.path()).unwrap()));
    let got = reloaded.unwrap().model().get(TOKEN, 0, usize::MAX).unwrap().data.to_vec();
    assert_eq!(got, b"new-token");
}

/// A store file holding a few blobs, and its bytes.
fn stored_file(dir: &Path) -> Vec<u8> {
    {
        let s = Store::open(dir).unwrap();
        for i in 0..4usize {
            let id = BlobId::new(BlobKind::Auth, i % 2);
            s.put_blob(id, format!("token-{i}").repeat(50).as_bytes()).unwrap();
        }
        s.put_blob(BlobId::new(BlobKind::DeviceSerial, 0), b"SN-1").unwrap();
    }
    std::fs::read(dir.join(STORE_FILE)).unwrap()
}

/// Opening and reading the whole store: an error or a success, never a
/// panic.
fn open_and_load(dir: &Path) -> Result<StoredBlobs, StoreError> {
    let s = Store::open(dir)?;
    s.load_blobs()
}

#[test]
fn truncated_or_garbled_files_are_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = stored_file(dir.path());
    let path = dir.path().join(STORE_FILE);
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [1, 7, 64, 511, 512, 4095, 4096, 4097, good.len() / 2, good.len() - 1] {
        cases.push((format!("truncated to {cut}"), good[..cut.min(good.len())].to_vec()));
    }
    let mut noise = good.clone();
    let mut x: u32 = 0x2545_f491;
    for b in noise.iter_mut().skip(512) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    cases.push(("garbage after the header".into(), noise));
    cases.push(("all garbage".into(), (0..good.len()).map(|i| (i * 31 % 251) as u8).collect()));
    let total = cases.len();
    let mut refused = 0;
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let r = std::panic::catch_unwind(|| open_and_load(dir.path()).map(|_| ()));
        let r = r.unwrap_or_else(|_| panic!("{what}: panicked"));
        if let Err(e) = r {
            refused += 1;
            assert!(e.to_string().contains(STORE_FILE) || e.to_string().contains("store"), "{e}");
        }
    }
    // Each of these damages is detected (none happens to leave a
    // consistent database), so each must be refused.
    assert_eq!(refused, total, "every damaged file is refused");
}

#[test]
fn an_unreadable_or_non_file_store_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(STORE_FILE);
    std::fs::create_dir(&path).unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::File { .. }), "{e}");
    std::fs::remove_dir(&path).unwrap();
    if nix::unistd::geteuid().is_root() {
        return; // root reads a mode 000 file anyway; the directory case stands in.
    }
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("ermission denied"), "{e}");
}

#[test]
fn a_symlinked_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("x.redb");
    std::os::unix::fs::symlink(&target, dir.path().join(STORE_FILE)).unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert!(!target.exists());
}

#[test]
fn a_loose_store_file_is_tightened_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let path = dir.path().join(STORE_FILE);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.tightened_from(), Some(0o644));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn a_flipped_byte_in_a_value_is_read_back_as_is_but_fails_the_integrity_check() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.put_blob(TOKEN, &[b'Q'; 1000]).unwrap();
        assert!(s.check_integrity().unwrap(), "a sound store passes");
    }
    let path = dir.path().join(STORE_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(1000).position(|w| w.iter().all(|b| *b == b'Q')).unwrap();
    bytes[at + 500] = b'X';
    std::fs::write(&path, &bytes).unwrap();
    let s = Store::open(dir.path()).unwrap();
    // Why the start-up check runs check_integrity: a plain read does not
    // see the damage.
    let read = s.get_blob(TOKEN).unwrap().unwrap();
    assert_eq!(read.iter().filter(|b| **b == b'X').count(), 1);
    let e = s.check_integrity().unwrap_err();
    assert!(e.to_string().contains("orrupt"), "{e}");
}

#[test]
fn a_full_disk_is_the_systems_fault_not_the_files() {
    let path = PathBuf::from("/x/lwsys.redb");
    let io = |code| std::io::Error::from_raw_os_error(code);
    let file = |code| StoreError::File { path: path.clone(), source: io(code) };
    assert!(file(libc::ENOSPC).environmental());
    assert!(file(libc::EROFS).environmental());
    assert!(!file(libc::EACCES).environmental(), "an unreadable file is the file's fault");
    let open = StoreError::Open {
        path: path.clone(),
        source: Box::new(redb::DatabaseError::Storage(redb::StorageError::Io(io(libc::EDQUOT)))),
    };
    assert!(open.environmental());
    let op =
        StoreError::Op { op: "put", table: "t".into(), source: Box::new(io(libc::ENOSPC).into()) };
    assert!(op.environmental());
    assert!(!StoreError::Damaged { path, detail: "x".into() }.environmental());
}
