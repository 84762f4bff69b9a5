//! The clock through the real daemon (issue 7): SNTP against a real
//! `chronyd -x` holds TIME_VALID until the first sync and recovers after
//! the server restarts, a kiss-of-death from a fake peer keeps the walk
//! deferred with the reason in `state.explain`, and `clock.set` checks its
//! value. (`clock.set` from another uid is pinned by the unit tests in
//! `supervisor/src/control/ops_clock.rs`.)
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lwsys_tests::chrony::{self, Chronyd};
use lwsys_tests::{Client, Options, TestDaemon, WAIT};
use serde_json::{json, Value};

fn unix_us() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros()).unwrap()
}

/// A fake NTP server answering every request with `reply(request)`; the
/// thread lives as long as the test process.
fn fake_peer(reply: fn(&[u8]) -> Vec<u8>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&reply(&buf[..n]), from);
        }
    });
    addr
}

/// A kiss-of-death: server mode, stratum 0, code RATE, echoing the origin.
fn kiss_of_death(req: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x24;
    p[12..16].copy_from_slice(b"RATE");
    p[24..32].copy_from_slice(&req[40..48]);
    p
}

fn sntp_config(server: &str, extra: &str) -> String {
    format!(
        "[time]\nsource = \"sntp\"\nserver = \"{server}\"\nresync_secs = 1\n\
         backoff_min_ms = 100\nbackoff_max_ms = 400\nquery_timeout_ms = 500\n{extra}"
    )
}

/// The next clock event of `kind` (other clock events are skipped).
fn clock_event(c: &mut Client, kind: &str) -> Value {
    loop {
        let e = c.event("clock");
        if e["kind"] == kind {
            return e;
        }
    }
}

/// Poll `state.explain` until a walk is pending (the deferral is not an
/// event of its own), bounded by the harness wait.
fn wait_pending(c: &mut Client) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let e = c.ok("state.explain", json!({}));
        if !e["pending"].is_null() {
            return e;
        }
        assert!(Instant::now() < deadline, "no walk ever pending: {e}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sntp_defers_time_valid_until_chronyd_answers_then_boots_and_recovers_after_a_restart() {
    if chrony::binary().is_none() {
        return;
    }
    // The daemon starts before the server exists, so the deferral is seen.
    let port = chrony::free_udp_port();
    let server = format!("127.0.0.1:{port}");
    let d =
        TestDaemon::with(Options { config: Some(sntp_config(&server, "")), ..Options::default() });
    let mut c = d.connect();
    c.ok("subscribe", json!({"events": ["clock"]}));

    let e = wait_pending(&mut c);
    assert_eq!(e["pending"]["by"], "clock", "{e}");
    assert_eq!(e["pending"]["target"], "TIME_VALID", "{e}");
    let f = clock_event(&mut c, "failed");
    assert_eq!(f["server"], server.as_str(), "{f}");
    clock_event(&mut c, "failed");
    let e = c.ok("state.explain", json!({}));
    assert_eq!(e["pending"]["by"], "clock", "still deferred after failures: {e}");
    let r = c.ok("clock.get", json!({}));
    assert_eq!(r["valid"], false, "{r}");
    assert_eq!(r["source"], "none", "{r}");

    let started = Instant::now();
    let Some(mut chrony) = Chronyd::start(Some(port)) else { return };
    let s = clock_event(&mut c, "synced");
    c.wait_state("OPERATIONAL");
    println!("boot resumed {:?} after chronyd started; synced: {s}", started.elapsed());
    assert!(s["offset_us"].as_i64().unwrap().abs() < 50_000, "{s}");

    let before = unix_us();
    let r = c.ok("clock.get", json!({}));
    let after = unix_us();
    println!("clock.get after sync: {r}");
    assert_eq!(r["valid"], true, "{r}");
    assert_eq!(r["source"], "soft", "the daemon may not step the host clock: {r}");
    assert!(r["last_offset_us"].as_i64().unwrap().abs() < 50_000, "{r}");
    assert!(r["last_delay_us"].as_u64().is_some(), "{r}");
    assert!(r["last_sync_us"].as_u64().is_some(), "{r}");
    let t = r["unix_us"].as_u64().unwrap();
    assert!(t + 50_000 >= before && t <= after + 50_000, "{t} vs {before}..{after}");

    // No server: failed events with bounded backoff, the daemon answers.
    chrony.stop();
    let stopped = Instant::now();
    let mut retries = Vec::new();
    while retries.len() < 3 {
        let f = clock_event(&mut c, "failed");
        println!("failed: {f}");
        retries.push(f["retry_in_ms"].as_u64().unwrap());
        let r = c.ok("clock.get", json!({}));
        assert_eq!(r["valid"], true, "a failed re-sync does not forget the time: {r}");
    }
    assert!(retries.iter().all(|&ms| (50..=400).contains(&ms)), "{retries:?}");
    assert!(stopped.elapsed() < Duration::from_secs(5), "{:?}", stopped.elapsed());
    assert_eq!(c.ok("state.get", json!({}))["state"], "OPERATIONAL");

    drop(chrony);
    let restarted = Instant::now();
    let _chrony = Chronyd::start(Some(port)).unwrap();
    let s = clock_event(&mut c, "synced");
    println!("recovered {:?} after restart: {s}", restarted.elapsed());
    assert!(s["offset_us"].as_i64().unwrap().abs() < 50_000, "{s}");
}

#[test]
fn kiss_of_death_keeps_the_walk_deferred_with_the_reason_until_clock_set() {
    let peer = fake_peer(kiss_of_death);
    let config = sntp_config(
        &peer.to_string(),
        "[supervisor]\nboot_target = \"CONTEXT_CREATED\"\n[system]\nwake_latency_us = 1500\n",
    );
    let d = TestDaemon::with(Options { config: Some(config), ..Options::default() });
    let mut c = d.connect();
    c.ok("subscribe", json!({"events": ["clock"]}));
    let f = clock_event(&mut c, "failed");
    assert!(f["reason"].as_str().unwrap().contains("kiss-of-death RATE"), "{f}");

    let r = c.ok("state.steps", json!({"target": "OPERATIONAL"}));
    assert_eq!(r["reached"], false, "{r}");
    assert_eq!(r["pending"]["by"], "clock", "{r}");
    let why = r["pending"]["reason"].as_str().unwrap();
    assert!(why.contains("kiss-of-death RATE"), "{why}");
    clock_event(&mut c, "failed");
    let e = c.ok("state.explain", json!({}));
    assert_eq!(e["pending"]["by"], "clock", "{e}");
    assert!(e["pending"]["reason"].as_str().unwrap().contains("kiss-of-death"), "{e}");
    assert_eq!(e["state"], r["state"], "{e}");
    assert_eq!(c.ok("clock.get", json!({}))["valid"], false);

    let info = c.ok("system.info", json!({}));
    assert_eq!(info["wake_latency_us"], 1500, "{info}");

    // Wild or malformed times are refused and change nothing.
    for bad in [
        json!({"unix_us": 0}),
        json!({"unix_us": 946_684_799_999_999u64}),
        json!({"unix_us": 7_258_118_400_000_001u64}),
        json!({"unix_us": "now"}),
        json!({}),
    ] {
        c.err("clock.set", bad, "bad_request");
    }
    assert_eq!(c.ok("clock.get", json!({}))["valid"], false);

    // The daemon's own uid may set the time; that resumes the walk.
    let now = unix_us();
    let r = c.ok("clock.set", json!({"unix_us": now}));
    assert_eq!(r["valid"], true, "{r}");
    assert_eq!(r["source"], "soft", "{r}");
    assert!(r["unix_us"].as_u64().unwrap().abs_diff(now) < 1_000_000, "{r}");
    c.wait_state("OPERATIONAL");
}
