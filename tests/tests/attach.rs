//! The `attach {state, request}` op against the real daemon: the nested
//! request runs through the attach queue once the state is reached, and
//! its reply carries the outer id.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use lwsys_tests::TestDaemon;
use serde_json::json;

#[test]
fn an_attached_request_runs_once_its_state_is_reached_with_the_outer_id() {
    let d = TestDaemon::start(&["--boot-target", "CONTEXT_CREATED"]);
    let mut c = d.connect();
    let id =
        c.send("attach", json!({"state": "DHCP", "request": {"op": "state.get", "id": "inner"}}));
    // Not before DHCP.
    assert!(c.read(Duration::from_millis(200)).is_none(), "answered before the state was reached");
    let mut other = d.connect();
    other.ok("state.steps", json!({"target": "DHCP"}));
    let r = c.reply(&json!(id));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["state"], "DHCP");
    let info = other.ok("system.info", json!({}));
    assert_eq!(info["attach"]["run"], 1, "{info}");
}

#[test]
fn an_attach_for_a_state_already_passed_runs_at_once_in_fifo_order() {
    let d = TestDaemon::start(&[]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    let a = c.send("attach", json!({"state": "INITIALIZED", "request": {"op": "hello"}}));
    let b = c.send("attach", json!({"state": "OPERATIONAL", "request": {"op": "state.get"}}));
    assert_eq!(c.reply(&json!(a))["protocol"], 1);
    assert_eq!(c.reply(&json!(b))["state"], "OPERATIONAL");
}

#[test]
fn a_bad_attach_is_refused_and_a_bad_nested_request_answers_with_its_error() {
    let d = TestDaemon::start(&[]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    c.err("attach", json!({"state": "NOPE", "request": {"op": "hello"}}), "bad_request");
    c.err("attach", json!({"state": "DHCP"}), "bad_request");
    c.err("attach", json!({"state": "DHCP", "request": {"no_op": 1}}), "bad_request");
    c.err("attach", json!({"state": "DHCP", "request": {"op": "no.such"}}), "unknown_op");
}
