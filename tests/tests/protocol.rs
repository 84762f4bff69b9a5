//! Scenario tests of the control protocol against the real `lwsysd`, over
//! the socket and stdio: boot, held boot, socket notifiers that defer,
//! deny or stay silent, bad input, slow clients, signals and exit codes.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::time::Duration;

use lwsys_tests::{Client, Options, TestDaemon};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

fn held() -> TestDaemon {
    TestDaemon::start(&["--boot-target", "CONTEXT_CREATED", "--consent-timeout-ms", "300"])
}

#[test]
fn boots_to_operational_on_the_embedded_defaults() {
    let d = TestDaemon::start(&[]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    let hello = c.ok("hello", json!({}));
    assert_eq!(hello["protocol"], 1);
    assert_eq!(hello["state"], "OPERATIONAL");
    let got = c.ok("state.get", json!({}));
    assert_eq!(got["state"], "OPERATIONAL");
    assert!(got["since_us"].as_u64().unwrap() > 1_600_000_000_000_000);
    // The socket is private to the daemon's user.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_held_boot_waits_at_context_created_until_asked() {
    let d = held();
    let mut c = d.connect();
    assert_eq!(c.ok("state.get", json!({}))["state"], "CONTEXT_CREATED");
    let r = c.ok("state.steps", json!({"target": "DHCP"}));
    assert_eq!((r["state"].as_str(), r["reached"].as_bool()), (Some("DHCP"), Some(true)));
    assert_eq!(r["pending"], Value::Null);
    let r = c.ok("state.jump", json!({"target": "OPERATIONAL"}));
    assert_eq!(r["state"], "OPERATIONAL");
    // Lower target: no-op, reached.
    let r = c.ok("state.steps", json!({"target": "INITIALIZED"}));
    assert_eq!((r["state"].as_str(), r["reached"].as_bool()), (Some("OPERATIONAL"), Some(true)));
}

/// Answer every consent event on `n` with `verdict_for(target)` until a
/// `changed` to `until` arrives.
fn answer_until(n: &mut Client, until: &str, verdict_for: impl Fn(&str) -> &'static str) {
    loop {
        let ev = n.read(lwsys_tests::WAIT).expect("notifier got nothing");
        match ev["event"].as_str() {
            Some("consent") => {
                let v = verdict_for(ev["target"].as_str().unwrap());
                n.send(
                    "consent.reply",
                    json!({"ticket": ev["ticket"], "verdict": v, "reason": "test"}),
                );
            }
            Some("changed") if ev["to"] == until => return,
            _ => {}
        }
    }
}

#[test]
fn a_socket_notifier_defers_time_valid_and_later_resumes_the_walk() {
    let d = TestDaemon::start(&["--boot-target", "CONTEXT_CREATED"]);
    let mut n = d.connect();
    n.ok("notifier.register", json!({"name": "ntp"}));
    let mut c = d.connect();
    let id = c.send("state.steps", json!({"target": "OPERATIONAL"}));
    // Allow everything up to CPD_PRE_TIME, defer TIME_VALID.
    loop {
        let ev = n.event("consent");
        let target = ev["target"].as_str().unwrap().to_owned();
        let verdict = if target == "TIME_VALID" { "defer" } else { "allow" };
        n.ok(
            "consent.reply",
            json!({"ticket": ev["ticket"], "verdict": verdict, "reason": "no time yet"}),
        );
        if target == "TIME_VALID" {
            break;
        }
    }
    let r = c.reply(&json!(id));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!((r["state"].as_str(), r["reached"].as_bool()), (Some("CPD_PRE_TIME"), Some(false)));
    assert_eq!(r["pending"]["by"], "ntp");
    assert_eq!(r["pending"]["reason"], "no time yet");
    let why = c.ok("state.explain", json!({}));
    assert_eq!(why["pending"]["by"], "ntp");
    assert!(!why["journal"].as_array().unwrap().is_empty());

    let r = n.ok("notifier.resume", json!({"name": "ntp"}));
    assert_eq!(r["resumed"], true);
    answer_until(&mut n, "OPERATIONAL", |_| "allow");
    assert_eq!(c.wait_state("OPERATIONAL")["state"], "OPERATIONAL");
}

#[test]
fn a_socket_notifier_that_denies_refuses_the_request() {
    let d = held();
    let mut n = d.connect();
    n.ok("notifier.register", json!({"name": "veto"}));
    let mut c = d.connect();
    let id = c.send("state.steps", json!({"target": "OPERATIONAL"}));
    loop {
        let ev = n.event("consent");
        let deny = ev["target"] == "DHCP";
        n.ok("consent.reply", json!({"ticket": ev["ticket"], "verdict": if deny { "deny" } else { "allow" }, "reason": "no link"}));
        if deny {
            break;
        }
    }
    let r = c.reply(&json!(id));
    assert_eq!(r["ok"], false);
    assert_eq!(r["error"]["code"], "denied");
    assert_eq!(r["by"], "veto");
    assert_eq!(r["state"], "IFACE_COLDPLUG");
    assert_eq!(c.ok("state.get", json!({}))["state"], "IFACE_COLDPLUG");
}

#[test]
fn a_silent_notifier_times_out_and_its_late_reply_is_stale() {
    let d = held();
    let mut watcher = d.connect();
    watcher.ok("subscribe", json!({"events": ["notifier"]}));
    let mut n = d.connect();
    n.ok("notifier.register", json!({"name": "mute"}));
    let mut c = d.connect();
    let r = c.ok("state.steps", json!({"target": "PRE_PRIV_DROP"}));
    assert_eq!(r["reached"], false);
    assert_eq!(r["pending"]["by"], "mute");
    assert_eq!(r["pending"]["reason"], "timeout");
    let ev = watcher.event("notifier");
    assert_eq!(ev["kind"], "registered");
    let ev = watcher.event("notifier");
    assert_eq!((ev["kind"].as_str(), ev["name"].as_str()), (Some("timeout"), Some("mute")));
    let consent = n.event("consent");
    n.err("consent.reply", json!({"ticket": consent["ticket"], "verdict": "allow"}), "not_found");
    assert_eq!(c.ok("state.get", json!({}))["state"], "CONTEXT_CREATED");
}

#[test]
fn a_notifier_whose_connection_closes_is_unregistered_and_its_walk_goes_on() {
    let d = held();
    let mut n = d.connect();
    n.ok("notifier.register", json!({"name": "flaky"}));
    let mut c = d.connect();
    let id = c.send("state.steps", json!({"target": "OPERATIONAL"}));
    let ev = n.event("consent");
    n.ok("consent.reply", json!({"ticket": ev["ticket"], "verdict": "defer", "reason": "later"}));
    assert_eq!(c.reply(&json!(id))["pending"]["by"], "flaky");
    drop(n);
    assert_eq!(c.wait_state("OPERATIONAL")["state"], "OPERATIONAL");
    let info = c.ok("system.info", json!({}));
    assert!(!info["notifiers"].as_array().unwrap().iter().any(|x| x["name"] == "flaky"), "{info}");
}

#[test]
fn changed_and_aborted_events_reach_socket_notifiers() {
    let d = held();
    let mut a = d.connect();
    a.ok("notifier.register", json!({"name": "a"}));
    let mut b = d.connect();
    b.ok("notifier.register", json!({"name": "b"}));
    let mut c = d.connect();
    let id = c.send("state.jump", json!({"target": "DHCP"}));
    let ev = a.event("consent");
    a.ok("consent.reply", json!({"ticket": ev["ticket"], "verdict": "allow"}));
    let ev = b.event("consent");
    b.ok("consent.reply", json!({"ticket": ev["ticket"], "verdict": "deny", "reason": "busy"}));
    assert_eq!(c.reply(&json!(id))["error"]["code"], "denied");
    let ab = a.event("aborted");
    assert_eq!(
        (ab["current"].as_str(), ab["target"].as_str()),
        (Some("CONTEXT_CREATED"), Some("DHCP"))
    );
    // Now both allow: each sees exactly one changed.
    let id = c.send("state.jump", json!({"target": "DHCP"}));
    for n in [&mut a, &mut b] {
        let ev = n.event("consent");
        n.ok("consent.reply", json!({"ticket": ev["ticket"], "verdict": "allow"}));
    }
    assert_eq!(c.reply(&json!(id))["state"], "DHCP");
    for n in [&mut a, &mut b] {
        let ch = n.event("changed");
        assert_eq!(
            (ch["from"].as_str(), ch["to"].as_str()),
            (Some("CONTEXT_CREATED"), Some("DHCP"))
        );
    }
}

#[test]
fn state_events_stream_to_subscribers() {
    let d = held();
    let mut w = d.connect();
    let r = w.ok("subscribe", json!({"events": ["state"]}));
    assert_eq!(r["events"], json!(["state"]));
    let mut c = d.connect();
    c.ok("state.steps", json!({"target": "INITIALIZED"}));
    let e1 = w.event("state");
    let e2 = w.event("state");
    assert_eq!(
        (e1["from"].as_str(), e1["to"].as_str()),
        (Some("CONTEXT_CREATED"), Some("PRE_PRIV_DROP"))
    );
    assert_eq!(
        (e2["from"].as_str(), e2["to"].as_str()),
        (Some("PRE_PRIV_DROP"), Some("INITIALIZED"))
    );
    assert!(e2["at_us"].as_u64().unwrap() >= e1["at_us"].as_u64().unwrap());
    w.err("subscribe", json!({"events": ["bogus"]}), "bad_request");
}

#[test]
fn state_wait_answers_when_reached_or_times_out_with_the_state() {
    let d = held();
    let mut c = d.connect();
    let r = c.err("state.wait", json!({"state": "DHCP", "timeout_ms": 100}), "timeout");
    assert_eq!(r["state"], "CONTEXT_CREATED");
    let id = c.send("state.wait", json!({"state": "DHCP"}));
    let mut other = d.connect();
    other.ok("state.steps", json!({"target": "DHCP"}));
    assert_eq!(c.reply(&json!(id))["state"], "DHCP");
}

#[test]
fn cycles_run_over_the_protocol() {
    let d = TestDaemon::start(&[]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    let r = c.ok("state.policy_invalidate", json!({}));
    assert_eq!((r["state"].as_str(), r["reached"].as_bool()), (Some("OPERATIONAL"), Some(true)));
    let r = c.ok("state.enter_modal", json!({}));
    assert_eq!(r["state"], "MODAL_UPDATING");
    let r = c.ok("state.leave_modal", json!({}));
    assert_eq!(r["state"], "OPERATIONAL");
}

/// Every bad input gets its code, the connection stays, the state stays.
fn bad_inputs_are_answered_and_change_nothing(c: &mut Client) {
    let before = c.ok("state.get", json!({}))["state"].clone();
    let cases: Vec<(&[u8], &str)> = vec![
        (b"this is not json\n", "parse_error"),
        (b"{\"op\": \"state.get\"\n", "parse_error"),
        (b"[1, 2, 3]\n", "bad_request"),
        (b"42\n", "bad_request"),
        (b"\"state.get\"\n", "bad_request"),
        (b"{\"id\": 1}\n", "bad_request"),
        (b"{\"id\": 2, \"op\": 7}\n", "bad_request"),
        (b"{\"id\": 3, \"op\": \"no.such.op\"}\n", "unknown_op"),
        (b"{\"id\": 4, \"op\": \"state.steps\"}\n", "bad_request"),
        (b"{\"id\": 5, \"op\": \"state.steps\", \"target\": 8}\n", "bad_request"),
        (b"{\"id\": 6, \"op\": \"state.jump\", \"target\": \"NOT_A_STATE\"}\n", "bad_request"),
        (
            b"{\"id\": 7, \"op\": \"state.wait\", \"state\": \"DHCP\", \"timeout_ms\": -1}\n",
            "bad_request",
        ),
        (
            b"{\"id\": 8, \"op\": \"consent.reply\", \"ticket\": 12345, \"verdict\": \"allow\"}\n",
            "not_found",
        ),
        (
            b"{\"id\": 9, \"op\": \"consent.reply\", \"ticket\": 1, \"verdict\": \"maybe\"}\n",
            "bad_request",
        ),
        (b"{\"id\": 10, \"op\": \"notifier.unregister\", \"name\": \"nobody\"}\n", "not_found"),
        (b"{\"id\": 11, \"op\": \"notifier.register\", \"name\": \"\"}\n", "bad_request"),
        (b"\xff\xfe\xfd\n", "parse_error"),
    ];
    for (line, code) in cases {
        c.send_raw(line);
        let r = c.read(lwsys_tests::WAIT).unwrap_or_else(|| panic!("no answer to {line:?}"));
        assert_eq!(r["ok"], false, "{line:?}: {r}");
        assert_eq!(r["error"]["code"], code, "{:?}: {r}", String::from_utf8_lossy(line));
        assert!(r["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Unknown fields are ignored.
    let r = c.ok("state.get", json!({"future_field": [1, 2]}));
    assert_eq!(r["state"], before);
    // Ids of any JSON type are echoed.
    c.send_raw(b"{\"id\": {\"nested\": [1]}, \"op\": \"state.get\"}\n");
    assert_eq!(c.read(lwsys_tests::WAIT).unwrap()["id"], json!({"nested": [1]}));
}

#[test]
fn bad_input_over_the_socket_is_answered_and_changes_nothing() {
    let d = held();
    let mut c = d.connect();
    bad_inputs_are_answered_and_change_nothing(&mut c);
}

#[test]
fn bad_input_over_stdio_is_answered_and_changes_nothing() {
    let mut d = TestDaemon::start_stdio(&["--boot-target", "CONTEXT_CREATED"]);
    let mut c = d.stdio();
    bad_inputs_are_answered_and_change_nothing(&mut c);
}

#[test]
fn an_over_long_line_is_refused_and_the_next_line_still_works() {
    let d = held();
    let mut c = d.connect();
    let mut big = Vec::with_capacity(3 << 20);
    big.extend_from_slice(b"{\"id\": 1, \"op\": \"state.get\", \"pad\": \"");
    big.resize(3 << 20, b'x');
    big.extend_from_slice(b"\"}\n");
    c.send_raw(&big);
    let r = c.read(lwsys_tests::WAIT).unwrap();
    assert_eq!((r["id"].clone(), r["error"]["code"].clone()), (Value::Null, json!("too_large")));
    assert_eq!(c.ok("state.get", json!({}))["state"], "CONTEXT_CREATED");
    // Exactly at the limit is fine (it is JSON, so it parses).
    let mut line = b"{\"op\":\"state.get\",\"id\":2,\"p\":\"".to_vec();
    line.resize(lwsys_messages::protocol::MAX_LINE - 2, b'y');
    line.extend_from_slice(b"\"}\n");
    assert_eq!(line.len(), lwsys_messages::protocol::MAX_LINE + 1);
    c.send_raw(&line);
    assert_eq!(c.read(lwsys_tests::WAIT).unwrap()["ok"], true);
}

#[test]
fn a_client_that_does_not_read_is_disconnected_and_others_carry_on() {
    let mut d = TestDaemon::with(Options {
        config: Some("[control]\nclient_queue_bytes = 1\n".into()),
        args: vec!["--boot-target".into(), "CONTEXT_CREATED".into()],
        ..Options::default()
    });
    // A raw socket we write to and never read from.
    let mut slow = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    slow.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let req =
        b"{\"op\":\"hello\",\"id\":\"pad-pad-pad-pad-pad-pad-pad-pad-pad-pad-pad-pad-pad-pad\"}\n";
    let mut sent = 0usize;
    // Enough replies to fill the kernel buffers and the bounded queue.
    while sent < 200_000 && slow.write_all(req).is_ok() {
        sent += 1;
    }
    d.wait_log("not reading");
    let mut c = d.connect();
    assert_eq!(c.ok("state.get", json!({}))["state"], "CONTEXT_CREATED");
}

#[test]
fn sigterm_shuts_down_through_context_destroying_and_exits_zero() {
    let mut d = TestDaemon::start(&[]);
    let mut n = d.connect();
    n.wait_state("OPERATIONAL");
    n.ok("notifier.register", json!({"name": "watcher"}));
    d.signal(Signal::SIGTERM);
    answer_until(&mut n, "CONTEXT_DESTROYING", |_| "allow");
    assert!(d.wait_exit().success());
    assert!(!d.socket().exists(), "socket file left behind");
}

#[test]
fn sigint_exits_zero_too() {
    let mut d = TestDaemon::start(&[]);
    d.connect().wait_state("OPERATIONAL");
    d.signal(Signal::SIGINT);
    assert_eq!(d.wait_exit().code(), Some(0));
}

#[test]
fn system_shutdown_replies_then_exits_zero() {
    let mut d = TestDaemon::start(&[]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    let r = c.ok("system.shutdown", json!({}));
    assert_eq!(r["state"], "CONTEXT_DESTROYING");
    assert_eq!(d.wait_exit().code(), Some(0));
}

#[test]
fn eof_on_stdin_is_a_clean_shutdown() {
    let mut d = TestDaemon::start_stdio(&[]);
    let mut c = d.stdio();
    c.wait_state("OPERATIONAL");
    drop(c);
    assert_eq!(d.wait_exit().code(), Some(0));
    assert!(d.logs().contains("CONTEXT_DESTROYING"));
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let mut first = TestDaemon::start(&[]);
    let dir = first.state_dir().to_owned();
    // Live: a second daemon on the same socket fails with 70.
    let mut second = TestDaemon::with_no_wait(&dir);
    assert_eq!(second.wait_exit().code(), Some(70));
    assert!(second.logs().contains("already serving"), "{}", second.logs());
    // Stale: after SIGKILL the socket file stays, and a new daemon takes it.
    first.kill();
    assert!(first.socket().exists());
    let d = TestDaemon::with(Options { state_dir: Some(dir), ..Options::default() });
    d.connect().wait_state("OPERATIONAL");
}

#[test]
fn bad_command_lines_and_configs_exit_64() {
    let out = std::process::Command::new(lwsys_tests::bin_path("lwsysd"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = std::process::Command::new(lwsys_tests::bin_path("lwsysd"))
        .args(["--boot-target", "NOWHERE"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[supervisor]\nboot_target = \"OPERATIONAL\"\nmystery = true\n").unwrap();
    let out = std::process::Command::new(lwsys_tests::bin_path("lwsysd"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3: [supervisor] mystery: unknown field"), "{err}");
}

#[test]
fn print_config_prints_the_effective_config() {
    let out = std::process::Command::new(lwsys_tests::bin_path("lwsysd"))
        .args(["--print-config", "--consent-timeout-ms", "1234"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("consent_timeout_ms = 1234"), "{text}");
    assert!(text.contains("[blobs]"), "{text}");
}
