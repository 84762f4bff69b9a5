//! `lwsysctl` end to end: the real binary against a real `lwsysd`, through
//! `--socket`, checking its text, its `--json`, and its exit statuses.
#![allow(clippy::unwrap_used)] // a test that cannot read its input should fail loudly

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lwsys_tests::{bin_path, Client, TestDaemon, WAIT};
use serde_json::{json, Value};

fn ctl(d: &TestDaemon, args: &[&str]) -> Output {
    Command::new(bin_path("lwsysctl"))
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .env_remove("LWSYS_SOCKET")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn ok(d: &TestDaemon, args: &[&str]) -> String {
    let o = ctl(d, args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

/// Register `c` as the notifier `name`. The reply is read by hand: the
/// daemon's `notifier.register` reply currently puts the registry id in
/// `id`, over the echoed request id, so `Client::ok` would not match it.
fn register(c: &mut Client, name: &str) {
    c.ok("notifier.register", json!({"name": name}));
}

#[test]
fn state_prints_the_state_and_since_when() {
    let d = TestDaemon::start(&[]);
    d.connect().wait_state("OPERATIONAL");
    let out = ok(&d, &["state"]);
    assert!(out.starts_with("OPERATIONAL (since 20"), "{out}");
    assert!(out.trim_end().ends_with("Z)"), "{out}");
}

#[test]
fn json_state_prints_the_protocol_reply_on_one_line() {
    let d = TestDaemon::start(&[]);
    d.connect().wait_state("OPERATIONAL");
    let out = ok(&d, &["--json", "state"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["state"], "OPERATIONAL");
    assert!(v["since_us"].as_u64().unwrap() > 0);
}

#[test]
fn steps_and_jump_move_a_held_boot() {
    let d = TestDaemon::start(&["--boot-target", "CONTEXT_CREATED"]);
    assert!(ok(&d, &["state"]).starts_with("CONTEXT_CREATED "));
    assert_eq!(ok(&d, &["steps", "TIME_VALID"]).trim(), "TIME_VALID");
    assert_eq!(ok(&d, &["jump", "OPERATIONAL"]).trim(), "OPERATIONAL");
    let r = d.connect().ok("state.get", Value::Null);
    assert_eq!(r["state"], "OPERATIONAL");
    let v: Value = serde_json::from_str(&ok(&d, &["--json", "jump", "POLICY_INVALID"])).unwrap();
    assert_eq!(v["reached"], true);
    assert_eq!(v["pending"], Value::Null);
}

#[test]
fn wait_returns_once_reached_and_a_timeout_exits_1() {
    let d = TestDaemon::start(&[]);
    assert_eq!(ok(&d, &["wait", "OPERATIONAL"]).trim(), "OPERATIONAL");
    let o = ctl(&d, &["wait", "MODAL_UPDATING", "--timeout-ms", "50"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: timeout: "), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
}

#[test]
fn explain_names_who_holds_the_walk_and_lists_the_rounds() {
    let d = TestDaemon::start(&["--boot-target", "CONTEXT_CREATED"]);
    let mut n = d.connect();
    register(&mut n, "ntp-wait");
    let mut c = d.connect();
    let id = c.send("state.steps", json!({"target": "TIME_VALID"}));
    loop {
        let ev = n.event("consent");
        let (verdict, reason) =
            if ev["target"] == "TIME_VALID" { ("defer", "no time yet") } else { ("allow", "") };
        n.ok(
            "consent.reply",
            json!({"ticket": ev["ticket"], "verdict": verdict, "reason": reason}),
        );
        if verdict == "defer" {
            break;
        }
    }
    assert_eq!(c.reply(&json!(id))["reached"], false);
    let out = ok(&d, &["explain"]);
    assert!(out.starts_with("state CPD_PRE_TIME since "), "{out}");
    assert!(out.contains("walk held: ntp-wait deferred TIME_VALID since "), "{out}");
    assert!(out.contains("CPD_PRE_TIME -> TIME_VALID"), "{out}");
    assert!(out.contains("deferred by ntp-wait"), "{out}");
    assert!(out.contains("ntp-wait defer \"no time yet\" "), "{out}");
    assert!(out.contains("committed"), "{out}");
}

#[test]
fn info_and_notifiers_show_the_registry() {
    let d = TestDaemon::start(&[]);
    let mut n = d.connect();
    register(&mut n, "watcher-7");
    let out = ok(&d, &["info"]);
    assert!(out.starts_with("lwsysd "), "{out}");
    assert!(out.contains("(protocol 1)"), "{out}");
    assert!(out.contains(&format!("pid {}", d.pid())), "{out}");
    assert!(out.contains("watcher-7 (connection)"), "{out}");
    let out = ok(&d, &["notifiers"]);
    assert!(out.starts_with("NAME"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("watcher-7") && l.ends_with("connection")), "{out}");
}

#[test]
fn raw_sends_the_line_and_prints_the_reply() {
    let d = TestDaemon::start(&[]);
    let v: Value = serde_json::from_str(&ok(&d, &["raw", r#"{"op":"hello"}"#])).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["protocol"], 1);
    assert!(v["id"].is_number(), "an id is added: {v}");
    let v: Value =
        serde_json::from_str(&ok(&d, &["raw", r#"{"op":"state.get","id":"mine"}"#])).unwrap();
    assert_eq!(v["id"], "mine");
    let o = ctl(&d, &["raw", "[1]"]);
    assert_eq!(o.status.code(), Some(2), "not an object is a usage error");
}

#[test]
fn an_error_reply_exits_1_with_the_code_on_stderr() {
    let d = TestDaemon::start(&[]);
    let o = ctl(&d, &["raw", r#"{"op":"no.such.op"}"#]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("error: unknown_op: "), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["error"]["code"], "unknown_op");
    let o = ctl(&d, &["--json", "wait", "MODAL_UPDATING", "--timeout-ms", "10"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["error"]["code"], "timeout");
    assert_eq!(v["state"], "OPERATIONAL");
}

#[test]
fn a_bad_socket_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody.sock");
    let o = Command::new(bin_path("lwsysctl"))
        .arg("--socket")
        .arg(&path)
        .arg("state")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.starts_with(&format!("cannot connect to {}: ", path.display())), "{err}");
    // So does a command line that does not parse.
    let o = Command::new(bin_path("lwsysctl")).args(["steps", "NOWHERE"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn the_socket_can_come_from_the_environment() {
    let d = TestDaemon::start(&[]);
    let o = Command::new(bin_path("lwsysctl"))
        .arg("state")
        .env("LWSYS_SOCKET", d.socket())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// `lwsysctl watch` (with `extra` flags) on `d`, its stdout lines on a
/// channel.
fn spawn_watch(d: &TestDaemon, extra: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(bin_path("lwsysctl"))
        .arg("--socket")
        .arg(d.socket())
        .args(extra)
        .arg("watch")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Wait until the watch is subscribed: it reports a notifier coming and
/// going. Pokes until it does, so what the test does next cannot happen
/// before the subscription. Returns the first line printed.
fn wait_subscribed(d: &TestDaemon, rx: &mpsc::Receiver<String>) -> String {
    let deadline = Instant::now() + WAIT;
    for n in 0.. {
        let mut p = d.connect();
        register(&mut p, &format!("poke-{n}"));
        drop(p);
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            return l;
        }
        assert!(Instant::now() < deadline, "watch printed nothing");
    }
    unreachable!()
}

#[test]
fn watch_prints_a_state_event_when_another_client_jumps() {
    let d = TestDaemon::start(&[]);
    d.connect().wait_state("OPERATIONAL");
    let (mut child, rx) = spawn_watch(&d, &[]);
    let first = wait_subscribed(&d, &rx);
    // The subscription may land between a poke's registration and its
    // unregistration: either line shows the watch is live.
    assert!(
        first.starts_with("notifier registered poke-")
            || first.starts_with("notifier unregistered poke-"),
        "{first}"
    );
    d.connect().ok("state.jump", json!({"target": "POLICY_INVALID"}));
    loop {
        let l = rx.recv_timeout(WAIT).expect("no state line from watch");
        if l.contains(" state OPERATIONAL -> POLICY_INVALID") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn shutdown_makes_the_daemon_exit_0() {
    let mut d = TestDaemon::start(&[]);
    d.connect().wait_state("OPERATIONAL");
    assert_eq!(ok(&d, &["shutdown"]).trim(), "CONTEXT_DESTROYING");
    assert!(d.wait_exit().success());
}

#[test]
fn watch_prints_json_events_and_ends_with_0_when_the_daemon_closes() {
    let mut d = TestDaemon::start(&[]);
    d.connect().wait_state("OPERATIONAL");
    let (mut child, rx) = spawn_watch(&d, &["--json"]);
    let first: Value = serde_json::from_str(&wait_subscribed(&d, &rx)).unwrap();
    assert_eq!(first["event"], "notifier");
    ok(&d, &["shutdown"]);
    assert!(d.wait_exit().success());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "watch did not end when the daemon closed");
        // Exit is the event; poll it finely.
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(status.code(), Some(0));
    // The child has exited, so its stdout is at EOF and this ends.
    let rest: Vec<Value> = rx.iter().map(|l| serde_json::from_str(&l).unwrap()).collect();
    assert!(rest.iter().all(|v| v.get("event").is_some()), "only events: {rest:?}");
    assert!(
        rest.iter().any(|v| v["event"] == "state" && v["to"] == "CONTEXT_DESTROYING"),
        "{rest:?}"
    );
}
