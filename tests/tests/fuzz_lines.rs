//! Stable-toolchain fuzzing of a running `lwsysd` (issue 10, "Fuzzing"):
//! proptest sends random byte lines and random JSON values over the socket
//! and checks, after every case, that the daemon is alive, answered the
//! line exactly once with the right `id`, and that nothing changed: the
//! state (and when it was entered), the notifier registry and the blobs.
//!
//! Ops that would rightly change something or block are never sent with
//! parameters that could be valid; see [`GUARDED`] and [`NO_PARAMS`]. The
//! nightly `cargo fuzz` target (fuzz/, `scripts/fuzz`) covers the decoder
//! and dispatcher in process at a much higher rate.
//!
//! 1024 cases per test by default (about a second each); `LWSYS_SLOW=1`
//! runs 16384.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed check

use std::cell::{Cell, RefCell};
use std::time::Duration;

use lwsys_messages::blobs::{BlobKind, ALL_KINDS};
use lwsys_messages::protocol::{MAX_LINE, OPS};
use lwsys_messages::state::SystemState;
use lwsys_tests::{Client, TestDaemon, WAIT};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

/// Ops that change something or wait for a state, with the parameter that
/// makes them do it: they are only ever sent with that parameter missing,
/// of the wrong type, or naming no state / blob kind. `attach` is here
/// because its nested request could be any op.
const GUARDED: [(&str, &str); 13] = [
    ("state.steps", "target"),
    ("state.jump", "target"),
    ("state.wait", "state"),
    ("attach", "state"),
    ("notifier.register", "name"),
    ("notifier.resume", "name"),
    ("notifier.unregister", "name"),
    ("blob.set", "kind"),
    ("blob.append", "kind"),
    ("blob.empty", "kind"),
    ("blob.destroy", "kind"),
    ("clock.set", "unix_us"),
    ("consent.reply", "ticket"),
];

/// Mutating ops without a parameter that could make them invalid: never
/// sent (a random op name is vanishingly unlikely to be one of them).
const NO_PARAMS: [&str; 7] = [
    "state.policy_invalidate",
    "state.enter_modal",
    "state.leave_modal",
    "system.shutdown",
    "system.reboot",
    "ota.check",
    "ota.report_current",
];

fn cases() -> u32 {
    if std::env::var("LWSYS_SLOW").is_ok_and(|v| v == "1") {
        16384
    } else {
        1024
    }
}

/// What the daemon looks like from outside; any change fails the test.
#[derive(Debug, PartialEq)]
struct Snapshot {
    state: Value,
    since_us: Value,
    notifiers: Value,
    blobs: Vec<Value>,
}

fn snapshot(c: &mut Client) -> Snapshot {
    let s = c.ok("state.get", json!({}));
    let info = c.ok("system.info", json!({}));
    let mut blobs = Vec::new();
    for kind in ALL_KINDS {
        for idx in 0..kind.slots() {
            let r = c.call("blob.get", json!({"kind": kind.name(), "idx": idx}));
            // The reply's id is the client's counter; only the content counts.
            blobs.push(json!([kind.name(), idx, r["ok"], r["data_b64"], r["error"]["code"]]));
        }
    }
    Snapshot {
        state: s["state"].clone(),
        since_us: s["since_us"].clone(),
        notifiers: info["notifiers"].clone(),
        blobs,
    }
}

/// A daemon at OPERATIONAL with blobs set, so that an unwanted
/// `blob.empty`/`blob.destroy` would show.
fn daemon() -> (TestDaemon, Client, Snapshot) {
    let d = TestDaemon::start(&[]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    c.ok("blob.set", json!({"kind": "DEVICE_SERIAL", "data": "sn-fuzz"}));
    c.ok("blob.set", json!({"kind": "AUTH", "idx": 1, "data": "tok"}));
    let before = snapshot(&mut c);
    (d, c, before)
}

/// Error codes a guarded op with an invalid key parameter may get: the
/// wrong type is `bad_request`, an unknown blob kind `not_found`.
const GUARDED_CODES: &[&str] = &["bad_request", "not_found"];

/// The reply one line should get: `None` for a blank line (skipped),
/// else the `id` it must carry and, when the outcome is known from the
/// line alone, the error codes it may carry.
fn expected(line: &[u8]) -> Option<(Value, Option<&'static [&'static str]>)> {
    if line.len() > MAX_LINE {
        return Some((Value::Null, Some(&["too_large"])));
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let Ok(v) = serde_json::from_slice::<Value>(line) else {
        return Some((Value::Null, Some(&["parse_error"])));
    };
    let Value::Object(m) = v else {
        return Some((Value::Null, Some(&["bad_request"])));
    };
    let id = m.get("id").cloned().unwrap_or(Value::Null);
    match m.get("op") {
        Some(Value::String(op)) if GUARDED.iter().any(|(g, _)| g == op) => {
            Some((id, Some(GUARDED_CODES)))
        }
        Some(Value::String(_)) => Some((id, None)),
        _ => Some((id, Some(&["bad_request"]))),
    }
}

/// Send a `hello` whose id is `marker`; read until its reply, keeping
/// the other replies in `got`. With `for_reply`, also wait a little for
/// one reply besides the marker's, which may settle after it.
fn read_to_marker(
    c: &mut Client,
    marker: &Value,
    got: &mut Vec<Value>,
    for_reply: bool,
) -> Result<(), TestCaseError> {
    let mut m = json!({"op": "hello"});
    m["id"] = marker.clone();
    c.send_raw(format!("{m}\n").as_bytes());
    let mut marked = false;
    let mut late = Duration::ZERO;
    while !marked || (for_reply && got.is_empty() && late < Duration::from_secs(2)) {
        let wait = if marked { Duration::from_millis(50) } else { WAIT };
        let Some(v) = c.read(wait) else {
            prop_assert!(marked, "no reply to the marker {}", marker);
            late += wait;
            continue;
        };
        if v.get("event").is_some() {
            continue; // a random `subscribe` may have asked for events
        }
        if &v["id"] == marker {
            prop_assert_eq!(&v["ok"], &json!(true), "marker: {}", v);
            marked = true;
        } else {
            got.push(v);
        }
    }
    Ok(())
}

/// Send `line` and check it got exactly one reply (none if blank) with
/// the right id: replies are collected up to a marker request sent after
/// it (and the line's reply, which may come after the marker's), then up
/// to a second marker, so a duplicate reply would show.
fn check_line(
    d: &TestDaemon,
    c: &mut Client,
    before: &Snapshot,
    n: u64,
    line: &[u8],
) -> Result<(), TestCaseError> {
    let want = expected(line);
    let mut bytes = line.to_vec();
    bytes.push(b'\n');
    c.send_raw(&bytes);
    let mut got = Vec::new();
    read_to_marker(c, &json!({"fuzz_marker": n}), &mut got, want.is_some())?;
    read_to_marker(c, &json!({"fuzz_marker_end": n}), &mut got, false)?;
    match want {
        None => prop_assert!(got.is_empty(), "a blank line was answered: {:?}", got),
        Some((id, codes)) => {
            prop_assert_eq!(
                got.len(),
                1,
                "replies to {:?}: {:?}",
                String::from_utf8_lossy(line),
                got
            );
            let r = &got[0];
            prop_assert_eq!(&r["id"], &id, "reply {}", r);
            prop_assert!(r["ok"].is_boolean(), "reply {}", r);
            if let Some(codes) = codes {
                prop_assert_eq!(&r["ok"], &json!(false), "reply {}", r);
                let code = r["error"]["code"].as_str().unwrap_or("");
                prop_assert!(codes.contains(&code), "want {:?}: {}", codes, r);
            }
        }
    }
    prop_assert!(alive(d), "the daemon died");
    let now = snapshot(c);
    prop_assert_eq!(&now, before, "after {:?}", String::from_utf8_lossy(line));
    Ok(())
}

fn alive(d: &TestDaemon) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid() as i32), None).is_ok()
}

/// Arbitrary bytes without '\n': short, medium, or past the line limit.
fn byte_line() -> impl Strategy<Value = Vec<u8>> {
    let byte = any::<u8>().prop_filter("no newline", |b| *b != b'\n');
    prop_oneof![
        6 => proptest::collection::vec(byte.clone(), 0..64),
        3 => proptest::collection::vec(byte.clone(), 0..4096),
        // Partial JSON: a prefix of a real request, maybe with junk after.
        3 => (0usize..80, proptest::collection::vec(byte.clone(), 0..8)).prop_map(|(cut, tail)| {
            let full = br#"{"id":{"a":[1,2.5,"x"]},"op":"blob.get","kind":"DEVICE_SERIAL","idx":0}"#;
            let mut v = full[..cut.min(full.len())].to_vec();
            v.extend(tail);
            v
        }),
        1 => (byte, 0usize..64).prop_map(|(b, k)| vec![b; MAX_LINE + 1 + k]),
        1 => Just(vec![b'a'; MAX_LINE]),
    ]
}

/// Arbitrary JSON, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A random object of parameters.
fn params() -> impl Strategy<Value = Map<String, Value>> {
    let key = prop_oneof![
        Just("kind".to_owned()),
        Just("idx".to_owned()),
        Just("offset".to_owned()),
        Just("len".to_owned()),
        Just("events".to_owned()),
        Just("timeout_ms".to_owned()),
        Just("verdict".to_owned()),
        ".{0,8}",
    ];
    proptest::collection::btree_map(key, json_value(), 0..5).prop_map(|m| m.into_iter().collect())
}

/// A value for the guarded parameter `key` that cannot be valid: missing,
/// of the wrong type, or, where a string names a state or a blob kind, a
/// string naming neither.
fn invalid_value(key: &'static str) -> BoxedStrategy<Option<Value>> {
    let wrong_type = json_value()
        .prop_filter("not a string or integer", |v| !v.is_string() && !v.is_u64())
        .prop_map(Some);
    if matches!(key, "target" | "state" | "kind") {
        prop_oneof![
            Just(None),
            wrong_type,
            "[a-z_ ]{0,12}"
                .prop_filter("no state or kind name", |s| {
                    s.parse::<SystemState>().is_err() && s.parse::<BlobKind>().is_err()
                })
                .prop_map(|s| Some(Value::String(s))),
        ]
        .boxed()
    } else {
        prop_oneof![Just(None), wrong_type].boxed()
    }
}

/// A request object: a known op (guarded ops with an invalid key
/// parameter), an unknown op, or any JSON value at all.
fn request() -> impl Strategy<Value = Value> {
    let free: Vec<&'static str> = OPS
        .iter()
        .copied()
        .filter(|op| !NO_PARAMS.contains(op) && !GUARDED.iter().any(|(g, _)| g == op))
        .collect();
    let id = prop_oneof![Just(None), json_value().prop_map(Some)];
    let known =
        (proptest::sample::select(free), params(), id.clone()).prop_map(|(op, mut p, id)| {
            p.insert("op".into(), json!(op));
            if let Some(id) = id {
                p.insert("id".into(), id);
            }
            Value::Object(p)
        });
    let guarded = proptest::sample::select(GUARDED.to_vec())
        .prop_flat_map(move |(op, key)| (Just((op, key)), params(), invalid_value(key), id.clone()))
        .prop_map(|((op, key), mut p, bad, id)| {
            p.insert("op".into(), json!(op));
            match bad {
                Some(v) => p.insert(key.into(), v),
                None => p.remove(key),
            };
            if let Some(id) = id {
                p.insert("id".into(), id);
            }
            Value::Object(p)
        });
    prop_oneof![
        4 => known,
        4 => guarded,
        1 => (json_value(), params()).prop_map(|(op, mut p)| {
            // `op` of any type, or a made-up name.
            let op = match op {
                Value::String(s) => Value::String(format!("x.{s}")),
                other => other,
            };
            p.insert("op".into(), op);
            Value::Object(p)
        }),
        1 => json_value(),
    ]
}

fn runner() -> TestRunner {
    TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() })
}

#[test]
fn random_byte_lines_are_answered_once_and_change_nothing() {
    let (d, c, before) = daemon();
    // The runner takes a `Fn`; the cases run one at a time.
    let (c, n) = (RefCell::new(c), Cell::new(0));
    let res = runner().run(&byte_line(), |line| {
        n.set(n.get() + 1);
        check_line(&d, &mut c.borrow_mut(), &before, n.get(), &line)
    });
    if let Err(e) = res {
        panic!("{e}");
    }
}

#[test]
fn random_json_requests_are_answered_once_and_change_nothing() {
    let (d, c, before) = daemon();
    // The runner takes a `Fn`; the cases run one at a time.
    let (c, n) = (RefCell::new(c), Cell::new(0));
    let res = runner().run(&request(), |v| {
        n.set(n.get() + 1);
        check_line(&d, &mut c.borrow_mut(), &before, n.get(), v.to_string().as_bytes())
    });
    if let Err(e) = res {
        panic!("{e}");
    }
}
