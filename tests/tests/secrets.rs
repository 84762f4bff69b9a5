//! Secrets at rest through the real `lwsysd` (issue 14): every file it
//! creates in its state dir is 0600 whatever the umask (the store, OTA
//! state and slot images), the state dir must be its own and not writable
//! by group or others (exit 70 otherwise, saying why), a symlink planted
//! at the store path is refused, and a store file with loose modes is
//! tightened with a warning.
#![allow(clippy::unwrap_used)]

#[path = "common/ota_repo.rs"]
mod ota_repo;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use lwsys_tests::{bin_path, run_once, Options, TestDaemon};
use nix::sys::signal::Signal;
use ota_repo::Repo;
use serde_json::json;

/// Every path under `dir` (not following links) with its metadata.
fn walk(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.extend(walk(&p));
        }
        out.push((p, m));
    }
    out
}

/// The files and dirs the daemon made in `state` with the wrong mode: a
/// file not 0600 or a dir not 0700. The socket (its own rules) and the
/// harness's config file are not the daemon's.
fn loose(state: &Path) -> Vec<String> {
    walk(state)
        .into_iter()
        .filter(|(p, m)| {
            let mode = m.mode() & 0o7777;
            let ours = !p.ends_with("test-config.toml") && !p.ends_with("lwsys.sock");
            ours && if m.is_dir() { mode != 0o700 } else { mode != 0o600 }
        })
        .map(|(p, m)| format!("{} {:04o}", p.display(), m.mode() & 0o7777))
        .collect()
}

#[test]
fn under_umask_000_the_store_and_ota_files_are_0600_and_dirs_0700() {
    let repo = Repo::new(1000);
    let mut d = TestDaemon::with(Options {
        config: Some(repo.config(&repo.keys.public, "auto", "/bin/true")),
        umask: Some(0),
        ..Options::default()
    });
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    c.ok("blob.set", json!({"kind": "AUTH", "idx": 1, "data": "s3cr3t-token"}));
    // The update writes ota/state.json (through a temp file), the
    // partial image and the slot image; the daemon then exits for the
    // reboot the update asks for.
    let r = c.ok("ota.check", json!({}));
    assert_eq!(r["updated"], json!(true), "{r}");
    assert!(d.wait_exit().success());
    let state = d.state_dir().to_owned();
    for f in ["ota/state.json", "ota/b/image"] {
        assert!(state.join(f).is_file(), "{f} was not written");
    }
    let records = std::fs::read_dir(state.join("store")).unwrap().count();
    assert_eq!(records, 1, "the AUTH blob's record was not written");
    assert_eq!(loose(&state), Vec::<String>::new(), "files or dirs not 0600/0700");
}

#[test]
fn a_state_dir_the_daemon_creates_is_0700_under_umask_000() {
    let t = tempfile::tempdir().unwrap();
    let parent = t.path().join("p");
    std::fs::create_dir(&parent).unwrap();
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o700)).unwrap();
    let state = parent.join("new/state");
    // The harness makes the dir itself; run lwsysd by hand to see it make one.
    let socket = t.path().join("s.sock");
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(bin_path("lwsysd"))
        .arg("--state-dir")
        .arg(&state)
        .arg("--socket")
        .arg(&socket)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    // OPERATIONAL is logged once the state dir and the store are in place.
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "lwsysd ended before OPERATIONAL");
        if line.contains("to: OPERATIONAL") {
            break;
        }
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&parent.join("new")), 0o700);
    let out =
        Command::new(bin_path("lwsysctl")).arg("--socket").arg(&socket).arg("shutdown").output();
    assert!(out.unwrap().status.success());
    assert!(child.wait().unwrap().success());
    assert_eq!(mode(&state.join("store")), 0o700);
}

#[test]
fn a_state_dir_writable_by_group_or_others_is_refused_with_exit_70() {
    for mode in [0o770, 0o702, 0o777] {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, err) = run_once(&state, &[]);
        assert_eq!(code, Some(70), "mode {mode:o}: {err}");
        assert!(err.contains(&format!("mode {mode:04o} lets group or others write")), "{err}");
        assert!(err.contains(&state.display().to_string()), "the path is named: {err}");
        assert!(!state.join("store").exists(), "nothing created in a refused dir");
    }
    // Readable by others but not writable is accepted (StrictModes too).
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = TestDaemon::with(Options { state_dir: Some(state), ..Options::default() });
    d.connect().wait_state("OPERATIONAL");
}

#[test]
fn a_symlink_at_the_store_path_is_refused_even_with_recover_store() {
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let target = t.path().join("elsewhere");
    std::os::unix::fs::symlink(&target, state.join("store")).unwrap();
    for extra in [&[][..], &["--recover-store"][..]] {
        let (code, err) = run_once(&state, extra);
        assert_eq!(code, Some(70), "{extra:?}: {err}");
        assert!(err.contains("symbolic link"), "{err}");
        assert!(err.contains(&state.join("store").display().to_string()), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!target.exists(), "nothing was created through the link");
        let link = std::fs::symlink_metadata(state.join("store")).unwrap();
        assert!(link.file_type().is_symlink(), "the link was left for an admin to see");
    }
}

#[test]
fn a_store_file_with_loose_modes_is_tightened_with_a_warning() {
    let mut d = TestDaemon::start(&[]);
    d.connect().ok("blob.set", json!({"kind": "AUTH", "idx": 1, "data": "s3cr3t"}));
    let state = d.state_dir().to_owned();
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit().success());
    // The AUTH blob's record, the one file in the store directory.
    let store = std::fs::read_dir(state.join("store")).unwrap().next().unwrap().unwrap().path();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut d = TestDaemon::with(Options { state_dir: Some(state), ..Options::default() });
    let line = d.wait_log("tightened to 0600");
    assert!(line.contains("0644"), "{line}");
    assert_eq!(std::fs::metadata(&store).unwrap().mode() & 0o7777, 0o600);
    // Tightened, not replaced: the secret is still there.
    let got = d.connect().ok("blob.get", json!({"kind": "AUTH", "idx": 1}));
    assert_eq!(got["data"], "s3cr3t", "{got}");
}
