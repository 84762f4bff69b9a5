//! Supervision of the service actors in the real daemon: a service killed
//! by a panic (the `debug.crash` fault hook, on only with
//! `LWSYS_FAULT_INJECTION=1`) is restarted with its durable state
//! reloaded, the request in flight to it is answered `internal`, the
//! daemon keeps serving, and past the restart limit it exits 70. The OTA
//! service too: its replacement takes the slots over only once the dead
//! one's worker has ended, and leaves the MODAL_UPDATING it held.
#![allow(clippy::unwrap_used)]

#[path = "common/ota_repo.rs"]
mod ota_repo;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lwsys_tests::{Client, Options, TestDaemon};
use ota_repo::{Repo, Served, Serving};
use serde_json::{json, Value};

/// Waits for a `state` event entering `to`.
fn wait_entered(c: &mut Client, to: &str) {
    loop {
        let e = c.event("state");
        if e["to"] == to {
            return;
        }
    }
}

fn fault_env() -> Vec<(String, String)> {
    vec![("LWSYS_FAULT_INJECTION".into(), "1".into())]
}

fn daemon(config: &str, args: &[&str]) -> TestDaemon {
    TestDaemon::with(Options {
        config: Some(config.into()),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![("LWSYS_FAULT_INJECTION".into(), "1".into())],
        ..Options::default()
    })
}

/// Crash `service` and wait for the supervisor to report it restarted.
fn crash(c: &mut Client, service: &str) -> Value {
    let r = c.err("debug.crash", json!({"service": service}), "internal");
    assert!(r["error"]["message"].as_str().unwrap().contains(service), "{r}");
    loop {
        let ev = c.event("service");
        if ev["service"] == service {
            return ev;
        }
    }
}

#[test]
fn each_service_is_restarted_after_a_panic_and_the_daemon_keeps_serving() {
    let d = daemon("", &[]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    c.ok("subscribe", json!({"events": ["service"]}));
    c.ok("blob.set", json!({"kind": "AUTH", "idx": 1, "data": "token"}));
    c.ok("blob.set", json!({"kind": "MQTT_USERNAME", "data": "volatile"}));

    let ev = crash(&mut c, "blobs");
    assert_eq!((ev["kind"].as_str(), ev["restarts"].as_u64()), (Some("restarted"), Some(1)));
    // Durable state is reloaded; a kind that is not durable starts empty,
    // as after a daemon restart.
    assert_eq!(c.ok("blob.get", json!({"kind": "AUTH", "idx": 1}))["data"], "token");
    assert_eq!(c.ok("blob.size", json!({"kind": "MQTT_USERNAME"}))["size"], 0);
    c.ok("blob.set", json!({"kind": "DEVICE_SERIAL", "data": "after"}));

    crash(&mut c, "clock");
    let clock = c.ok("clock.get", json!({}));
    assert_eq!(clock["valid"], true, "{clock}");
    // The new clock is the same notifier, in the same place.
    let info = c.ok("system.info", json!({}));
    assert_eq!(info["notifiers"][0]["name"], "clock", "{info}");

    crash(&mut c, "trust");
    c.err("trust.query", json!({"skid": "00112233"}), "not_found");

    assert_eq!(c.ok("state.get", json!({}))["state"], "OPERATIONAL");
    // The system still walks, asking the new clock.
    let r = c.ok("state.policy_invalidate", json!({}));
    assert_eq!(r["state"], "OPERATIONAL");
}

#[test]
fn a_walk_held_by_the_clock_goes_on_after_the_clock_is_restarted() {
    let config = "[time]\nsource = \"sntp\"\nserver = \"127.0.0.1:9\"\nbackoff_min_ms = 100\nbackoff_max_ms = 200\nquery_timeout_ms = 100\n";
    let d = daemon(config, &[]);
    let mut c = d.connect();
    c.ok("subscribe", json!({"events": ["service"]}));
    // Held at TIME_VALID by the clock (nothing answers SNTP there).
    loop {
        let e = c.ok("state.explain", json!({}));
        if e["pending"]["by"] == "clock" {
            break;
        }
        c.err("state.wait", json!({"state": "CPD_PRE_TIME", "timeout_ms": 50}), "timeout");
    }
    crash(&mut c, "clock");
    // The new clock is asked again and holds the walk again.
    loop {
        let e = c.ok("state.explain", json!({}));
        let round = e["journal"].as_array().unwrap().last().cloned().unwrap();
        if e["pending"]["by"] == "clock" && round["target"] == "TIME_VALID" {
            break;
        }
        c.err("state.wait", json!({"state": "TIME_VALID", "timeout_ms": 50}), "timeout");
    }
    c.ok("clock.set", json!({"unix_us": 1_800_000_000_000_000u64}));
    assert_eq!(c.wait_state("OPERATIONAL")["state"], "OPERATIONAL");
}

#[test]
fn a_service_that_keeps_dying_makes_the_daemon_exit_70() {
    let mut d = daemon("[supervisor]\nmax_restarts = 2\nrestart_window_secs = 3600\n", &[]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    c.ok("subscribe", json!({"events": ["service"]}));
    crash(&mut c, "blobs");
    crash(&mut c, "blobs");
    let ev = crash(&mut c, "blobs");
    assert_eq!(ev["kind"], "gave_up", "{ev}");
    assert_eq!(d.wait_exit().code(), Some(70));
    assert!(d.logs().contains("giving up on a service"));
}

#[test]
fn the_fault_hook_does_not_exist_without_its_environment_variable() {
    let d = TestDaemon::start(&[]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    c.err("debug.crash", json!({"service": "blobs"}), "unknown_op");
}

#[test]
fn the_ota_service_is_restarted_after_a_panic_and_still_installs() {
    let repo = Repo::new(1000);
    let mut d = repo.daemon_with("", None, fault_env());
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    c.ok("subscribe", json!({"events": ["service"]}));
    let ev = crash(&mut c, "ota");
    assert_eq!((ev["kind"].as_str(), ev["restarts"].as_u64()), (Some("restarted"), Some(1)));
    let s = c.ok("ota.status", json!({}));
    assert_eq!(
        (s["selected"].as_str(), s["slots"][0]["status"].as_str()),
        (Some("a"), Some("good"))
    );
    // The new service's worker has the slots: it installs (and reboots).
    let r = c.ok("ota.check", json!({}));
    assert_eq!(r["updated"], true, "{r}");
    assert!(d.wait_exit().success());
    assert_eq!(std::fs::read(d.state_dir().join("ota/b/image")).unwrap(), repo.image);
}

#[test]
fn ota_crashed_mid_install_leaves_modal_and_its_successor_resumes_the_download() {
    let serving = Serving { piece: 16 << 10, pause: None, ranges: true };
    let served = Arc::new(Served::default());
    // 1 MiB that gzip cannot shrink, so the download spans many reads.
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(14);
    let image = (0..1 << 20).map(|_| rand::Rng::gen::<u8>(&mut rng)).collect();
    let repo = Repo::served(1000, image, serving, served.clone());
    let n = 128 << 10;
    served.hold_at(n);
    let mut d = repo.daemon_with("", None, fault_env());
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    c.ok("subscribe", json!({"events": ["service", "state"]}));
    let mut trigger = d.connect();
    let check = trigger.send("ota.check", json!({}));
    served.wait_image_bytes(n);
    let partial = d.state_dir().join("ota/download.gz.partial");
    let deadline = Instant::now() + lwsys_tests::WAIT;
    while std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) < n {
        assert!(Instant::now() < deadline, "the download was not saved");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(c.ok("state.get", json!({}))["state"], "MODAL_UPDATING");
    crash(&mut c, "ota");
    // The check the dead service was running is answered, not left hanging.
    let r = trigger.reply(&json!(check));
    assert_eq!(
        (r["ok"].as_bool(), r["error"]["code"].as_str()),
        (Some(false), Some("denied")),
        "{r}"
    );
    // The successor gives the held MODAL_UPDATING back.
    loop {
        let e = c.event("state");
        if e["to"] == "OPERATIONAL" {
            break;
        }
    }
    let s = c.ok("ota.status", json!({}));
    assert_eq!(s["last_error_kind"], "restarted", "{s}");
    assert_eq!(s["selected"], "a", "{s}");
    // The dead service's worker is still in its read; let the server go
    // on: it sees the cancel, aborts its slot write and hands the slots
    // over. The successor then resumes the saved download.
    served.release();
    c.ok("subscribe", json!({"events": ["ota"]}));
    let r = c.ok("ota.check", json!({}));
    assert_eq!(r["updated"], true, "{r}");
    let mut resumed = 0;
    loop {
        let e = c.event("ota");
        resumed = resumed.max(e["resumed_from"].as_u64().unwrap());
        if e["phase"] == "done" {
            break;
        }
    }
    assert!(resumed >= n, "resumed from {resumed}, saved {n}");
    assert!(d.wait_exit().success());
    assert_eq!(std::fs::read(d.state_dir().join("ota/b/image")).unwrap(), repo.image);
}

#[test]
fn an_ota_service_that_keeps_dying_counts_against_the_restart_limit() {
    let repo = Repo::new(1000);
    let extra = "\n[supervisor]\nmax_restarts = 1\nrestart_window_secs = 3600";
    let mut d = repo.daemon_with(extra, None, fault_env());
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    c.ok("subscribe", json!({"events": ["service"]}));
    assert_eq!(crash(&mut c, "ota")["kind"], "restarted");
    let ev = crash(&mut c, "ota");
    assert_eq!(ev["kind"], "gave_up", "{ev}");
    assert_eq!(d.wait_exit().code(), Some(70));
}

#[test]
fn a_modal_walk_the_dead_ota_service_left_parked_is_given_back_when_it_goes_on() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let repo = Repo::new(1000);
    let d = repo.daemon_with("", None, fault_env());
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    // A notifier that defers MODAL_UPDATING while `defer` is set.
    let defer = Arc::new(AtomicBool::new(true));
    let mut n = d.connect();
    n.ok("notifier.register", json!({"name": "slow-app"}));
    let (flag, stop) = (defer.clone(), Arc::new(AtomicBool::new(false)));
    let stopped = stop.clone();
    let app = std::thread::spawn(move || {
        while !stopped.load(Ordering::SeqCst) {
            let Some(e) = n.read(Duration::from_millis(100)) else { continue };
            if e["event"] != "consent" {
                continue;
            }
            let verdict = if e["target"] == "MODAL_UPDATING" && flag.load(Ordering::SeqCst) {
                "defer"
            } else {
                "allow"
            };
            let reply = json!({"ticket": e["ticket"], "verdict": verdict, "reason": "saving"});
            n.send("consent.reply", reply);
        }
    });
    c.ok("subscribe", json!({"events": ["service", "state", "ota"]}));
    let mut trigger = d.connect();
    trigger.send("ota.check", json!({}));
    loop {
        let e = c.event("ota");
        if e["phase"] == "awaiting_consent"
            && e["error"].as_str().is_some_and(|m| m.contains("slow-app"))
        {
            break;
        }
    }
    // The walk to MODAL_UPDATING is parked by slow-app; the service dies.
    crash(&mut c, "ota");
    // Its successor leaves AWAITING_MODAL_UPDATING at once...
    wait_entered(&mut c, "OPERATIONAL");
    // ...and when the parked walk goes on and reaches MODAL_UPDATING,
    // where nobody installs, it gives that back too.
    defer.store(false, Ordering::SeqCst);
    let r = c.ok("notifier.resume", json!({"name": "slow-app"}));
    assert_eq!(r["resumed"], true, "{r}");
    wait_entered(&mut c, "MODAL_UPDATING");
    loop {
        let e = c.event("state");
        if e["to"] == "OPERATIONAL" {
            break;
        }
    }
    let s = c.ok("ota.status", json!({}));
    assert_eq!(s["selected"], "a", "{s}");
    stop.store(true, Ordering::SeqCst);
    app.join().unwrap();
}
