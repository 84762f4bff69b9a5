//! `lwsysctl fleet` against a real mosquitto on 127.0.0.1: retained device
//! payloads published by the test show up in `status` and `explain`, and
//! `send` gets the reply a fake device (a test thread) publishes.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lwsys_ctl::fleet::mqtt::{Broker as Url, Client, Options};
use serde_json::{json, Value};

/// A mosquitto on an ephemeral 127.0.0.1 port, killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Self {
        Self::start_with(|_| String::new())
    }

    /// A broker whose config gets `extra(dir)` appended (files it names
    /// go in `dir`).
    fn start_with(extra: impl FnOnce(&std::path::Path) -> String) -> Self {
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("mosquitto is installed (apt-get install mosquitto; scripts/test does)");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{}",
                extra(dir.path())
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Built before waiting, so a broker that never comes up is still
        // killed (by Drop) when the wait below panics.
        let mut b = Self { child, port, _dir: dir };
        // Ready once its listener accepts: each try is answered at once
        // (refused or accepted), so this waits on the broker, not a timer.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(b.child.try_wait().unwrap().is_none(), "mosquitto exited at start");
            assert!(Instant::now() < deadline, "mosquitto did not listen within 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        b
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn client(&self) -> Client {
        Client::connect(&Url::parse(&self.url()).unwrap(), &Options::default()).unwrap()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ctl(b: &Mosquitto, prefix: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lwsysctl"))
        .args(["fleet", "--broker", &b.url(), "--prefix", prefix])
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn state(s: &str, held: Option<(&str, &str)>) -> String {
    let pending = held.map(|(by, reason)| {
        json!({"by": by, "reason": reason, "target": "OPERATIONAL", "since_us": 7u64})
    });
    json!({"state": s, "since_us": 1_764_000_000_000_000u64, "pending": pending}).to_string()
}

/// Publish a fleet of retained payloads under `prefix`: d1 OPERATIONAL,
/// d2 and d3 held by `fleet`, d4 lost, d5 held by `sntp`.
fn publish_fleet(b: &Mosquitto, prefix: &str) {
    let mut c = b.client();
    let mut put = |dev: &str, leaf: &str, payload: &str| {
        c.publish(&format!("{prefix}/{dev}/{leaf}"), payload.as_bytes(), 1, true).unwrap();
    };
    let info = json!({"version": "0.1.0", "variant": "v1", "protocol": 1, "commands": "none"});
    put("d1", "status", "online");
    put("d1", "state", &state("OPERATIONAL", None));
    put("d1", "info", &info.to_string());
    for d in ["d2", "d3"] {
        put(d, "status", "online");
        put(d, "state", &state("REGISTERED", Some(("fleet", "broker unreachable"))));
    }
    put("d4", "status", "lost");
    put("d4", "state", &state("OPERATIONAL", None));
    put("d5", "status", "online");
    put("d5", "state", &state("TIME_VALID", Some(("sntp", "no answer"))));
    // Not a device topic of ours: ignored.
    put("_all", "state", "junk");
    c.disconnect();
}

#[test]
fn status_lists_every_retained_device_with_state_holder_and_version() {
    let b = Mosquitto::start();
    publish_fleet(&b, "t1");
    let o = ctl(&b, "t1", &["--json", "status"]);
    assert!(o.status.success(), "{o:?}");
    let rows: Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["device"].as_str().unwrap()).collect();
    assert_eq!(ids, ["d1", "d2", "d3", "d4", "d5"]);
    assert_eq!(rows[0]["state"], "OPERATIONAL");
    assert_eq!(rows[0]["version"], "0.1.0");
    assert_eq!(rows[1]["pending"]["by"], "fleet");
    assert_eq!(rows[1]["pending"]["reason"], "broker unreachable");
    assert_eq!(rows[3]["status"], "lost");

    let o = ctl(&b, "t1", &["status"]);
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "a header and 5 rows: {text}");
    assert!(lines[0].starts_with("DEVICE") && lines[0].contains("HELD BY"), "{text}");
    assert!(lines[2].contains("REGISTERED") && lines[2].contains("broker unreachable"), "{text}");
    assert!(lines[2].contains("2025-11-24T16:00:00Z"), "{text}");
}

#[test]
fn explain_groups_devices_not_operational_by_holder_largest_first() {
    let b = Mosquitto::start();
    publish_fleet(&b, "t2");
    let o = ctl(&b, "t2", &["--json", "explain"]);
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["total"].as_u64(), v["not_operational"].as_u64()), (Some(5), Some(4)));
    let g = v["groups"].as_array().unwrap();
    assert_eq!(g.len(), 3, "{v}");
    assert_eq!((g[0]["by"].as_str(), g[0]["count"].as_u64()), (Some("fleet"), Some(2)));
    assert_eq!(g[0]["devices"], json!(["d2", "d3"]));
    // One each: sntp, then lost (lost sorts after held groups on ties).
    assert_eq!((g[1]["by"].as_str(), g[1]["count"].as_u64()), (Some("sntp"), Some(1)));
    assert_eq!((g[2]["lost"].as_bool(), g[2]["devices"].clone()), (Some(true), json!(["d4"])));

    let o = ctl(&b, "t2", &["explain"]);
    let text = stdout(&o);
    assert!(text.starts_with("4 of 5 devices not OPERATIONAL\n"), "{text}");
    assert!(text.contains("     2  held by fleet: broker unreachable  (d2, d3)"), "{text}");
}

#[test]
fn status_of_an_empty_prefix_says_so() {
    let b = Mosquitto::start();
    let o = ctl(&b, "nobody", &["status"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o), "no devices under nobody/\n");
}

/// A fake device: answers each request on `<prefix>/<dev>/cmd` with
/// `answer(request)`, after first publishing a reply with a wrong id (which
/// the client must ignore). Returns once it is subscribed.
fn fake_device(
    b: &Mosquitto,
    prefix: &str,
    dev: &str,
    answer: fn(&Value) -> Value,
) -> std::thread::JoinHandle<usize> {
    let mut c = b.client();
    c.subscribe(&[format!("{prefix}/{dev}/cmd")]).unwrap();
    let reply = format!("{prefix}/{dev}/reply");
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut answered = 0;
        while let Some(m) = c.recv(deadline).unwrap() {
            let req: Value = serde_json::from_slice(&m.payload).unwrap();
            let decoy = json!({"id": "someone-else", "ok": false,
                               "error": {"code": "internal", "message": "not yours"}});
            c.publish(&reply, decoy.to_string().as_bytes(), 0, false).unwrap();
            let mut r = answer(&req);
            r["id"] = req["id"].clone();
            c.publish(&reply, r.to_string().as_bytes(), 1, false).unwrap();
            answered += 1;
            if req["op"] == "system.shutdown" {
                break;
            }
        }
        answered
    })
}

fn stop(b: &Mosquitto, prefix: &str, dev: &str) {
    let mut c = b.client();
    let req = json!({"op": "system.shutdown", "id": 0});
    c.publish(&format!("{prefix}/{dev}/cmd"), req.to_string().as_bytes(), 1, false).unwrap();
}

#[test]
fn send_prints_the_reply_with_the_requests_id_and_exits_0() {
    let b = Mosquitto::start();
    let dev = fake_device(&b, "t3", "d1", |_| json!({"ok": true, "state": "OPERATIONAL"}));
    let o = ctl(&b, "t3", &["--json", "send", "d1", r#"{"op":"state.get","id":"abc"}"#]);
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v,
        json!([{"device": "d1", "error": null,
        "reply": {"ok": true, "state": "OPERATIONAL", "id": "abc"}}])
    );
    // Without an id one is added, and the human line shows the reply.
    let o = ctl(&b, "t3", &["send", "d1", r#"{"op":"state.get"}"#]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o), "d1  ok {\"state\":\"OPERATIONAL\"}\n");
    stop(&b, "t3", "d1");
    assert_eq!(dev.join().unwrap(), 3);
}

#[test]
fn send_exits_1_on_an_error_reply_and_on_no_reply_within_the_deadline() {
    let b = Mosquitto::start();
    let dev = fake_device(
        &b,
        "t4",
        "d1",
        |_| json!({"ok": false, "error": {"code": "forbidden", "message": "admin op"}}),
    );
    let o = ctl(&b, "t4", &["send", "d1", r#"{"op":"system.reboot"}"#]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert_eq!(stdout(&o), "d1  error: forbidden: admin op\n");
    // Nobody listens on d9: a timeout after the 300 ms asked for.
    let started = Instant::now();
    let o = ctl(&b, "t4", &["--json", "send", "--timeout-ms", "300", "d9", r#"{"op":"hello"}"#]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v, json!([{"device": "d9", "reply": null, "error": "timeout"}]));
    stop(&b, "t4", "d1");
    assert_eq!(dev.join().unwrap(), 2);
}

#[test]
fn send_all_reaches_every_device_not_lost() {
    let b = Mosquitto::start();
    let mut c = b.client();
    for (d, s) in [("a", "online"), ("b", "online"), ("c", "lost")] {
        c.publish(&format!("t5/{d}/status"), s.as_bytes(), 1, true).unwrap();
    }
    c.disconnect();
    let da = fake_device(&b, "t5", "a", |_| json!({"ok": true}));
    let db = fake_device(&b, "t5", "b", |_| json!({"ok": true}));
    let o = ctl(&b, "t5", &["--json", "send", "--all", r#"{"op":"hello"}"#]);
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let devices: Vec<&str> =
        v.as_array().unwrap().iter().map(|r| r["device"].as_str().unwrap()).collect();
    assert_eq!(devices, ["a", "b"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("skipped 1 lost devices"), "{o:?}");
    stop(&b, "t5", "a");
    stop(&b, "t5", "b");
    assert_eq!((da.join().unwrap(), db.join().unwrap()), (2, 2));
}

#[test]
fn a_bad_request_or_url_is_a_usage_error_before_any_traffic() {
    let b = Mosquitto::start();
    let o = ctl(&b, "t6", &["send", "d1", "not json"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let o = ctl(&b, "t6", &["send", "a+b", "{}"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let o = Command::new(env!("CARGO_BIN_EXE_lwsysctl"))
        .args(["fleet", "--broker", "http://127.0.0.1:1", "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad broker URL"), "{o:?}");
}

/// A test PKI: a CA, a server certificate for 127.0.0.1 and a client
/// certificate, as PEM files in `dir`.
fn pki(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "lwsys fleet test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let leaf = |san: &str, name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![san.to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    };
    leaf("127.0.0.1", "server");
    leaf("ops.example", "ops");
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    // mosquitto drops to its own user before it reads some files.
    use std::os::unix::fs::PermissionsExt;
    for f in std::fs::read_dir(dir).unwrap() {
        let f = f.unwrap().path();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn over_mqtts_with_a_client_certificate_status_shows_the_devices() {
    let mut certs = std::path::PathBuf::new();
    let b = Mosquitto::start_with(|dir| {
        pki(dir);
        certs = dir.to_owned();
        let p = |f: &str| dir.join(f).display().to_string();
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            p("ca.pem"),
            p("server.pem"),
            p("server.key")
        )
    });
    let url = format!("mqtts://127.0.0.1:{}", b.port);
    let opts = Options {
        ca: Some(certs.join("ca.pem")),
        cert: Some(certs.join("ops.pem")),
        key: Some(certs.join("ops.key")),
        ..Options::default()
    };
    let mut c = Client::connect(&Url::parse(&url).unwrap(), &opts).unwrap();
    c.publish("t7/d1/status", b"online", 1, true).unwrap();
    c.publish("t7/d1/state", state("DHCP", Some(("net", "no link"))).as_bytes(), 1, true).unwrap();
    c.disconnect();

    let tls = |extra: &[&str]| {
        let ca = certs.join("ca.pem");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lwsysctl"));
        cmd.args(["fleet", "--broker", &url, "--prefix", "t7", "--ca"]).arg(&ca);
        cmd.args(extra).output().unwrap()
    };
    let cert = certs.join("ops.pem").display().to_string();
    let key = certs.join("ops.key").display().to_string();
    let o = tls(&["--cert", &cert, "--key", &key, "--json", "status"]);
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["device"], "d1");
    assert_eq!(v[0]["pending"]["by"], "net");

    // The broker requires a client certificate: without one, exit 2.
    let o = tls(&["status"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("error: fleet: broker"), "{o:?}");
    // A CA that did not sign the broker's certificate: exit 2.
    let o = Command::new(env!("CARGO_BIN_EXE_lwsysctl"))
        .args(["fleet", "--broker", &url, "--ca", &cert, "--cert", &cert, "--key", &key, "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    // mqtts without --ca is a usage error before any traffic.
    let o = Command::new(env!("CARGO_BIN_EXE_lwsysctl"))
        .args(["fleet", "--broker", &url, "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs --ca"), "{o:?}");
}
