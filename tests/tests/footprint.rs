//! Footprint (issue 19, docs/footprint.md): what an idle control client
//! and an idle notifier cost the daemon, and that services which are not
//! configured hold no thread. The figures in docs/footprint.md were
//! measured on a release build; the bounds here hold with room for a
//! debug build's and malloc's variation.
#![allow(clippy::unwrap_used)]

use lwsys_tests::TestDaemon;
use serde_json::json;

/// `VmRSS` of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// The names of `pid`'s threads.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).unwrap().trim().to_owned())
        .collect()
}

const N: u64 = 100;

/// Per idle client, with its 1 KiB read and 2 KiB write buffers: about
/// 7.4 KiB measured (16.8 KiB with tokio's 8 KiB default buffers).
const CLIENT_BOUND: u64 = 12 * 1024;

/// Per idle notifier (its connection and its registration): about 8 KiB
/// measured.
const NOTIFIER_BOUND: u64 = 14 * 1024;

#[test]
fn idle_clients_and_notifiers_cost_a_few_kib_each() {
    let d = TestDaemon::start(&[]);
    let mut first = d.connect();
    first.wait_state("OPERATIONAL");
    let before = rss(d.pid());
    let mut clients = Vec::new();
    for _ in 0..N {
        let mut c = d.connect();
        c.ok("state.get", json!({}));
        clients.push(c);
    }
    let with_clients = rss(d.pid());
    let per_client = with_clients.saturating_sub(before) / N;
    assert!(per_client < CLIENT_BOUND, "{per_client} bytes per idle client");
    let mut notifiers = Vec::new();
    for i in 0..N {
        let mut c = d.connect();
        c.ok("notifier.register", json!({"name": format!("n{i}")}));
        notifiers.push(c);
    }
    let per_notifier = rss(d.pid()).saturating_sub(with_clients) / N;
    assert!(per_notifier < NOTIFIER_BOUND, "{per_notifier} bytes per idle notifier");
    // Every one of them is still served.
    clients[0].ok("state.get", json!({}));
    notifiers[N as usize - 1].ok("state.get", json!({}));
}

#[test]
fn an_idle_daemon_on_its_defaults_holds_three_threads() {
    // The event loop, slog's async drain and the blob service's arbiter.
    // No OTA worker (no [ota]), no SNTP (time.source = "system"), no fleet
    // link (no [fleet]), no tokio blocking threads (no --stdio).
    let d = TestDaemon::start(&[]);
    d.connect().wait_state("OPERATIONAL");
    let names = threads(d.pid());
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(!names.iter().any(|n| n.contains("ota")), "{names:?}");
}
