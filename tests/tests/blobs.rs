//! Scenario tests of the system blobs through the real `lwsysd` (issue 5):
//! every `blob.*` op and error over the socket and stdio, the NTP_SERVER
//! default, durability across restarts (clean and SIGKILL), and the
//! `[blobs]` config keys.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use lwsys_tests::{Client, Options, TestDaemon, WAIT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// The bytes `blob.get` read (from `data_b64`).
fn read(c: &mut Client, kind: &str, idx: u64) -> Vec<u8> {
    let r = c.ok("blob.get", json!({"kind": kind, "idx": idx}));
    B64.decode(r["data_b64"].as_str().unwrap()).unwrap()
}

/// Every op and every error of DESIGN §5 `blob.*`, on one connection.
fn exercise_every_op(c: &mut Client) {
    let serial = json!({"kind": "DEVICE_SERIAL"});
    let with = |extra: Value| {
        let mut m = serial.as_object().unwrap().clone();
        m.extend(extra.as_object().unwrap().clone());
        Value::Object(m)
    };

    // set (text) then append (base64, not UTF-8): one blob of two chunks.
    assert_eq!(c.ok("blob.set", with(json!({"data": "abc"})))["size"], 3);
    assert_eq!(c.ok("blob.append", with(json!({"data_b64": B64.encode([0xff, 0])})))["size"], 5);
    assert_eq!(c.ok("blob.size", serial.clone())["size"], 5);

    let all = c.ok("blob.get", serial.clone());
    assert_eq!(all["data_b64"], B64.encode(b"abc\xff\x00"));
    assert_eq!(all["size"], 5);
    assert!(all.get("data").is_none(), "not UTF-8, so no \"data\": {all}");

    // A read across the chunk boundary, and one past the rest.
    let mid = c.ok("blob.get", with(json!({"offset": 1, "len": 3})));
    assert_eq!(mid["data_b64"], B64.encode(b"bc\xff"));
    assert_eq!(mid["size"], 5, "size is the whole blob's");
    let tail = c.ok("blob.get", with(json!({"offset": 4, "len": 100})));
    assert_eq!(tail["data_b64"], B64.encode([0]));
    let text = c.ok("blob.get", with(json!({"len": 2})));
    assert_eq!((text["data"].as_str(), text["data_b64"].as_str()), (Some("ab"), Some("YWI=")));
    assert_eq!(c.ok("blob.get", with(json!({"len": 0})))["data_b64"], "");

    // At or past the end is out of range.
    c.err("blob.get", with(json!({"offset": 5})), "out_of_range");
    c.err("blob.get", with(json!({"offset": 6, "len": 1})), "out_of_range");
    c.err("blob.get", with(json!({"offset": u64::MAX})), "out_of_range");

    // set replaces; empty, then offset 0 of an empty blob reads nothing.
    assert_eq!(c.ok("blob.set", with(json!({"data": "xy"})))["size"], 2);
    assert_eq!(read(c, "DEVICE_SERIAL", 0), b"xy");
    assert_eq!(c.ok("blob.empty", serial.clone())["size"], 0);
    let empty = c.ok("blob.get", serial.clone());
    assert_eq!((empty["data_b64"].as_str(), empty["size"].as_u64()), (Some(""), Some(0)));
    c.err("blob.get", with(json!({"offset": 1})), "out_of_range");
    assert_eq!(c.ok("blob.append", with(json!({"data": "z"})))["size"], 1);
    assert_eq!(c.ok("blob.destroy", serial.clone())["size"], 0);
    assert_eq!(c.ok("blob.size", serial.clone())["size"], 0);
    assert_eq!(read(c, "DEVICE_SERIAL", 0), b"");

    // Exactly one of data / data_b64, and good base64.
    c.err("blob.set", serial.clone(), "bad_request");
    c.err("blob.append", serial.clone(), "bad_request");
    c.err("blob.set", with(json!({"data": "a", "data_b64": "YQ=="})), "bad_request");
    c.err("blob.append", with(json!({"data": "a", "data_b64": "YQ=="})), "bad_request");
    c.err("blob.set", with(json!({"data_b64": "**not base64**"})), "bad_request");
    c.err("blob.append", with(json!({"data_b64": "YQ"})), "bad_request");
    c.err("blob.set", with(json!({"data": 7})), "bad_request");
    assert_eq!(c.ok("blob.size", serial.clone())["size"], 0, "refused writes change nothing");

    // Kinds and slots.
    c.err("blob.get", json!({}), "bad_request");
    c.err("blob.get", json!({"kind": 3}), "bad_request");
    c.err("blob.get", json!({"kind": "NO_SUCH_KIND"}), "not_found");
    c.err("blob.set", json!({"kind": "NO_SUCH_KIND", "data": "a"}), "not_found");
    c.err("blob.get", json!({"kind": "AUTH", "idx": 2}), "out_of_range");
    c.err("blob.set", json!({"kind": "NTP_SERVER", "idx": 1, "data": "a"}), "out_of_range");
    c.err("blob.size", json!({"kind": "DEVICE_TYPE", "idx": 1}), "out_of_range");
    c.err("blob.get", json!({"kind": "AUTH", "idx": -1}), "bad_request");
    c.err("blob.frob", serial.clone(), "unknown_op");

    // AUTH has two slots, kept apart; the owner's uid may read secrets.
    c.ok("blob.set", json!({"kind": "AUTH", "idx": 0, "data": "registration"}));
    c.ok("blob.set", json!({"kind": "AUTH", "idx": 1, "data": "auth-token"}));
    assert_eq!(read(c, "AUTH", 0), b"registration");
    assert_eq!(read(c, "AUTH", 1), b"auth-token");
    c.ok("blob.set", json!({"kind": "MQTT_PASSWORD", "data": "pw"}));
    assert_eq!(read(c, "mqtt_password", 0), b"pw", "kinds are case-insensitive");

    // NTP_SERVER reads the default until set and again once emptied.
    assert_eq!(read(c, "NTP_SERVER", 0), b"pool.ntp.org");
    c.ok("blob.set", json!({"kind": "NTP_SERVER", "data": "time.example"}));
    assert_eq!(read(c, "NTP_SERVER", 0), b"time.example");
    c.ok("blob.empty", json!({"kind": "NTP_SERVER"}));
    assert_eq!(read(c, "NTP_SERVER", 0), b"pool.ntp.org");
    c.ok("blob.set", json!({"kind": "NTP_SERVER", "data": "t2.example"}));
    c.ok("blob.destroy", json!({"kind": "NTP_SERVER"}));
    assert_eq!(read(c, "NTP_SERVER", 0), b"pool.ntp.org");
}

#[test]
fn every_blob_op_and_error_over_the_socket() {
    let d = TestDaemon::start(&[]);
    let mut c = d.connect();
    exercise_every_op(&mut c);
}

#[test]
fn every_blob_op_and_error_over_stdio() {
    let mut d = TestDaemon::start_stdio(&[]);
    let mut c = d.stdio();
    exercise_every_op(&mut c);
}

#[test]
fn pipelined_requests_reach_the_blob_in_order() {
    let d = TestDaemon::start(&[]);
    let mut c = d.connect();
    let ids: Vec<u64> = (0..50)
        .map(|i| c.send("blob.append", json!({"kind": "DEVICE_TYPE", "data": format!("{i},")})))
        .collect();
    let get = c.send("blob.get", json!({"kind": "DEVICE_TYPE"}));
    let mut want = String::new();
    for (i, id) in ids.iter().enumerate() {
        want.push_str(&format!("{i},"));
        assert_eq!(c.reply(&json!(id))["size"], want.len());
    }
    assert_eq!(c.reply(&json!(get))["data"], want);
}

/// Stop a daemon cleanly (SIGTERM) so its state dir can be reused.
fn stop(mut d: TestDaemon) {
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit().success());
}

fn start_on(dir: &Path, config: Option<&str>) -> TestDaemon {
    TestDaemon::with(Options {
        state_dir: Some(dir.to_owned()),
        config: config.map(str::to_owned),
        ..Options::default()
    })
}

#[test]
fn durable_blobs_survive_a_restart_and_others_do_not() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("state");
    let d = start_on(&dir, None);
    let mut c = d.connect();
    c.ok("blob.set", json!({"kind": "AUTH", "idx": 1, "data": "tok"}));
    c.ok("blob.append", json!({"kind": "AUTH", "idx": 1, "data_b64": B64.encode([0, 1, 2])}));
    c.ok("blob.set", json!({"kind": "DEVICE_SERIAL", "data": "sn-42"}));
    c.ok("blob.set", json!({"kind": "MQTT_USERNAME", "data": "user"}));
    c.ok("blob.set", json!({"kind": "DEVICE_TYPE", "data": "gone soon"}));
    c.ok("blob.destroy", json!({"kind": "DEVICE_TYPE"}));
    drop(c);
    stop(d);

    let d = start_on(&dir, None);
    let mut c = d.connect();
    assert_eq!(read(&mut c, "AUTH", 1), b"tok\x00\x01\x02");
    assert_eq!(read(&mut c, "AUTH", 0), b"", "slot 0 was never set");
    assert_eq!(read(&mut c, "DEVICE_SERIAL", 0), b"sn-42");
    assert_eq!(read(&mut c, "MQTT_USERNAME", 0), b"", "not durable by default");
    assert_eq!(read(&mut c, "DEVICE_TYPE", 0), b"", "a destroy is durable too");
}

#[test]
fn config_max_bytes_refuses_a_larger_blob_and_leaves_it_unchanged() {
    let d = TestDaemon::with(Options {
        config: Some("[blobs]\nmax_bytes = 16\n".into()),
        ..Options::default()
    });
    let mut c = d.connect();
    let sixteen = "0123456789abcdef";
    assert_eq!(c.ok("blob.set", json!({"kind": "DEVICE_SERIAL", "data": sixteen}))["size"], 16);
    c.err("blob.set", json!({"kind": "DEVICE_SERIAL", "data": format!("{sixteen}!")}), "too_large");
    assert_eq!(read(&mut c, "DEVICE_SERIAL", 0), sixteen.as_bytes());
    c.err("blob.append", json!({"kind": "DEVICE_SERIAL", "data": "!"}), "too_large");
    assert_eq!(read(&mut c, "DEVICE_SERIAL", 0), sixteen.as_bytes());

    // The same through appends on a fresh blob, base64 this time.
    c.ok("blob.append", json!({"kind": "DEVICE_TYPE", "data_b64": B64.encode([7u8; 10])}));
    c.err(
        "blob.append",
        json!({"kind": "DEVICE_TYPE", "data_b64": B64.encode([8u8; 7])}),
        "too_large",
    );
    assert_eq!(read(&mut c, "DEVICE_TYPE", 0), [7u8; 10]);
}

#[test]
fn config_durable_list_decides_what_survives_a_restart() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("state");
    let cfg = "[blobs]\ndurable = [\"MQTT_USERNAME\"]\n";
    let d = start_on(&dir, Some(cfg));
    let mut c = d.connect();
    c.ok("blob.set", json!({"kind": "MQTT_USERNAME", "data": "user"}));
    c.ok("blob.set", json!({"kind": "DEVICE_SERIAL", "data": "sn"}));
    drop(c);
    stop(d);

    let d = start_on(&dir, Some(cfg));
    let mut c = d.connect();
    assert_eq!(read(&mut c, "MQTT_USERNAME", 0), b"user");
    assert_eq!(read(&mut c, "DEVICE_SERIAL", 0), b"", "not in this config's durable list");
}

// ---------------------------------------------------------------------------
// Durability under SIGKILL.

/// The durable blobs the kill test writes: (kind, idx).
const KILL_BLOBS: [(&str, u64); 4] =
    [("AUTH", 0), ("AUTH", 1), ("DEVICE_SERIAL", 0), ("CLIENT_CERT_DER", 0)];

/// What the client knows of one blob: the value it was last told was
/// stored, and the one it sent and has no answer for.
#[derive(Default, Clone)]
struct Known {
    acked: Vec<u8>,
    in_flight: Option<Vec<u8>>,
}

/// A bare JSON-lines client that reports a dead daemon as `None` instead
/// of panicking, for talking to a daemon that may be killed at any byte.
struct Fragile {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Fragile {
    fn connect(path: &Path) -> Self {
        let w = UnixStream::connect(path).unwrap();
        // Only a safety net: the helper thread always kills the daemon.
        w.set_read_timeout(Some(WAIT)).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Self { w, r }
    }

    fn call(&mut self, req: &Value) -> Option<Value> {
        let mut line = req.to_string();
        line.push('\n');
        self.w.write_all(line.as_bytes()).ok()?;
        let mut got = String::new();
        match self.r.read_line(&mut got) {
            Ok(n) if n > 0 && got.ends_with('\n') => serde_json::from_str(&got).ok(),
            _ => None,
        }
    }
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.gen_range(0..=max);
    (0..n).map(|_| rng.gen()).collect()
}

/// Streams random sets, appends and empties until the daemon dies; returns
/// how many were acknowledged.
fn stream_until_killed(c: &mut Fragile, known: &mut [Known], rng: &mut StdRng) -> usize {
    let mut acks = 0;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let which = rng.gen_range(0..KILL_BLOBS.len());
        let (kind, idx) = KILL_BLOBS[which];
        let k = &mut known[which];
        let roll = rng.gen_range(0..10);
        let (op, new, data) = if roll == 0 {
            ("blob.empty", Vec::new(), None)
        } else if roll < 4 || k.acked.len() > 2048 {
            let v = random_bytes(rng, 300);
            ("blob.set", v.clone(), Some(v))
        } else {
            let chunk = random_bytes(rng, 64);
            let mut v = k.acked.clone();
            v.extend_from_slice(&chunk);
            ("blob.append", v, Some(chunk))
        };
        let mut req = json!({"op": op, "kind": kind, "idx": idx});
        if let Some(d) = data {
            req["data_b64"] = json!(B64.encode(d));
        }
        k.in_flight = Some(new);
        let Some(reply) = c.call(&req) else { return acks };
        assert_eq!(reply["ok"], true, "{op} {kind}[{idx}] failed: {reply}");
        let new = k.in_flight.take().unwrap();
        assert_eq!(reply["size"], new.len(), "{op} {kind}[{idx}]: {reply}");
        k.acked = new;
        acks += 1;
    }
    panic!("the daemon was not killed within {WAIT:?}");
}

/// After a restart each durable blob must hold the last acknowledged value
/// or the one in flight, whole; what it holds becomes the new baseline.
/// Returns how many held the value in flight (committed, reply lost).
fn check_after_restart(c: &mut Client, known: &mut [Known], round: usize) -> usize {
    let mut landed = 0;
    for (i, (kind, idx)) in KILL_BLOBS.iter().enumerate() {
        let got = read(c, kind, *idx);
        let k = &mut known[i];
        let ok = got == k.acked || k.in_flight.as_ref() == Some(&got);
        assert!(
            ok,
            "round {round}: {kind}[{idx}] holds {} bytes, neither the acked value ({} bytes) \
             nor the one in flight ({:?} bytes)",
            got.len(),
            k.acked.len(),
            k.in_flight.as_ref().map(Vec::len),
        );
        if got != k.acked {
            landed += 1;
        }
        k.acked = got;
        k.in_flight = None;
    }
    assert_eq!(read(c, "MQTT_USERNAME", 0), b"", "round {round}: not a durable kind");
    landed
}

#[test]
fn durable_blobs_are_never_torn_by_sigkill() {
    let kills: usize = if std::env::var("LWSYS_SLOW").is_ok_and(|v| v == "1") { 200 } else { 20 };
    let seed: u64 = std::env::var("LWSYS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("kill test: {kills} kills, LWSYS_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("state");
    let mut known = vec![Known::default(); KILL_BLOBS.len()];
    let started = Instant::now();
    let mut acks = 0;
    let mut landed = 0;
    for round in 0..=kills {
        let mut d = start_on(&dir, None);
        let mut c = d.connect();
        landed += check_after_restart(&mut c, &mut known, round);
        if round == kills {
            break;
        }
        c.ok("blob.set", json!({"kind": "MQTT_USERNAME", "data": "lost at restart"}));
        drop(c);

        let pid = Pid::from_raw(i32::try_from(d.pid()).unwrap());
        // Mostly within the first few updates, sometimes well into the
        // stream, always after it has started.
        let delay = Duration::from_micros(if rng.gen_bool(0.2) {
            rng.gen_range(0..100_000)
        } else {
            rng.gen_range(0..15_000)
        });
        let (go, wait_go) = mpsc::channel::<()>();
        let killer = std::thread::spawn(move || {
            wait_go.recv().unwrap();
            std::thread::sleep(delay);
            // The child is not reaped until this thread is joined, so the
            // pid cannot have been reused.
            kill(pid, Signal::SIGKILL).unwrap();
        });
        let mut f = Fragile::connect(d.socket());
        go.send(()).unwrap();
        acks += stream_until_killed(&mut f, &mut known, &mut rng);
        killer.join().unwrap();
        d.kill();
    }
    eprintln!(
        "kill test: {kills} kills, {acks} acknowledged updates, {landed} unacknowledged \
         updates found stored after a restart, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
