//! An OTA download cannot be held open forever, and is not fetched twice:
//! through the real `lwsysd` and a real HTTP server on 127.0.0.1, a
//! server that trickles one byte at a time meets `[ota]
//! download_timeout_secs` and the system goes back to OPERATIONAL; a
//! daemon killed (SIGKILL) in the middle of a download resumes it after
//! the restart with a Range request, fetching no byte twice, unless the
//! manifest changed or the server ignores Range (then from zero).
#![allow(clippy::unwrap_used)]

#[path = "common/ota_repo.rs"]
mod ota_repo;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lwsys_tests::{Client, TestDaemon};
use ota_repo::{Repo, Served, Serving};
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;

/// The test servers' piece size: the most the daemon can have been sent
/// but not yet saved when it is killed.
const PIECE: usize = 16 << 10;

/// 1 MiB of incompressible bytes: the gzip file is about as large.
fn image(seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..1 << 20).map(|_| rng.gen::<u8>()).collect()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Waits for a `state` event entering `to`.
fn wait_entered(c: &mut Client, to: &str) {
    loop {
        let e = c.event("state");
        if e["to"] == to {
            return;
        }
    }
}

/// Starts an install on a fresh daemon, holds the server once it has sent
/// `n` image bytes, waits until the daemon has saved all `n`, and kills
/// it (SIGKILL). Returns the dead daemon (it owns the state dir).
fn kill_midway(repo: &Repo, served: &Served, n: u64) -> TestDaemon {
    let mut d = repo.daemon_with("", None, Vec::new());
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    c.send("ota.check", json!({}));
    served.wait_image_bytes(n);
    let partial = d.state_dir().join("ota/download.gz.partial");
    // Every byte sent reaches the copy: the server holds, so this settles.
    let deadline = Instant::now() + lwsys_tests::WAIT;
    while file_len(&partial) < n {
        assert!(Instant::now() < deadline, "saved {} of {n} bytes", file_len(&partial));
        std::thread::sleep(Duration::from_millis(5));
    }
    d.kill();
    served.release();
    assert_eq!(file_len(&partial), n);
    for f in ["download.gz.partial", "download.json"] {
        let mode = std::fs::metadata(d.state_dir().join("ota").join(f)).unwrap().permissions();
        assert_eq!(mode.mode() & 0o777, 0o600, "{f}");
    }
    d
}

/// Installs on a daemon over `state_dir`: returns the `resumed_from` the
/// download's `ota` events reported. The daemon reboots (exits 0).
fn install_again(repo: &Repo, state_dir: &Path, want: &[u8], unixtime: u64) -> u64 {
    let mut d = repo.daemon_with("", Some(state_dir.to_owned()), Vec::new());
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    c.ok("subscribe", json!({"events": ["ota"]}));
    let r = c.ok("ota.check", json!({}));
    assert_eq!((r["updated"].clone(), r["unixtime"].clone()), (json!(true), json!(unixtime)));
    let mut resumed = 0;
    loop {
        let e = c.event("ota");
        if e["phase"] == "downloading" {
            resumed = e["resumed_from"].as_u64().unwrap();
        }
        if e["phase"] == "done" {
            break;
        }
    }
    assert!(d.wait_exit().success());
    let slot_b = std::fs::read(state_dir.join("ota/b/image")).unwrap();
    assert!(slot_b == want, "slot b is not the signed image");
    assert!(!state_dir.join("ota/download.gz.partial").exists(), "copy kept after install");
    resumed
}

#[test]
fn a_trickling_server_meets_the_download_deadline_and_the_system_returns_to_operational() {
    // One byte every 20 ms: every read is well within the 1 s read timeout.
    let serving = Serving { piece: 1, pause: Some(Duration::from_millis(20)), ranges: true };
    let repo = Repo::served(1000, image(1), serving, Arc::new(Served::default()));
    let extra = "download_timeout_secs = 2\nread_timeout_ms = 1000\nperiodic_check_secs = 1";
    let d = repo.daemon_with(extra, None, Vec::new());
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    c.ok("subscribe", json!({"events": ["ota", "state"]}));
    let t0 = Instant::now();
    let r = c.err("ota.check", json!({}), "timeout");
    assert_eq!(r["kind"], "deadline", "{r}");
    wait_entered(&mut c, "MODAL_UPDATING");
    wait_entered(&mut c, "OPERATIONAL");
    let took = t0.elapsed();
    // The 2 s deadline, plus a 5 s margin for the check, consent and the
    // walk back.
    assert!(took >= Duration::from_secs(2), "failed before the deadline: {took:?}");
    assert!(took < Duration::from_secs(7), "back at OPERATIONAL only after {took:?}");
    let failed = loop {
        let e = c.event("ota");
        if e["phase"] == "failed" {
            break e;
        }
    };
    assert_eq!(failed["error_kind"], "deadline", "{failed}");
    let s = c.ok("ota.status", json!({}));
    assert_eq!(s["last_error_kind"], "deadline", "{s}");
    assert_eq!(
        (s["selected"].as_str(), s["slots"][1]["status"].as_str()),
        (Some("a"), Some("bad"))
    );
    assert!(!d.state_dir().join("ota/b/image").exists());
    // The next check comes as scheduled (periodic_check_secs = 1).
    loop {
        let e = c.event("ota");
        if e["phase"] == "checking" {
            break;
        }
    }
}

#[test]
fn a_download_killed_midway_resumes_after_restart_without_fetching_a_byte_twice() {
    let serving = Serving { piece: PIECE, pause: None, ranges: true };
    let served = Arc::new(Served::default());
    let repo = Repo::served(1000, image(2), serving, served.clone());
    let gz_len = file_len(&repo.image_file(1000));
    let half = gz_len / 2;
    served.hold_at(half);
    let dead = kill_midway(&repo, &served, half);
    let resumed = install_again(&repo, dead.state_dir(), &repo.image, 1000);
    assert_eq!(resumed, half);
    assert_eq!(served.range_starts(), vec![half]);
    // Each byte of the gzip file was sent once: the bound is the file's
    // size (plus one 16 KiB piece in flight at the kill, here none since
    // the server held).
    let total = served.image_bytes();
    assert!(total <= gz_len + PIECE as u64, "{total} bytes sent for a {gz_len} byte file");
    assert_eq!(total, gz_len);
}

#[test]
fn a_manifest_changed_after_the_kill_starts_from_zero_and_installs_the_new_release() {
    let serving = Serving { piece: PIECE, pause: None, ranges: true };
    let n = 256 << 10;
    let served = Served::blocking_at(n);
    let repo = Repo::served(1000, image(3), serving, served.clone());
    let dead = kill_midway(&repo, &served, n);
    let newer = image(4);
    repo.publish(&newer, 2000);
    let resumed = install_again(&repo, dead.state_dir(), &newer, 2000);
    assert_eq!(resumed, 0);
    assert!(served.range_starts().is_empty(), "{:?}", served.range_starts());
    assert_eq!(served.image_bytes(), n + file_len(&repo.image_file(2000)));
}

#[test]
fn a_server_that_ignores_range_makes_the_resume_start_from_zero() {
    let serving = Serving { piece: PIECE, pause: None, ranges: false };
    let n = 256 << 10;
    let served = Served::blocking_at(n);
    let repo = Repo::served(1000, image(5), serving, served.clone());
    let dead = kill_midway(&repo, &served, n);
    let resumed = install_again(&repo, dead.state_dir(), &repo.image, 1000);
    assert_eq!(resumed, 0);
    assert_eq!(served.range_starts(), vec![n], "it asked, and got the whole file");
    assert_eq!(served.image_bytes(), n + file_len(&repo.image_file(1000)));
}
