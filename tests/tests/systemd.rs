//! sd_notify against a fake `NOTIFY_SOCKET`: STATUS while booting,
//! EXTEND_TIMEOUT_USEC while a notifier holds the boot, READY=1 at
//! OPERATIONAL, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM.
#![allow(clippy::unwrap_used)]

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use lwsys_tests::{Options, TestDaemon, WAIT};
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
