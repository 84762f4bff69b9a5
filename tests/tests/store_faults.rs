//! The durable store's faults through the real `lwsysd` (issue 14): a
//! store record that is truncated, garbled or unusable stops the daemon
//! with exit 70 naming the file and the fault, never a panic, and is left
//! as it is; `--recover-store` moves the store directory aside and starts
//! empty. A full disk (a real small tmpfs, when the test runs as root)
//! fails a durable write with `io`, keeps the old value, and writes work
//! again once space is freed, without a restart; a read-only one stops
//! the daemon blaming the system, and nothing is moved.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use lwsys_tests::{bin_path, run_once, Options, TestDaemon};
use nix::sys::signal::Signal;
use serde_json::json;

fn start_on(state: &Path, args: &[&str]) -> TestDaemon {
    TestDaemon::with(Options {
        state_dir: Some(state.to_owned()),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Options::default()
    })
}

fn stop(mut d: TestDaemon) {
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit().success());
}

fn get(d: &TestDaemon, kind: &str, idx: u64) -> String {
    let r = d.connect().ok("blob.get", json!({"kind": kind, "idx": idx}));
    r["data"].as_str().unwrap().to_owned()
}

/// The broken stores moved aside in `state`.
fn aside(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("store.broken-"))
        .collect()
}

/// The record file in `state`'s store whose contents hold `needle`.
fn record_holding(state: &Path, needle: &[u8]) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(state.join("store"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::read(p).unwrap().windows(needle.len()).any(|w| w == needle))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// The bytes of every file in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

/// A state dir whose store holds durable blobs; the AUTH/1 record's
/// bytes.
fn seeded(t: &Path) -> (PathBuf, Vec<u8>) {
    let state = t.join("state");
    let d = start_on(&state, &[]);
    let mut c = d.connect();
    c.ok("blob.set", json!({"kind": "AUTH", "idx": 0, "data": "reg".repeat(100)}));
    c.ok("blob.set", json!({"kind": "AUTH", "idx": 1, "data": "s3cr3t-token"}));
    c.ok("blob.set", json!({"kind": "DEVICE_SERIAL", "data": "SN-1"}));
    drop(c);
    stop(d);
    let good = std::fs::read(record_holding(&state, b"s3cr3t-token")).unwrap();
    (state, good)
}

/// Puts `damage` at the AUTH/1 record's path, checks that lwsysd refuses
/// it (70, the file and the fault named, no panic, the file left as is),
/// then that `--recover-store` moves the store directory aside and starts
/// empty.
fn refused_then_recovered(state: &Path, what: &str, damage: impl Fn(&Path)) {
    let dir = state.join("store");
    let store = record_holding(state, b"s3cr3t-token");
    damage(&store);
    let before = std::fs::symlink_metadata(&store).unwrap();
    let dir_before = std::fs::symlink_metadata(&dir).unwrap();
    let size = dir_bytes(&dir);
    let (code, err) = run_once(state, &[]);
    assert_eq!(code, Some(70), "{what}: {err}");
    assert!(err.contains("the durable store is unusable"), "{what}: {err}");
    assert!(err.contains(&store.display().to_string()), "{what}: the file is named: {err}");
    assert!(err.contains("--recover-store"), "{what}: the way out is named: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    let after = std::fs::symlink_metadata(&store).unwrap();
    assert_eq!((after.ino(), after.len()), (before.ino(), before.len()), "{what}: left as is");

    let mut d = start_on(state, &["--recover-store"]);
    d.connect().wait_state("OPERATIONAL");
    let line = d.wait_log("the broken store was moved aside");
    assert!(line.contains(&format!("size: {size}")), "{what}: {line}");
    assert_eq!(get(&d, "AUTH", 1), "", "{what}: the new store is empty");
    assert_eq!(get(&d, "DEVICE_SERIAL", 0), "", "{what}");
    let moved = aside(state);
    assert_eq!(moved.len(), 1, "{what}: {moved:?}");
    let m = std::fs::symlink_metadata(&moved[0]).unwrap();
    assert_eq!(m.ino(), dir_before.ino(), "{what}: the same directory kept");
    assert_eq!(m.mode() & 0o7777, 0o700, "{what}");
    let kept = std::fs::symlink_metadata(moved[0].join(store.file_name().unwrap())).unwrap();
    assert_eq!((kept.ino(), kept.len()), (before.ino(), before.len()), "{what}: the record kept");
    assert!(line.contains(&moved[0].display().to_string()), "{what}: {line}");
    // The fresh store works and is durable.
    d.connect().ok("blob.set", json!({"kind": "AUTH", "idx": 1, "data": "fresh"}));
    stop(d);
    let d = start_on(state, &[]);
    assert_eq!(get(&d, "AUTH", 1), "fresh", "{what}");
    stop(d);
    for p in moved {
        std::fs::remove_dir_all(p).unwrap();
    }
    // The next round damages the record of the fresh store.
    let d = start_on(state, &[]);
    d.connect().ok("blob.set", json!({"kind": "AUTH", "idx": 1, "data": "s3cr3t-token"}));
    stop(d);
}

#[test]
fn a_truncated_or_garbled_store_exits_70_and_recover_store_starts_empty() {
    let t = tempfile::tempdir().unwrap();
    let (state, good) = seeded(t.path());
    let len = good.len();
    for cut in [0usize, 1, 8, 39, 40, len / 2, len - 1] {
        let g = good.clone();
        refused_then_recovered(&state, &format!("truncated to {cut} of {len}"), |p| {
            std::fs::write(p, &g[..cut]).unwrap();
        });
    }
    let g = good.clone();
    refused_then_recovered(&state, "garbage after the header", |p| {
        let mut bytes = g.clone();
        let mut x: u32 = 0x9e37_79b9;
        for b in bytes.iter_mut().skip(40) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        std::fs::write(p, bytes).unwrap();
    });
    refused_then_recovered(&state, "one flipped byte in a stored secret", |p| {
        let mut bytes = g.clone();
        let needle = b"s3cr3t-token";
        let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap();
        bytes[at + 3] ^= 0x01;
        std::fs::write(p, bytes).unwrap();
    });
    refused_then_recovered(&state, "one byte appended", |p| {
        let mut bytes = g.clone();
        bytes.push(b'!');
        std::fs::write(p, bytes).unwrap();
    });
    refused_then_recovered(&state, "all garbage", |p| {
        std::fs::write(p, vec![0x5a; 8192]).unwrap();
    });
}

#[test]
fn an_unreadable_store_exits_70_and_recover_store_moves_it_aside() {
    let t = tempfile::tempdir().unwrap();
    let (state, _) = seeded(t.path());
    if nix::unistd::geteuid().is_root() {
        // Root reads a mode 000 file anyway: a directory at the store path
        // is the unreadable store here.
        refused_then_recovered(&state, "a directory", |p| {
            std::fs::remove_file(p).unwrap();
            std::fs::create_dir(p).unwrap();
            std::fs::write(p.join("x"), b"x").unwrap();
        });
    } else {
        refused_then_recovered(&state, "mode 000", |p| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o000)).unwrap();
        });
    }
}

/// A tmpfs mounted for the test; unmounted on drop, whatever happened.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a `size` tmpfs (mode 0700, and `extra` options) at `at`;
    /// `Err` with the reason when this process may not mount.
    fn mount(at: &Path, size: &str, extra: &str) -> Result<Self, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not root".into());
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700{extra}"), "lwsys-test"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(Self(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a daemon a failed assertion left running must not keep
        // the mount alive.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `path` with a file there until a write
/// fails for lack of space.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(nix::errno::Errno::ENOSPC as i32), "{e}");
                break;
            }
        }
    }
    // Whatever a short write left: one byte at a time to the very end.
    while f.write(&[1]).map(|n| n == 1).unwrap_or(false) {}
}

#[test]
fn a_full_disk_fails_a_durable_write_and_writes_work_again_once_space_is_freed() {
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // 16 MiB: room for the store and the blobs; the filler takes the rest.
    let _tmpfs = match Tmpfs::mount(&mnt, "16m", "") {
        Ok(m) => m,
        Err(why) => {
            // Written to the real stderr, past libtest's capture, so the
            // skip shows in every run's output. The failing-backend unit
            // tests (lwsys-actors store::fault_tests) still cover the heal.
            use std::io::Write;
            let msg = format!("SKIPPED full-disk test on a real tmpfs: {why}\n");
            let _ = std::io::stderr().write_all(msg.as_bytes());
            return;
        }
    };
    let state = mnt.join("state");
    let big = "N".repeat(512 * 1024);
    let d = start_on(&state, &[]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    c.ok("blob.set", json!({"kind": "AUTH", "idx": 1, "data": "old-token"}));
    let filler = mnt.join("filler");
    fill(&filler);

    // Full: refused with `io`, the old value kept; again while still full.
    for _ in 0..2 {
        c.err("blob.set", json!({"kind": "AUTH", "idx": 1, "data": big}), "io");
        assert_eq!(get(&d, "AUTH", 1), "old-token");
    }
    // Space freed: the same daemon takes the write.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        c.ok("blob.set", json!({"kind": "AUTH", "idx": 1, "data": big}))["size"],
        512 * 1024
    );
    assert_eq!(get(&d, "AUTH", 1).len(), 512 * 1024);
    c.ok("blob.set", json!({"kind": "DEVICE_SERIAL", "data": "SN-after"}));
    drop(c);
    stop(d);
    let d = start_on(&state, &[]);
    assert_eq!(get(&d, "AUTH", 1), big, "the write after the heal persisted");
    assert_eq!(get(&d, "DEVICE_SERIAL", 0), "SN-after");
    stop(d);
}

#[test]
fn a_store_on_a_read_only_filesystem_exits_70_blaming_the_system_and_is_never_moved() {
    let t = tempfile::tempdir().unwrap();
    let ro = t.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let _tmpfs = match Tmpfs::mount(&ro, "1m", ",ro") {
        Ok(m) => m,
        Err(why) => {
            use std::io::Write;
            let msg = format!("SKIPPED read-only store test on a real tmpfs: {why}\n");
            let _ = std::io::stderr().write_all(msg.as_bytes());
            return;
        }
    };
    // No store can be made there: exit 70 blaming the system, and even
    // --recover-store moves nothing (the fault is not the files').
    for extra in [&[][..], &["--recover-store"][..]] {
        let out = Command::new(bin_path("lwsysd"))
            .arg("--state-dir")
            .arg(&ro)
            .arg("--socket")
            .arg(t.path().join("ro.sock"))
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(70), "{extra:?}: {err}");
        assert!(err.contains("Read-only file system"), "{err}");
        assert!(err.contains("the system failed, not the file"), "{err}");
        assert!(aside(&ro).is_empty() && !ro.join("store").exists(), "{extra:?}");
    }
}

#[test]
fn a_store_in_use_by_another_daemon_is_never_moved_aside() {
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    let d = start_on(&state, &[]);
    d.connect().ok("blob.set", json!({"kind": "AUTH", "idx": 1, "data": "live"}));
    // Same state dir, another socket: the bind succeeds, the store is locked.
    for extra in [&[][..], &["--recover-store"][..]] {
        let out = Command::new(bin_path("lwsysd"))
            .arg("--state-dir")
            .arg(&state)
            .arg("--socket")
            .arg(t.path().join("other.sock"))
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(70), "{extra:?}: {err}");
        assert!(err.contains("open in another process"), "{err}");
        assert!(aside(&state).is_empty(), "{extra:?}: a live store was moved");
    }
    assert_eq!(get(&d, "AUTH", 1), "live");
    stop(d);
}

#[test]
fn an_old_redb_store_is_never_dropped_by_a_build_that_cannot_import_it() {
    // The default build has no redb-import feature (actors/src/store/import.rs
    // and its tests cover the import itself): it must refuse, not start
    // without the device's secrets, and --recover-store must not move it.
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let old = state.join("lwsys.redb");
    std::fs::write(&old, b"an old redb file").unwrap();
    for extra in [&[][..], &["--recover-store"][..]] {
        let (code, err) = run_once(&state, extra);
        assert_eq!(code, Some(70), "{extra:?}: {err}");
        assert!(err.contains("not imported"), "{err}");
        assert!(err.contains("redb-import"), "the way out is named: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(std::fs::read(&old).unwrap(), b"an old redb file", "left as is");
        assert!(aside(&state).is_empty(), "{extra:?}");
    }
}
