//! Client-chosen strings against the real lwsysd: names and reasons are
//! validated before they can reach a log line, an event or a terminal, and
//! a request that repeats a key is refused rather than read last-wins.
#![allow(clippy::unwrap_used)]

use lwsys_tests::{TestDaemon, WAIT};
use serde_json::{json, Value};

#[test]
fn notifier_names_outside_the_documented_charset_are_bad_requests() {
    let d = TestDaemon::start(&[]);
    let mut c = d.connect();
    let long = "n".repeat(65);
    for name in ["", "a b", "evil\nINFO forged", "tab\there", "ü", "a\"b", "\u{1b}[31m", &long] {
        let r = c.err("notifier.register", json!({"name": name}), "bad_request");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(msg.contains("1 to 64 bytes of ASCII letters"), "{msg}");
        // The reply quotes at most a bounded preview of the name.
        assert!(msg.len() < 200, "{} bytes: {msg}", msg.len());
    }
    for name in ["ntp", "app-1", "svc_2.main", "x:y@z", &"n".repeat(64)] {
        let mut n = d.connect();
        n.ok("notifier.register", json!({"name": name}));
    }
}

#[test]
fn a_reason_with_control_characters_or_too_long_is_refused_and_changes_nothing() {
    let mut d = TestDaemon::start(&["--boot-target", "CONTEXT_CREATED"]);
    let mut n = d.connect();
    n.ok("notifier.register", json!({"name": "gate"}));
    let mut c = d.connect();
    let steps = c.send("state.steps", json!({"target": "INITIALIZED"}));
    let ev = n.event("consent");
    let ticket = ev["ticket"].clone();
    for reason in ["line\nCRIT forged", "\u{1b}]0;title\u{7}", &"r".repeat(257)] {
        let r = n.err(
            "consent.reply",
            json!({"ticket": ticket, "verdict": "defer", "reason": reason}),
            "bad_request",
        );
        assert!(r["error"]["message"].as_str().unwrap().contains("at most 256 bytes"), "{r}");
    }
    // The ticket is still live: a valid reply settles the round.
    n.ok("consent.reply", json!({"ticket": ticket, "verdict": "defer", "reason": "r".repeat(256)}));
    let r = c.reply(&json!(steps));
    assert_eq!(r["pending"]["reason"], json!("r".repeat(256)), "{r}");
    assert!(!d.logs().contains("forged"));
}

#[test]
fn a_request_that_repeats_a_key_is_a_bad_request_and_is_not_run() {
    let mut d = TestDaemon::start(&["--boot-target", "CONTEXT_CREATED"]);
    let mut c = d.connect();
    // Read last-wins, this would be a shutdown; read first-wins, a read.
    c.send_raw(b"{\"id\":1,\"op\":\"state.get\",\"op\":\"system.shutdown\"}\n");
    let r = c.reply(&json!(1));
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    c.send_raw(b"{\"id\":2,\"op\":\"attach\",\"state\":\"CONTEXT_CREATED\",\"request\":{\"op\":\"hello\",\"op\":\"system.shutdown\"}}\n");
    let r = c.reply(&json!(2));
    assert_eq!(r["error"]["code"], "bad_request", "{r}");
    // Two ids: which to echo is unknown, so the reply carries null.
    c.send_raw(b"{\"id\":3,\"id\":4,\"op\":\"hello\"}\n");
    let r = c.read(WAIT).expect("a reply");
    assert_eq!((r["id"].clone(), r["error"]["code"].clone()), (Value::Null, json!("bad_request")));
    // Nothing ran: the daemon is up and still where it was.
    let r = c.ok("state.get", json!({}));
    assert_eq!(r["state"], "CONTEXT_CREATED");
    assert!(!d.logs().contains("SIGTERM") && !d.logs().contains("shutting down"));
}
