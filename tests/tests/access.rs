//! Access control on the control socket with real clients of another uid:
//! strangers are refused at connect, read-only clients may look but not
//! change or read secrets, and a state dir owned by someone else is refused.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use lwsys_tests::{bin_path, Options, TestDaemon};
use serde_json::json;

/// `nobody` on Debian.
const OTHER: u32 = 65534;

fn as_root() -> bool {
    nix::unistd::getuid().is_root()
}

/// Let another uid reach the socket (the daemon makes it 0600 in a 0700
/// dir; an operator who configures read-only users opens it up).
fn open_up(d: &TestDaemon) {
    for p in [d.state_dir().parent().unwrap(), d.state_dir()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
}

fn ctl_as(uid: u32, d: &TestDaemon, args: &[&str]) -> Output {
    Command::new(bin_path("lwsysctl"))
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap()
}

#[test]
fn a_read_only_uid_may_look_but_not_change_or_read_secrets() {
    if !as_root() {
        eprintln!("skipped: needs root to run a client as another uid");
        return;
    }
    let d = TestDaemon::with(Options {
        config: Some(format!("[control]\nreadonly_uids = [{OTHER}]\n")),
        ..Options::default()
    });
    let mut admin = d.connect();
    admin.wait_state("OPERATIONAL");
    admin.ok("blob.set", json!({"kind": "AUTH", "idx": 1, "data": "s3cret"}));
    admin.ok("blob.set", json!({"kind": "DEVICE_SERIAL", "data": "SN-1"}));
    open_up(&d);

    let out = ctl_as(OTHER, &d, &["--json", "state"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OPERATIONAL"));
    let out = ctl_as(OTHER, &d, &["blob", "get", "DEVICE_SERIAL"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SN-1"));

    for args in [
        &["jump", "POLICY_INVALID"][..],
        &["blob", "get", "AUTH", "--idx", "1"][..],
        &["blob", "set", "DEVICE_SERIAL", "evil"][..],
        &["shutdown"][..],
    ] {
        let out = ctl_as(OTHER, &d, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("forbidden"), "{args:?}: {err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
    }
    assert_eq!(admin.ok("state.get", json!({}))["state"], "OPERATIONAL");
    assert_eq!(admin.ok("blob.get", json!({"kind": "DEVICE_SERIAL"}))["data"], "SN-1");
}

#[test]
fn a_stranger_is_refused_at_connect() {
    if !as_root() {
        eprintln!("skipped: needs root to run a client as another uid");
        return;
    }
    let mut d = TestDaemon::start(&[]);
    d.connect().wait_state("OPERATIONAL");
    open_up(&d);
    let out = ctl_as(OTHER, &d, &["state"]);
    assert!(!out.status.success());
    d.wait_log("client not allowed");
}

#[test]
fn a_state_dir_owned_by_another_user_is_refused_at_start() {
    if !as_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    nix::unistd::chown(&state, Some(nix::unistd::Uid::from_raw(OTHER)), None).unwrap();
    let out = Command::new(bin_path("lwsysd")).arg("--state-dir").arg(&state).output().unwrap();
    // 70 (issue 14): like any other unsafe state dir, not a usage error.
    assert_eq!(out.status.code(), Some(70));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("owned by uid 65534"), "{err}");
}
