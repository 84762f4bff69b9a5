//! Fuzz target `protocol_decode`: arbitrary bytes through the control
//! protocol as a client's socket would feed them, in two passes:
//!
//! 1. the pure front: line framing (`LineReader`, with small buffers and a
//!    small limit so lines split across reads and the too-large path are
//!    reached) and the request decoder (`decode_request`);
//! 2. the dispatcher, end to end: a real `ControlSession` (admin role) on a
//!    fresh Builder-built system with its services (blobs, clock, trust,
//!    attach) per input, booted to OPERATIONAL, fed the same bytes over
//!    an in-memory pipe. Every frame must get exactly one well-formed
//!    reply line (ops that wait for a state, `state.wait` and `attach`,
//!    may stay unanswered); a panic anywhere in the session or the actors
//!    aborts the fuzzer.
//!
//! The system is fresh per input so inputs stay independent (a
//! `system.shutdown` or `blob.set` in one input cannot change what the next
//! sees). Its reboot op is a no-op double: the default one re-executes the
//! process, which would be the fuzzer itself.
#![no_main]

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use lwsys::control::{
    decode_request, AccessPolicy, ControlSession, Frame, LineReader, Peer, Role, SessionEnv,
};
use lwsys::services::ServiceConfig;
use lwsys::Builder;
use lwsys_actors::platform::{OpError, SetOutcome, SystemOps};
use lwsys_messages::protocol::{Op, MAX_LINE};
use lwsys_messages::state::SystemState;
use lwsys_messages::ErrorCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Errors the decoder itself may answer with (`not_found` is an unknown
/// blob kind); anything else means a code escaped that the protocol does
/// not put on a malformed line.
const DECODE_CODES: [ErrorCode; 4] =
    [ErrorCode::ParseError, ErrorCode::BadRequest, ErrorCode::UnknownOp, ErrorCode::NotFound];

/// Ops that may rightly stay unanswered for as long as the input lasts:
/// they wait for a state the system may never reach.
const MAY_WAIT: [Op; 2] = [Op::StateWait, Op::Attach];

/// How long the replies of one input may take before a missing one counts
/// as a hang. Every delay of the system under test is set far below it.
const REPLY_DEADLINE: Duration = Duration::from_secs(2);

/// Reboot and clock ops that do nothing.
struct NoOps;

impl SystemOps for NoOps {
    fn reboot(&self) -> Result<(), OpError> {
        Ok(())
    }

    fn set_clock(&self, _unix_us: u64) -> Result<SetOutcome, OpError> {
        Err(OpError::NotProvided("set_clock"))
    }

    fn wake_latency_us(&self) -> u64 {
        0
    }
}

fuzz_target!(|data: &[u8]| {
    frame_and_decode(data);
    dispatch(data);
});

/// Pass 1: framing and decoding alone, with their invariants.
fn frame_and_decode(data: &[u8]) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    rt.block_on(async {
        // A small buffer capacity splits lines across reads, as a socket
        // would; a small limit lets the fuzzer reach the too-large path.
        let cap = 1 + usize::from(data.first().copied().unwrap_or(0) % 16);
        let limit = if data.get(1).is_some_and(|b| b % 2 == 0) { 64 } else { MAX_LINE };
        let mut r = LineReader::with_limit(tokio::io::BufReader::with_capacity(cap, data), limit);
        let mut frames = 0usize;
        loop {
            let frame = r.next_frame().await.expect("reading a slice never fails");
            frames += 1;
            assert!(frames <= data.len() + 1, "more frames than input bytes");
            match frame {
                Frame::Eof => break,
                Frame::TooLarge => {}
                Frame::Line(line) => {
                    assert!(!line.is_empty(), "an empty frame was delivered");
                    assert!(
                        !line.iter().all(u8::is_ascii_whitespace),
                        "a blank frame was delivered"
                    );
                    assert!(line.len() <= limit, "a frame past the limit was delivered");
                    assert!(!line.contains(&b'\n'), "a frame holds a newline");
                    match decode_request(&line) {
                        // What was decoded says the same thing again.
                        Ok(env) => {
                            let again = serde_json::to_vec(&env.request)
                                .expect("a request always serializes");
                            let back = decode_request(&again).expect("a request re-decodes");
                            assert_eq!(back.request, env.request);
                        }
                        Err(r) => assert!(
                            DECODE_CODES.contains(&r.error.code),
                            "unexpected code {:?}",
                            r.error.code
                        ),
                    }
                }
            }
        }
    });
}

/// What the session should answer: one reply per frame, of which those
/// for ops in [`MAY_WAIT`] may be missing.
struct Expect {
    replies: usize,
    may_wait: usize,
}

/// Count the frames the session will see (the protocol's own limit).
async fn expect(data: &[u8]) -> Expect {
    let mut r = LineReader::new(data);
    let mut e = Expect { replies: 0, may_wait: 0 };
    loop {
        match r.next_frame().await.expect("reading a slice never fails") {
            Frame::Eof => return e,
            Frame::TooLarge => e.replies += 1,
            Frame::Line(line) => {
                e.replies += 1;
                if decode_request(&line).is_ok_and(|env| MAY_WAIT.contains(&env.request.op())) {
                    e.may_wait += 1;
                }
            }
        }
    }
}

/// Pass 2: the same bytes through a session on a fresh system.
fn dispatch(data: &[u8]) {
    actix_rt::System::new().block_on(async {
        let want = expect(data).await;
        let sys = Builder::new()
            // A session that registers as a notifier never answers its
            // consent requests; walks and shutdowns must still end soon.
            .consent_timeout(Duration::from_millis(20))
            .shutdown_grace(Duration::from_millis(50))
            .system_ops(Arc::new(NoOps))
            .services(ServiceConfig::default())
            .start()
            .expect("a default system starts");
        // Boot is asynchronous; the ops are fuzzed where a device spends
        // its life, at OPERATIONAL.
        sys.wait_for(SystemState::Operational, Some(REPLY_DEADLINE))
            .await
            .expect("a default system reaches OPERATIONAL");
        let env = SessionEnv {
            sys,
            log: slog::Logger::root(slog::Discard, slog::o!()),
            access: Arc::new(AccessPolicy::owner_only(0)),
            consent_timeout: Duration::from_millis(20),
            limits: Default::default(),
            counts: Default::default(),
            unwritten: Arc::new(AtomicUsize::new(0)),
        };
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (sr, sw) = tokio::io::split(server);
        let peer = Peer { uid: 0, gid: 0, pid: None };
        // No guard: EOF would shut the system down, so the client end is
        // kept open until the replies are in.
        ControlSession::start(env, peer, Role::Admin, BufReader::new(sr), sw, None);
        let (cr, mut cw) = tokio::io::split(client);

        let write = async move {
            cw.write_all(data).await.expect("the session reads its input");
            // A final line without '\n' is only framed at EOF, which the
            // session must not see; terminate it instead.
            if data.last().is_some_and(|b| *b != b'\n') {
                cw.write_all(b"\n").await.expect("the session reads its input");
            }
            cw.flush().await.expect("flush");
            cw
        };
        let read = async {
            let mut lines = BufReader::new(cr).lines();
            let mut got = 0usize;
            let deadline = tokio::time::Instant::now() + REPLY_DEADLINE;
            while got < want.replies {
                let next = if got >= want.replies - want.may_wait {
                    // The rest may wait forever; take what comes at once.
                    tokio::time::timeout(Duration::from_millis(5), lines.next_line()).await
                } else {
                    tokio::time::timeout_at(deadline, lines.next_line()).await
                };
                let line = match next {
                    Ok(Ok(Some(line))) => line,
                    Ok(Ok(None)) => {
                        panic!("session closed after {got} of {} replies", want.replies)
                    }
                    Ok(Err(e)) => panic!("reading replies: {e}"),
                    Err(_) if got >= want.replies - want.may_wait => break,
                    Err(_) => panic!("{got} of {} replies within {REPLY_DEADLINE:?}", want.replies),
                };
                let v: Value = serde_json::from_str(&line).expect("a reply line is JSON");
                let Value::Object(m) = v else { panic!("a reply line is an object: {line}") };
                if m.contains_key("event") {
                    continue;
                }
                assert!(m.contains_key("id"), "a reply without id: {line}");
                match m.get("ok") {
                    Some(Value::Bool(true)) => {}
                    Some(Value::Bool(false)) => {
                        assert!(m["error"]["code"].is_string(), "an error without code: {line}");
                        assert!(m["error"]["message"].is_string(), "no message: {line}");
                    }
                    _ => panic!("a reply without a boolean ok: {line}"),
                }
                got += 1;
            }
        };
        let (_cw, ()) = tokio::join!(write, read);
        actix::System::current().stop();
    });
}
