//! Reboot of a real `lwsysd`: the exec reboot keeps the pid and the stdio
//! client, notifiers see CONTEXT_DESTROYING first, durable blobs survive,
//! and a failing reboot command leaves the daemon serving.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use lwsys_tests::{Options, TestDaemon, WAIT};
use serde_json::json;

/// Wait until `needle` has been logged `n` times: the new image logs
/// "control socket ready" once it serves, and only then may the stdio
/// client write again (a line written earlier could be read by the old
/// image's pending stdin read and lost with it at exec).
fn wait_logged(d: &mut TestDaemon, needle: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let logs = d.logs();
        if logs.matches(needle).count() >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{needle:?} not logged {n} times; log:\n{logs}");
        // The log line arriving is the event; poll it finely.
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn exec_reboot_keeps_the_pid_and_the_stdio_client_after_context_destroying() {
    let mut d = TestDaemon::start_stdio(&[]);
    let mut c = d.stdio();
    c.wait_state("OPERATIONAL");
    let info = c.ok("system.info", json!({}));
    let pid = info["pid"].as_u64().unwrap();
    assert_eq!(pid, u64::from(d.pid()));
    for op in ["reboot", "set_clock", "attach", "jit_trust_query"] {
        assert!(info["ops"].as_array().unwrap().contains(&json!(op)), "{info}");
    }
    assert_eq!(info["wake_latency_us"], 0);
    assert!(info["uptime_s"].is_u64(), "{info}");
    assert_eq!(info["state"], "OPERATIONAL");
    let fds_before = open_fds(d.pid());

    // A notifier on the socket is asked about, then told of, the shutdown.
    let mut n = d.connect();
    n.ok("notifier.register", json!({"name": "watcher"}));
    let r = c.ok("system.reboot", json!({}));
    assert_eq!(r["rebooting"], true);
    let consent = n.event("consent");
    assert_eq!(consent["target"], "CONTEXT_DESTROYING");
    n.ok("consent.reply", json!({"ticket": consent["ticket"], "verdict": "allow"}));
    let changed = n.event("changed");
    assert_eq!(changed["to"], "CONTEXT_DESTROYING");
    assert!(n.closed(WAIT), "the old image's socket client must be closed");

    wait_logged(&mut d, "control socket ready", 2);
    c.wait_state("OPERATIONAL");
    let after = c.ok("system.info", json!({}));
    assert_eq!(after["pid"].as_u64().unwrap(), pid, "exec keeps the pid");
    assert!(after["uptime_s"].as_u64().unwrap() <= info["uptime_s"].as_u64().unwrap() + 1);
    // Nothing leaked across the exec (every descriptor lwsysd opens is
    // close-on-exec), and the socket was re-bound.
    assert!(open_fds(d.pid()) <= fds_before, "descriptors leaked across exec");
    d.connect().ok("state.get", json!({}));
    let logs = d.logs();
    assert!(logs.contains("lwsysd re-executing"), "{logs}");
}

#[test]
fn durable_blobs_written_before_an_exec_reboot_are_there_after() {
    let mut d = TestDaemon::start_stdio(&[]);
    let mut c = d.stdio();
    c.wait_state("OPERATIONAL");
    c.ok("blob.set", json!({"kind": "DEVICE_SERIAL", "data": "serial-4711"}));
    c.ok("system.reboot", json!({}));
    wait_logged(&mut d, "control socket ready", 2);
    c.wait_state("OPERATIONAL");
    let r = c.ok("blob.get", json!({"kind": "DEVICE_SERIAL"}));
    use base64::Engine as _;
    let want = base64::engine::general_purpose::STANDARD.encode("serial-4711");
    assert_eq!(r["data_b64"], want, "{r}");
    assert_eq!(r["size"], 11);
}

#[test]
fn a_failing_reboot_command_is_reported_and_the_daemon_serves_again() {
    let mut d = TestDaemon::with(Options {
        config: Some("[system]\nreboot = \"/bin/false\"\nwake_latency_us = 1500\n".into()),
        stdio: true,
        ..Options::default()
    });
    let mut c = d.stdio();
    c.wait_state("OPERATIONAL");
    let info = c.ok("system.info", json!({}));
    assert_eq!(info["wake_latency_us"], 1500, "{info}");
    let pid = info["pid"].clone();
    c.ok("system.reboot", json!({}));
    let ev = c.event("reboot_failed");
    assert_eq!(ev["error"]["code"], "io", "{ev}");
    assert!(ev["error"]["message"].as_str().unwrap().contains("/bin/false"), "{ev}");
    wait_logged(&mut d, "control socket ready", 2);
    // The stdio client keeps talking; a socket client can reconnect.
    c.wait_state("OPERATIONAL");
    assert_eq!(c.ok("system.info", json!({}))["pid"], pid);
    let s = d.connect().ok("state.get", json!({}));
    assert_eq!(s["state"], "OPERATIONAL");
    let logs = d.logs();
    assert!(logs.contains("reboot failed; coming back up"), "{logs}");
}

#[test]
fn custom_ops_example_calls_its_own_reboot_after_context_destroying() {
    // Built by `cargo build --workspace --bins --examples` (scripts/test).
    let out =
        std::process::Command::new(lwsys_tests::bin_path("examples/custom_ops")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("custom reboot op ran after CONTEXT_DESTROYING"), "{stdout}");
}

#[test]
fn a_socket_client_reboot_closes_it_and_the_socket_is_bound_again() {
    let mut d = TestDaemon::start(&[]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    let r = c.ok("system.reboot", json!({}));
    assert_eq!(r["rebooting"], true);
    assert!(c.closed(WAIT), "the old image's clients are closed");
    wait_logged(&mut d, "control socket ready", 2);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    let info = c.ok("system.info", json!({}));
    assert_eq!(info["pid"].as_u64().unwrap(), u64::from(d.pid()));
}
