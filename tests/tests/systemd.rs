//! sd_notify against a fake `NOTIFY_SOCKET`: STATUS while booting,
//! EXTEND_TIMEOUT_USEC while a notifier holds the boot, READY=1 at
//! OPERATIONAL, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM.
//! And the shipped unit, `packaging/lwsysd.service`: its key settings are
//! read back here (and `systemd-analyze verify` run on it when installed)
//! so it cannot silently rot.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lwsys_tests::{bin_path, workspace_root, Options, TestDaemon, WAIT};
use nix::sys::signal::Signal;
use serde_json::json;

struct FakeSystemd {
    sock: UnixDatagram,
    _dir: tempfile::TempDir,
    path: String,
    seen: Vec<String>,
}

impl FakeSystemd {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Self { sock, path: path.to_str().unwrap().to_owned(), _dir: dir, seen: Vec::new() }
    }

    /// Wait for a message containing the line `want` (returns the message).
    fn expect(&mut self, want: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if msg.lines().any(|l| l.starts_with(want)) {
                    return msg;
                }
            }
        }
        panic!("no {want:?} from lwsysd; saw {:?}", self.seen);
    }
}

#[test]
fn ready_status_extend_and_stopping_follow_the_boot() {
    let mut fake = FakeSystemd::new();
    // SNTP against a port where nothing answers: the clock holds TIME_VALID.
    let config = "[time]\nsource = \"sntp\"\nserver = \"127.0.0.1:9\"\nbackoff_min_ms = 100\nbackoff_max_ms = 200\nquery_timeout_ms = 100\n";
    let mut d = TestDaemon::with(Options {
        config: Some(config.into()),
        env: vec![("NOTIFY_SOCKET".into(), fake.path.clone())],
        ..Options::default()
    });
    let held = fake.expect("EXTEND_TIMEOUT_USEC=");
    assert!(held.contains("STATUS=") && held.contains("held by clock"), "{held}");
    assert!(!fake.seen.iter().any(|m| m.contains("READY=1")), "ready before OPERATIONAL");
    let mut c = d.connect();
    c.ok("clock.set", json!({"unix_us": 1_800_000_000_000_000u64}));
    let ready = fake.expect("READY=1");
    assert!(ready.contains("STATUS=OPERATIONAL"), "{ready}");
    d.signal(Signal::SIGTERM);
    fake.expect("STOPPING=1");
    assert!(d.wait_exit().success());
}

#[test]
fn the_watchdog_is_fed_at_half_its_period() {
    let mut fake = FakeSystemd::new();
    let mut d = TestDaemon::with(Options {
        env: vec![
            ("NOTIFY_SOCKET".into(), fake.path.clone()),
            ("WATCHDOG_USEC".into(), "200000".into()),
        ],
        ..Options::default()
    });
    fake.expect("READY=1");
    fake.expect("WATCHDOG=1");
    fake.expect("WATCHDOG=1");
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit().success());
}

fn unit_path() -> PathBuf {
    workspace_root().join("packaging/lwsysd.service")
}

/// The unit as `section -> key -> values` (a key given twice keeps both,
/// in order, as systemd merges list settings).
fn unit() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let text = std::fs::read_to_string(unit_path()).unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
        out.entry(section.clone())
            .or_default()
            .entry(k.trim().to_owned())
            .or_default()
            .push(v.trim().to_owned());
    }
    out
}

/// The one value of `[Service] key`.
fn one(u: &BTreeMap<String, BTreeMap<String, Vec<String>>>, key: &str) -> String {
    let v = u["Service"].get(key).unwrap_or_else(|| panic!("[Service] {key} missing"));
    assert_eq!(v.len(), 1, "[Service] {key} given {} times", v.len());
    v[0].clone()
}

/// Every word of `[Service] key`, over all its lines.
fn words(u: &BTreeMap<String, BTreeMap<String, Vec<String>>>, key: &str) -> Vec<String> {
    u["Service"]
        .get(key)
        .unwrap_or_else(|| panic!("[Service] {key} missing"))
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

#[test]
fn the_shipped_unit_is_a_hardened_notify_service() {
    let u = unit();
    assert_eq!(one(&u, "Type"), "notify");
    assert_eq!(one(&u, "RuntimeDirectory"), "lwsys");
    assert_eq!(one(&u, "StateDirectory"), "lwsys");
    assert_eq!(one(&u, "StateDirectoryMode"), "0700");
    let wd = one(&u, "WatchdogSec");
    let secs: u64 = wd.trim_end_matches('s').parse().unwrap();
    assert!(secs >= 2, "WatchdogSec={wd} is too short to be fed at half its period reliably");
    assert_eq!(one(&u, "Restart"), "on-failure");
    // 64 is lwsysd's exit for a bad config: restarting cannot fix it.
    let prevent = words(&u, "RestartPreventExitStatus");
    assert!(prevent.contains(&lwsys::daemon::EXIT_USAGE.to_string()), "{prevent:?}");
    assert!(!prevent.contains(&lwsys::daemon::EXIT_INTERNAL.to_string()), "{prevent:?}");
    for (k, v) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
    ] {
        assert_eq!(one(&u, k), v, "[Service] {k}");
    }
    // No capability but CAP_SYS_TIME (for [time] set_system_clock); no
    // CAP_SYS_BOOT: reboots are an exec or a command.
    let bounding = words(&u, "CapabilityBoundingSet");
    assert!(bounding.iter().all(|c| c == "CAP_SYS_TIME"), "{bounding:?}");
    let ambient = words(&u, "AmbientCapabilities");
    assert!(ambient.iter().all(|c| bounding.contains(c)), "{ambient:?} not in {bounding:?}");
    if bounding.iter().any(|c| c == "CAP_SYS_TIME") {
        assert!(words(&u, "SystemCallFilter").contains(&"@clock".to_owned()));
        assert_ne!(u["Service"].get("ProtectClock"), Some(&vec!["yes".to_owned()]));
    }
    let mut families = words(&u, "RestrictAddressFamilies");
    families.sort();
    assert_eq!(families, ["AF_INET", "AF_INET6", "AF_UNIX"]);
    assert!(words(&u, "SystemCallFilter").contains(&"@system-service".to_owned()));
    assert!(u["Install"]["WantedBy"].contains(&"multi-user.target".to_owned()));
}

#[test]
fn the_units_command_line_and_shipped_config_are_accepted_by_lwsysd() {
    let exec = one(&unit(), "ExecStart");
    let mut argv = exec.split_whitespace();
    assert_eq!(argv.next(), Some("/usr/bin/lwsysd"), "{exec}");
    // Run the built binary with the same flags, the config path pointing at
    // the file the package installs there.
    let args: Vec<String> = argv
        .map(|a| match a {
            "/etc/lwsys/lwsysd.toml" => {
                workspace_root().join("packaging/lwsysd.toml").to_str().unwrap().to_owned()
            }
            other => other.to_owned(),
        })
        .collect();
    assert!(args.iter().any(|a| a.ends_with("packaging/lwsysd.toml")), "{exec}: no --config");
    let o = Command::new(bin_path("lwsysd")).args(&args).arg("--print-config").output().unwrap();
    assert!(o.status.success(), "{exec}: {}", String::from_utf8_lossy(&o.stderr));
    let printed = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        printed,
        lwsys::config::Config::default().to_toml(),
        "shipped config is not the defaults"
    );
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze not installed; skipping the verify");
        return;
    }
    // verify insists the ExecStart binary exists: point it at the build.
    let text = std::fs::read_to_string(unit_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("lwsysd.service");
    std::fs::write(&copy, text.replace("/usr/bin/lwsysd", bin_path("lwsysd").to_str().unwrap()))
        .unwrap();
    let o = Command::new("systemd-analyze").arg("verify").arg(&copy).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.trim().is_empty(), "systemd-analyze verify: {err}");
}
