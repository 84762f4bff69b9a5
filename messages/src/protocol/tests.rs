//! The protocol's wire types pinned: the op table round-trips through
//! `Request`, decoding errors keep their codes and messages, and every
//! reply and event serializes to the very bytes the daemon wrote when it
//! built them by hand with `json!`.
#![allow(clippy::unwrap_used)] // a test that cannot decode what it built should fail loudly

use serde_json::{json, Value};

use super::*;
use crate::blobs::BlobKind;
use crate::clock::{ClockEvent, ClockReading, ClockSource};
use crate::ota::{CheckOutcome, OtaEvent, OtaPhase};
use crate::state::{StateReading, SystemState, Verdict};
use crate::supervisor::{
    Explanation, NotifierEventKind, NotifierInfo, NotifierKind, Pending, WalkReport,
};

#[test]
fn wire_names_match_serde() {
    for code in ErrorCode::ALL {
        let json = serde_json::to_value(code).unwrap();
        assert_eq!(json, code.as_str());
    }
}

/// A request of `op` with every parameter it takes set.
fn sample(op: Op) -> Request {
    let kind = BlobKind::Auth;
    match op {
        Op::Hello => Request::Hello {},
        Op::StateGet => Request::StateGet {},
        Op::StateSteps => Request::StateSteps { target: SystemState::Operational },
        Op::StateJump => Request::StateJump { target: SystemState::Dhcp },
        Op::StateWait => {
            Request::StateWait { state: SystemState::Operational, timeout_ms: Some(5) }
        }
        Op::StateExplain => Request::StateExplain {},
        Op::StatePolicyInvalidate => Request::StatePolicyInvalidate {},
        Op::StateEnterModal => Request::StateEnterModal {},
        Op::StateLeaveModal => Request::StateLeaveModal {},
        Op::NotifierRegister => Request::NotifierRegister { name: "n".into() },
        Op::NotifierResume => Request::NotifierResume { name: "n".into() },
        Op::NotifierUnregister => Request::NotifierUnregister { name: "n".into() },
        Op::ConsentReply => Request::ConsentReply { ticket: 3, verdict: Verdict::defer("ntp") },
        Op::Subscribe => Request::Subscribe { events: vec![Topic::State, Topic::Ota] },
        Op::BlobSet => Request::BlobSet { kind, idx: Some(1), data: BlobData::Text("tok".into()) },
        Op::BlobAppend => {
            Request::BlobAppend { kind, idx: None, data: BlobData::Bytes(vec![0xff, 0].into()) }
        }
        Op::BlobEmpty => Request::BlobEmpty { kind, idx: Some(0) },
        Op::BlobGet => Request::BlobGet { kind, idx: Some(1), offset: Some(2), len: Some(3) },
        Op::BlobSize => Request::BlobSize { kind, idx: None },
        Op::BlobDestroy => Request::BlobDestroy { kind, idx: None },
        Op::Attach => Request::Attach {
            state: SystemState::Initialized,
            request: Box::new(Request::BlobGet { kind, idx: None, offset: None, len: None }),
        },
        Op::ClockGet => Request::ClockGet {},
        Op::ClockSet => Request::ClockSet { unix_us: 1_800_000_000_000_000 },
        Op::TrustQuery => Request::TrustQuery { skid: "ab01".into() },
        Op::OtaStatus => Request::OtaStatus {},
        Op::OtaCheck => Request::OtaCheck {},
        Op::OtaReportCurrent => Request::OtaReportCurrent { bad: true },
        Op::SystemInfo => Request::SystemInfo {},
        Op::SystemReboot => Request::SystemReboot {},
        Op::SystemShutdown => Request::SystemShutdown {},
        Op::DebugCrash => Request::DebugCrash { service: "blobs".into() },
    }
}

#[test]
fn every_op_in_the_table_round_trips_through_request() {
    assert_eq!(OP_TABLE.len(), 31, "30 documented ops and debug.crash");
    for info in OP_TABLE {
        let req = sample(info.op);
        assert_eq!(req.op(), info.op);
        assert_eq!(Op::from_name(info.name), Some(info.op));
        assert_eq!(info.op.name(), info.name);
        let mut v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["op"], info.name, "{v}");
        v["id"] = json!(["x", 1]);
        let line = serde_json::to_vec(&v).unwrap();
        let env = decode_request(&line).unwrap();
        assert_eq!(env.id, json!(["x", 1]));
        assert_eq!(env.request, req, "{v}");
        let again: Request = serde_json::from_value(v).unwrap();
        assert_eq!(again, req);
    }
}

#[test]
fn the_table_says_who_may_run_each_op() {
    let reads = [
        "hello",
        "state.get",
        "state.wait",
        "state.explain",
        "subscribe",
        "system.info",
        "blob.get",
        "blob.size",
        "clock.get",
        "trust.query",
        "ota.status",
        "attach",
    ];
    for info in OP_TABLE {
        assert_eq!(info.op.needs_admin(), !reads.contains(&info.name), "{}", info.name);
    }
    assert_eq!(OPS.len(), 30);
    assert!(!OPS.contains(&"debug.crash"), "the fault hook stays undocumented");
    assert!(Op::DebugCrash.is_hidden());
}

#[test]
fn requests_serialize_as_the_wire_has_them() {
    let cases = [
        (Request::Hello {}, r#"{"op":"hello"}"#),
        (
            Request::StateWait { state: SystemState::Operational, timeout_ms: None },
            r#"{"op":"state.wait","state":"OPERATIONAL"}"#,
        ),
        (
            Request::ConsentReply { ticket: 2, verdict: Verdict::Allow },
            r#"{"op":"consent.reply","ticket":2,"verdict":"allow"}"#,
        ),
        (
            Request::BlobSet {
                kind: BlobKind::DeviceSerial,
                idx: None,
                data: BlobData::Bytes(b"hi".to_vec().into()),
            },
            r#"{"op":"blob.set","kind":"DEVICE_SERIAL","data_b64":"aGk="}"#,
        ),
        (
            Request::Attach { state: SystemState::Dhcp, request: Box::new(Request::StateGet {}) },
            r#"{"op":"attach","state":"DHCP","request":{"op":"state.get"}}"#,
        ),
    ];
    for (req, want) in cases {
        assert_eq!(serde_json::to_string(&req).unwrap(), want);
    }
}

fn rejected(line: &str) -> Rejected {
    decode_request(line.as_bytes()).unwrap_err()
}

fn message(line: &str) -> (Value, Option<Op>, ErrorCode, String) {
    let r = rejected(line);
    (r.id, r.op, r.error.code, r.error.message)
}

#[test]
fn a_repeated_key_anywhere_is_a_bad_request_with_the_id_echoed() {
    for line in [
        r#"{"id":4,"op":"state.get","op":"system.shutdown"}"#,
        r#"{"id":4,"op":"blob.set","kind":"AUTH","kind":"DEVICE_SERIAL","data":"x"}"#,
        r#"{"id":4,"op":"attach","state":"DHCP","request":{"op":"a","op":"b"}}"#,
        r#"{"id":4,"op":"subscribe","events":[{"a":1,"a":2}]}"#,
    ] {
        let (id, _, code, msg) = message(line);
        assert_eq!((id, code), (json!(4), ErrorCode::BadRequest), "{line}");
        assert!(msg.starts_with("a request must not repeat a key: key "), "{msg}");
    }
    let (_, _, _, msg) = message(r#"{"id":4,"op":"state.get","op":"system.shutdown"}"#);
    assert!(msg.contains(r#"key "op" appears twice"#), "{msg}");
    // Which id would be answered is ambiguous: none is.
    let (id, _, code, _) = message(r#"{"id":1,"id":2,"op":"hello"}"#);
    assert_eq!((id, code), (Value::Null, ErrorCode::BadRequest));
    // Serde's own reader refuses them too.
    assert!(serde_json::from_str::<Request>(r#"{"op":"hello","op":"hello"}"#).is_err());
}

#[test]
fn an_unknown_op_is_unknown_op_and_a_known_op_with_bad_params_a_bad_request() {
    assert_eq!(
        message(r#"{"id":1,"op":"blob.bogus"}"#),
        (json!(1), None, ErrorCode::UnknownOp, r#"unknown op "blob.bogus""#.into())
    );
    let cases = [
        (r#"{"id":2,"op":"state.steps"}"#, Op::StateSteps, r#"missing "target""#),
        (r#"{"id":2,"op":"state.jump","target":8}"#, Op::StateJump, r#""target" must be a string"#),
        (
            r#"{"id":2,"op":"state.jump","target":"FOO"}"#,
            Op::StateJump,
            r#"unknown system state "FOO""#,
        ),
        (
            r#"{"id":2,"op":"state.wait","state":"DHCP","timeout_ms":-1}"#,
            Op::StateWait,
            r#""timeout_ms" must be a non-negative integer"#,
        ),
        (
            r#"{"id":2,"op":"consent.reply","ticket":1,"verdict":"maybe"}"#,
            Op::ConsentReply,
            r#"verdict "maybe" is not allow, defer or deny"#,
        ),
        (
            r#"{"id":2,"op":"subscribe","events":["bogus"]}"#,
            Op::Subscribe,
            r#"unknown topic "bogus"; topics are ["state", "notifier", "clock", "ota", "service"]"#,
        ),
        (
            r#"{"id":2,"op":"blob.set","kind":"AUTH","data":"a","data_b64":"YQ=="}"#,
            Op::BlobSet,
            r#"give one of "data" and "data_b64", not both"#,
        ),
        (
            r#"{"id":2,"op":"clock.set","unix_us":null}"#,
            Op::ClockSet,
            r#""unix_us" must be a non-negative integer"#,
        ),
        (r#"{"id":2,"op":"ota.report_current"}"#, Op::OtaReportCurrent, r#"missing "bad""#),
        (
            r#"{"id":2,"op":"attach","state":"DHCP","request":{"no_op":1}}"#,
            Op::Attach,
            r#"the nested request needs a string "op""#,
        ),
    ];
    for (line, op, msg) in cases {
        assert_eq!(
            message(line),
            (json!(2), Some(op), ErrorCode::BadRequest, msg.to_owned()),
            "{line}"
        );
    }
    // Base64 is strict: padding is required.
    let r = rejected(r#"{"op":"blob.append","kind":"AUTH","data_b64":"YQ"}"#);
    assert_eq!(r.error.code, ErrorCode::BadRequest);
    // An unknown blob kind is the model's `not_found`, as it always was.
    let r = rejected(r#"{"op":"blob.get","kind":"NOPE"}"#);
    assert_eq!((r.op, r.error.code), (Some(Op::BlobGet), ErrorCode::NotFound));
    // A nested unknown op is unknown_op, for the attach.
    let r = rejected(r#"{"op":"attach","state":"DHCP","request":{"op":"no.such"}}"#);
    assert_eq!((r.op, r.error.code), (Some(Op::Attach), ErrorCode::UnknownOp));
}

#[test]
fn bad_bytes_and_bad_shapes_get_their_codes() {
    let code = |l: &[u8]| {
        let r = decode_request(l).unwrap_err();
        (r.id, r.error.code)
    };
    assert_eq!(code(b"\xff{}"), (Value::Null, ErrorCode::ParseError));
    assert_eq!(code(b"{nope"), (Value::Null, ErrorCode::ParseError));
    assert_eq!(code(b"[1,2]"), (Value::Null, ErrorCode::BadRequest));
    assert_eq!(code(br#"{"id":"a","op":3}"#), (json!("a"), ErrorCode::BadRequest));
    assert_eq!(code(br#"{"id":[1]}"#), (json!([1]), ErrorCode::BadRequest));
}

#[test]
fn a_float_id_is_echoed_as_the_same_number() {
    // Found by tests/tests/fuzz_lines.rs: without serde_json's
    // float_roundtrip this id came back one ulp off.
    let r = decode_request(br#"{"id":[1.9410261664193438e-134],"op":"hello"}"#).unwrap();
    assert_eq!(r.id.to_string(), "[1.9410261664193438e-134]");
}

#[test]
fn the_strict_reader_keeps_every_value_as_serde_json_reads_it() {
    let line = r#"{"a":[1,-2,3.5,1e300,"s\u0000",null,true,{"b":{}}],"big":18446744073709551615}"#;
    let decode::Strict(strict) = serde_json::from_str(line).unwrap();
    let plain: Value = serde_json::from_str(line).unwrap();
    assert_eq!(strict, plain);
}

#[test]
fn deep_nesting_is_a_parse_error_not_a_stack_overflow() {
    let mut line = br#"{"op":"hello","x":"#.to_vec();
    line.extend(std::iter::repeat_n(b'[', 100_000));
    assert_eq!(decode_request(&line).unwrap_err().error.code, ErrorCode::ParseError);
}

fn text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

fn pending() -> Pending {
    Pending {
        by: "ntp".into(),
        reason: "waiting".into(),
        target: SystemState::Operational,
        since_us: 7,
    }
}

/// Each reply type against the JSON the daemon built by hand with
/// `json!` before (written out literally).
#[test]
fn replies_serialize_byte_identically_to_the_old_hand_built_ones() {
    let hello = Hello { version: "0.1.0".into(), protocol: 1, state: SystemState::Operational };
    assert_eq!(text(&hello), r#"{"version":"0.1.0","protocol":1,"state":"OPERATIONAL"}"#);
    let now = StateReading { state: SystemState::Dhcp, since_us: 9 };
    assert_eq!(text(&now), r#"{"state":"DHCP","since_us":9}"#);
    let walk = WalkReport { state: SystemState::Dhcp, reached: false, pending: Some(pending()) };
    assert_eq!(
        text(&walk),
        r#"{"state":"DHCP","reached":false,"pending":{"by":"ntp","reason":"waiting","target":"OPERATIONAL","since_us":7}}"#
    );
    let walk = WalkReport { state: SystemState::Operational, reached: true, pending: None };
    assert_eq!(text(&walk), r#"{"state":"OPERATIONAL","reached":true,"pending":null}"#);
    assert_eq!(text(&WaitReply { state: SystemState::Dhcp }), r#"{"state":"DHCP"}"#);
    let e = Explanation {
        state: SystemState::Dhcp,
        since_us: 3,
        pending: None,
        parked: vec![pending()],
        journal: vec![],
    };
    assert_eq!(
        text(&e),
        r#"{"state":"DHCP","since_us":3,"pending":null,"parked":[{"by":"ntp","reason":"waiting","target":"OPERATIONAL","since_us":7}],"journal":[]}"#
    );
    assert_eq!(
        text(&Registered { name: "n".into(), notifier_id: 4 }),
        r#"{"name":"n","notifier_id":4}"#
    );
    assert_eq!(text(&Resumed { resumed: true }), r#"{"resumed":true}"#);
    assert_eq!(text(&Done {}), "{}");
    assert_eq!(
        text(&Subscribed { events: vec![Topic::Clock, Topic::State] }),
        r#"{"events":["clock","state"]}"#
    );
    assert_eq!(text(&BlobSized { size: 3 }), r#"{"size":3}"#);
    assert_eq!(text(&BlobRead::new(b"tok", 3)), r#"{"data_b64":"dG9r","size":3,"data":"tok"}"#);
    assert_eq!(text(&BlobRead::new(&[0xff], 8)), r#"{"data_b64":"/w==","size":8}"#);
    let r = ClockReading {
        unix_us: 5,
        valid: true,
        source: ClockSource::System,
        last_offset_us: None,
        last_delay_us: Some(2),
        last_sync_us: None,
    };
    assert_eq!(
        text(&r),
        r#"{"unix_us":5,"valid":true,"source":"system","last_offset_us":null,"last_delay_us":2,"last_sync_us":null}"#
    );
    let o =
        CheckOutcome { updated: false, unixtime: None, reboot: false, reason: Some("x".into()) };
    assert_eq!(text(&o), r#"{"updated":false,"unixtime":null,"reboot":false,"reason":"x"}"#);
    assert_eq!(text(&Rebooting { rebooting: true }), r#"{"rebooting":true}"#);
    assert_eq!(text(&Crashed { crashed: false }), r#"{"crashed":false}"#);
    let info = SystemInfo {
        attach: Default::default(),
        version: "0.1.0".into(),
        protocol: 1,
        state: SystemState::Operational,
        pid: 42,
        notifiers: vec![NotifierInfo { name: "clock".into(), kind: NotifierKind::Builtin }],
        trust: None,
        ops: vec!["attach".into()],
        wake_latency_us: 0,
        uptime_s: 1,
        waiters: 0,
        clients: ClientCounts { connected: 1, attach_pending: 0, subscribers: 2 },
    };
    assert_eq!(
        text(&info),
        concat!(
            r#"{"attach":{"run":0,"cancelled":0,"panicked":0,"rejected":0,"pending":0,"waiting":0},"#,
            r#""version":"0.1.0","protocol":1,"state":"OPERATIONAL","pid":42,"#,
            r#""notifiers":[{"name":"clock","kind":"builtin"}],"trust":null,"ops":["attach"],"#,
            r#""wake_latency_us":0,"uptime_s":1,"waiters":0,"#,
            r#""clients":{"connected":1,"attach_pending":0,"subscribers":2}}"#
        )
    );
}

/// Each event against the JSON it was built as by hand before.
#[test]
fn events_serialize_byte_identically_to_the_old_hand_built_ones() {
    let (d, o) = (SystemState::Dhcp, SystemState::Operational);
    let cases = [
        (
            Event::State { from: d, to: o, at_us: 5 },
            r#"{"event":"state","from":"DHCP","to":"OPERATIONAL","at_us":5}"#,
        ),
        (
            Event::Notifier {
                kind: NotifierEventKind::Unregistered,
                name: "n".into(),
                reason: Some("requested".into()),
            },
            r#"{"event":"notifier","kind":"unregistered","name":"n","reason":"requested"}"#,
        ),
        (
            Event::Notifier { kind: NotifierEventKind::Registered, name: "n".into(), reason: None },
            r#"{"event":"notifier","kind":"registered","name":"n"}"#,
        ),
        (
            Event::Consent { ticket: 1, current: d, target: o, check: None },
            r#"{"event":"consent","ticket":1,"current":"DHCP","target":"OPERATIONAL"}"#,
        ),
        (
            Event::Changed { from: d, to: o },
            r#"{"event":"changed","from":"DHCP","to":"OPERATIONAL"}"#,
        ),
        (
            Event::Aborted { current: d, target: o },
            r#"{"event":"aborted","current":"DHCP","target":"OPERATIONAL"}"#,
        ),
        (
            Event::Clock(ClockEvent::Failed {
                reason: "timeout".into(),
                server: "s".into(),
                retry_in_ms: 7,
            }),
            r#"{"kind":"failed","reason":"timeout","server":"s","retry_in_ms":7,"event":"clock"}"#,
        ),
        (
            Event::Ota(OtaProgress {
                progress: OtaEvent { phase: OtaPhase::Idle, ..OtaEvent::default() },
                error: Some("bad".into()),
                error_kind: Some("bad_signature".into()),
                ..OtaProgress::default()
            }),
            r#"{"event":"ota","phase":"idle","percent":0,"bytes":0,"resumed_from":0,"error":"bad","error_kind":"bad_signature"}"#,
        ),
        (
            Event::Service(ServiceEvent::Restarted { service: "blobs".into(), restarts: 1 }),
            r#"{"event":"service","kind":"restarted","service":"blobs","restarts":1}"#,
        ),
        (
            Event::Service(ServiceEvent::GaveUp { service: "clock".into(), reason: "why".into() }),
            r#"{"event":"service","kind":"gave_up","service":"clock","reason":"why"}"#,
        ),
        (
            Event::RebootFailed { error: ErrorBody { code: ErrorCode::Io, message: "no".into() } },
            r#"{"event":"reboot_failed","error":{"code":"io","message":"no"}}"#,
        ),
    ];
    for (ev, want) in cases {
        assert_eq!(text(&ev), want);
        let back: Event = serde_json::from_str(want).unwrap();
        assert_eq!(back, ev, "{want}");
    }
}

mod props {
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    use super::super::*;

    /// Values a parameter may hold: right and wrong types, state and kind
    /// names, topics, nested requests.
    fn param() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            prop_oneof![
                Just("OPERATIONAL"),
                Just("dhcp"),
                Just("AUTH"),
                Just("DEVICE_SERIAL"),
                Just("allow"),
                Just("defer"),
                Just("aGk="),
                Just("nope"),
                Just(""),
            ]
            .prop_map(Value::from),
            Just(json!(["state", "ota"])),
            Just(json!(["bogus"])),
            Just(json!({"op": "state.get", "id": 3})),
            Just(json!({"op": "blob.get", "kind": "AUTH"})),
        ]
    }

    fn line() -> impl Strategy<Value = Vec<u8>> {
        let keys = prop_oneof![
            Just("target"),
            Just("state"),
            Just("timeout_ms"),
            Just("name"),
            Just("ticket"),
            Just("verdict"),
            Just("reason"),
            Just("events"),
            Just("kind"),
            Just("idx"),
            Just("data"),
            Just("data_b64"),
            Just("offset"),
            Just("len"),
            Just("request"),
            Just("unix_us"),
            Just("skid"),
            Just("bad"),
            Just("service"),
        ];
        let op = proptest::sample::select(OP_TABLE.iter().map(|o| o.name).collect::<Vec<_>>());
        (op, proptest::collection::vec((keys, param()), 0..6)).prop_map(|(op, params)| {
            let mut m: Map<String, Value> =
                params.into_iter().map(|(k, v)| (k.into(), v)).collect();
            m.insert("op".into(), Value::from(op));
            serde_json::to_vec(&Value::Object(m)).unwrap()
        })
    }

    proptest! {
        /// Whatever a known op's parameters, the line is either refused
        /// with the op named (so access is checked first) or decoded to a
        /// request that serializes and decodes to itself.
        #[test]
        fn a_decoded_request_says_the_same_again_and_a_refused_one_names_its_op(l in line()) {
            match decode_request(&l) {
                Ok(env) => {
                    let again = serde_json::to_vec(&env.request).unwrap();
                    prop_assert_eq!(decode_request(&again).unwrap().request, env.request);
                }
                Err(r) => {
                    prop_assert!(r.op.is_some(), "{:?}", r);
                    prop_assert!(
                        matches!(r.error.code, ErrorCode::BadRequest | ErrorCode::NotFound | ErrorCode::UnknownOp),
                        "{:?}", r
                    );
                }
            }
        }
    }
}

#[test]
fn attaches_nest_as_deep_as_the_json_reader_allows_without_a_copy_per_level() {
    // serde_json refuses nesting past 128 levels; each attach is two (its
    // object and its `request`'s), so 63 attaches is close to the limit.
    let depth = 63;
    let payload = "x".repeat(512 * 1024);
    let mut line = String::new();
    for _ in 0..depth {
        line.push_str(r#"{"op":"attach","state":"DHCP","request":"#);
    }
    line.push_str(&format!(r#"{{"op":"blob.set","kind":"AUTH","data":"{payload}"}}"#));
    line.push_str(&"}".repeat(depth));
    let mut req = decode_request(line.as_bytes()).unwrap().request;
    let mut levels = 0;
    while let Request::Attach { request, .. } = req {
        levels += 1;
        req = *request;
    }
    assert_eq!(levels, depth);
    assert!(
        matches!(req, Request::BlobSet { data: BlobData::Text(t), .. } if t.len() == payload.len())
    );
}
