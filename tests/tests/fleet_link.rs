//! The fleet link end to end: a real `lwsysd` against a real mosquitto on
//! 127.0.0.1 (plain MQTT on an ephemeral port; TLS and ACLs are the fleet
//! harness's), observed with rumqttc. Pins the DESIGN §8 topics: the
//! retained `state` reaching OPERATIONAL, `status` online then `lost` by
//! the last will when the daemon is killed, a read command answered on
//! `reply` with its id, writes refused to a read-only role, and the
//! `fleet` gate holding its state until the broker accepts the device.
#![allow(clippy::unwrap_used)] // a test that cannot read its input should fail loudly

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use lwsys_tests::{Options, TestDaemon, WAIT};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

/// A mosquitto on 127.0.0.1:`port`, killed on drop.
struct Broker {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start(port: u16) -> Self {
        Self::with_conf(port, &format!("listener {port} 127.0.0.1\nallow_anonymous true\n"), None)
    }

    /// Start with the config `conf` in `dir` (or a fresh one), ready once
    /// `port` accepts connections.
    fn with_conf(port: u16, conf: &str, dir: Option<tempfile::TempDir>) -> Self {
        let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, conf).unwrap();
        let conf = path;
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Ready once it accepts a connection.
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, _dir: dir }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto() -> &'static str {
    if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

/// A free 127.0.0.1 port (the kernel's pick, released for the broker).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An MQTT observer subscribed to `filter`: every publish as
/// `(topic, payload, retained)`.
struct Observer {
    client: Client,
    rx: Receiver<(String, String, bool)>,
    /// Everything received so far, so a wait also finds what came before
    /// it (the daemon publishes its topics in its own order).
    seen: std::cell::RefCell<Vec<(String, String)>>,
}

impl Observer {
    fn new(port: u16, filter: &str) -> Self {
        // A client id of its own: a second observer with the same id
        // would take the first one's session over, and back.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("observer-{}-{n}", std::process::id());
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut conn) = Client::new(o, 16);
        client.subscribe(filter, QoS::AtLeastOnce).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let payload = String::from_utf8_lossy(&p.payload).into_owned();
                        if tx.send((p.topic.clone(), payload, p.retain)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // The observer was dropped.
                    Err(rumqttc::ConnectionError::RequestsDone) => return,
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Self { client, rx, seen: Default::default() }
    }

    /// The first message on `topic` that `pred` accepts.
    fn wait(&self, topic: &str, pred: impl Fn(&str) -> bool) -> String {
        if let Some((_, p)) = self.seen.borrow().iter().find(|(t, p)| t == topic && pred(p)) {
            return p.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (t, p, _) = self
                .rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("nothing matching on {topic} within {WAIT:?}"));
            self.seen.borrow_mut().push((t.clone(), p.clone()));
            if t == topic && pred(&p) {
                return p;
            }
        }
    }

    /// Publish a command and wait for the reply carrying `id`.
    fn command(&self, device: &str, line: &str, id: &Value) -> Value {
        self.client
            .publish(format!("lwsys/{device}/cmd"), QoS::AtLeastOnce, false, line.as_bytes())
            .unwrap();
        let reply = self.wait(&format!("lwsys/{device}/reply"), |p| {
            serde_json::from_str::<Value>(p).map(|v| v["id"] == *id).unwrap_or(false)
        });
        serde_json::from_str(&reply).unwrap()
    }
}

fn fleet_daemon(port: u16, extra: &str) -> TestDaemon {
    let config = format!("[fleet]\nbroker = \"mqtt://127.0.0.1:{port}\"\n{extra}");
    TestDaemon::with(Options { config: Some(config), ..Options::default() })
}

#[test]
fn retained_state_reaches_operational_commands_are_answered_and_a_killed_daemon_is_lost() {
    let port = free_port();
    let _broker = Broker::start(port);
    let obs = Observer::new(port, "lwsys/dev-1/#");
    let mut d = fleet_daemon(port, "device_id = \"dev-1\"\ncommands = \"readonly\"\n");

    let state = obs.wait("lwsys/dev-1/state", |p| p.contains("\"OPERATIONAL\""));
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["state"], "OPERATIONAL");
    assert_eq!(state["pending"], Value::Null);
    assert!(state["since_us"].as_u64().unwrap() > 0, "{state}");
    obs.wait("lwsys/dev-1/status", |p| p == "online");
    let info: Value = serde_json::from_str(&obs.wait("lwsys/dev-1/info", |_| true)).unwrap();
    assert_eq!(info["commands"], "readonly");

    // A read runs with the read-only role and is answered with its id.
    let r = obs.command("dev-1", r#"{"id":7,"op":"state.get"}"#, &json!(7));
    assert_eq!((r["ok"].clone(), r["state"].clone()), (json!(true), json!("OPERATIONAL")), "{r}");
    // A change is refused to that role, as to a read-only socket client.
    let r = obs.command("dev-1", r#"{"id":"j","op":"state.jump","target":"DHCP"}"#, &json!("j"));
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    // Bad JSON gets the socket's parse error (no id could be read: null).
    let r = obs.command("dev-1", "{not json", &Value::Null);
    assert_eq!(r["error"]["code"], "parse_error", "{r}");

    // Killed without a goodbye: the broker publishes the last will.
    d.kill();
    obs.wait("lwsys/dev-1/status", |p| p == "lost");
    // And it is retained: a late observer sees it too.
    let late = Observer::new(port, "lwsys/dev-1/status");
    late.wait("lwsys/dev-1/status", |p| p == "lost");
}

#[test]
fn the_fleet_gate_holds_its_state_until_the_broker_accepts_and_commands_default_to_forbidden() {
    let port = free_port();
    // No broker yet: the gate must hold REGISTERED.
    let d = fleet_daemon(port, "device_id = \"dev-2\"\ngate_state = \"REGISTERED\"\n");
    let mut c = d.connect();
    let deadline = Instant::now() + WAIT;
    let held = loop {
        let x = c.ok("state.explain", json!({}));
        // "waiting for broker" first; once an attempt failed the walk asks
        // again and the reason says why.
        if x["pending"]["by"] == "fleet" && x["pending"]["reason"] == "broker unreachable" {
            break x;
        }
        assert!(Instant::now() < deadline, "never held by fleet as unreachable: {x}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(held["pending"]["target"], "REGISTERED", "{held}");
    assert_eq!(c.ok("state.get", json!({}))["state"], "POLICY_VALID");

    // The broker comes up: the link connects (backoff is 1 s, 2 s, ...)
    // and the gate lets the walk go on.
    let _broker = Broker::start(port);
    c.wait_state("OPERATIONAL");
    let obs = Observer::new(port, "lwsys/dev-2/#");
    obs.wait("lwsys/dev-2/state", |p| p.contains("\"OPERATIONAL\""));
    // DESIGN §7's default: broker commands may do nothing.
    let r = obs.command("dev-2", r#"{"id":1,"op":"state.get"}"#, &json!(1));
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
}

#[test]
fn a_broker_restart_is_survived_and_everything_is_republished_and_admin_commands_run_when_granted()
{
    let port = free_port();
    let broker = Broker::start(port);
    let obs = Observer::new(port, "lwsys/dev-3/#");
    let mut d = fleet_daemon(port, "device_id = \"dev-3\"\ncommands = \"admin\"\n");
    obs.wait("lwsys/dev-3/state", |p| p.contains("\"OPERATIONAL\""));
    obs.wait("lwsys/dev-3/status", |p| p == "online");
    // Granted admin: a change runs.
    let set = r#"{"id":3,"op":"blob.set","kind":"DEVICE_TYPE","data":"sensor"}"#;
    let r = obs.command("dev-3", set, &json!(3));
    assert_eq!(r["ok"], true, "{r}");
    drop(obs);

    // A fresh mosquitto without persistence has no retained messages: all
    // it knows of the device after the restart, the device republished.
    drop(broker);
    let _broker = Broker::start(port);
    let obs = Observer::new(port, "lwsys/dev-3/#");
    let state = obs.wait("lwsys/dev-3/state", |p| p.contains("\"OPERATIONAL\""));
    assert!(state.contains("\"pending\":null"), "{state}");
    obs.wait("lwsys/dev-3/status", |p| p == "online");
    obs.wait("lwsys/dev-3/info", |p| p.contains("\"commands\":\"admin\""));
    let r = obs.command("dev-3", r#"{"id":4,"op":"blob.get","kind":"DEVICE_TYPE"}"#, &json!(4));
    assert_eq!(r["data"], "sensor", "{r}");
    // Even an admin command may not put a secret on a topic.
    let get = r#"{"id":5,"op":"blob.get","kind":"MQTT_PASSWORD"}"#;
    let r = obs.command("dev-3", get, &json!(5));
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    // A clean stop still exits 0 with the link up, and the device reads
    // `lost` (it does not say goodbye to the broker: the will speaks).
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit().code(), Some(0));
    obs.wait("lwsys/dev-3/status", |p| p == "lost");
}

/// How the device is told to trust the test CA.
enum Trust {
    /// `[fleet] ca_file`.
    CaFile,
    /// `[trust] cert_dirs`: the trust store's just-in-time verifier, which
    /// finds the CA by the server certificate's authority key id.
    CertDir,
}

/// A TLS broker requiring client certificates; the device boots once to
/// store its certificate in the durable blobs, then again with the link,
/// and must come online verified as `trust` says.
fn tls_link(device_id: &str, trust: Trust) {
    use base64::Engine as _;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "fleet test CA");
    let ca = p.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut sp = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    sp.use_authority_key_identifier_extension = true;
    let server = sp.signed_by(&server_key, &ca, &ca_key).unwrap();
    let device_key = KeyPair::generate().unwrap();
    let mut dp = CertificateParams::new(Vec::<String>::new()).unwrap();
    dp.distinguished_name.push(DnType::CommonName, device_id);
    let device = dp.signed_by(&device_key, &ca, &ca_key).unwrap();
    let file = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let ca_pem = file("ca.pem", ca.pem());
    let server_pem = file("server.pem", server.pem());
    let server_key_pem = file("server.key", server_key.serialize_pem());

    // The plain listener is the observer's; the device must use TLS with
    // a certificate the CA signed.
    let (plain, tls) = (free_port(), free_port());
    let conf = format!(
        "allow_anonymous true\nlistener {plain} 127.0.0.1\nlistener {tls} 127.0.0.1\n\
         cafile {ca_pem}\ncertfile {server_pem}\nkeyfile {server_key_pem}\nrequire_certificate true\n"
    );
    let _broker = Broker::with_conf(tls, &conf, Some(dir));
    let obs = Observer::new(plain, &format!("lwsys/{device_id}/#"));

    let b64 = base64::engine::general_purpose::STANDARD;
    let set_blobs = |d: &TestDaemon| {
        let mut c = d.connect();
        c.ok("blob.set", json!({"kind": "CLIENT_CERT_DER", "data_b64": b64.encode(device.der())}));
        let key = b64.encode(device_key.serialize_der());
        c.ok("blob.set", json!({"kind": "CLIENT_KEY_DER", "data_b64": key}));
    };
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("state");
    let trust_conf = match trust {
        Trust::CaFile => format!("ca_file = \"{ca_pem}\"\n"),
        Trust::CertDir => {
            let certs = state.path().join("certs");
            std::fs::create_dir(&certs).unwrap();
            std::fs::write(certs.join("ca.pem"), ca.pem()).unwrap();
            format!("[trust]\ncert_dirs = [\"{}\"]\n", certs.display())
        }
    };
    let config = format!(
        "[fleet]\nbroker = \"mqtts://127.0.0.1:{tls}\"\ndevice_id = \"{device_id}\"\n{trust_conf}"
    );
    let with_link =
        Options { state_dir: Some(state_dir.clone()), config: Some(config), ..Options::default() };
    let mut d = match trust {
        // The certificate stored on a first boot without the link (durable
        // blobs) is used by the second boot's link.
        Trust::CaFile => {
            let mut d = TestDaemon::with(Options {
                state_dir: Some(state_dir.clone()),
                ..Options::default()
            });
            set_blobs(&d);
            d.signal(nix::sys::signal::Signal::SIGTERM);
            assert_eq!(d.wait_exit().code(), Some(0));
            TestDaemon::with(with_link)
        }
        // Provisioned after boot: the broker refuses the first attempt (no
        // certificate); the next attempt reads the blobs again.
        Trust::CertDir => {
            let d = TestDaemon::with(with_link);
            set_blobs(&d);
            d
        }
    };
    obs.wait(&format!("lwsys/{device_id}/state"), |p| p.contains("\"OPERATIONAL\""));
    obs.wait(&format!("lwsys/{device_id}/status"), |p| p == "online");
    // No secret in the daemon's log.
    let logs = d.logs();
    let key_b64 = b64.encode(device_key.serialize_der());
    assert!(!logs.contains(&key_b64[..40]), "the key leaked into the log");
}

#[test]
fn over_tls_the_broker_is_verified_by_ca_file_and_the_device_presents_its_certificate_blobs() {
    tls_link("dev-tls", Trust::CaFile);
}

#[test]
fn over_tls_the_broker_is_verified_by_the_trust_store_and_a_certificate_provisioned_after_boot_is_used(
) {
    tls_link("dev-jit", Trust::CertDir);
}

#[test]
fn a_command_flood_is_bounded_one_runs_eight_wait_and_the_rest_are_busy() {
    let port = free_port();
    let _broker = Broker::start(port);
    let obs = Observer::new(port, "lwsys/dev-4/#");
    let _d = fleet_daemon(port, "device_id = \"dev-4\"\ncommands = \"readonly\"\n");
    obs.wait("lwsys/dev-4/status", |p| p == "online");
    // Each holds the runner for 1 s: the first runs, 8 queue, and the
    // 20th, sent a few ms later, finds the queue full.
    for id in 0..20 {
        let line =
            json!({"id": id, "op": "state.wait", "state": "MODAL_UPDATING", "timeout_ms": 1000});
        obs.client
            .publish("lwsys/dev-4/cmd", QoS::AtLeastOnce, false, line.to_string().into_bytes())
            .unwrap();
    }
    let last = obs.wait("lwsys/dev-4/reply", |p| p.contains("\"id\":19"));
    let last: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(last["error"]["code"], "busy", "{last}");
    assert!(last["error"]["message"].as_str().unwrap().contains("at most 8"), "{last}");
    // The first ran to its own timeout, not refused.
    let first: Value =
        serde_json::from_str(&obs.wait("lwsys/dev-4/reply", |p| p.contains("\"id\":0,"))).unwrap();
    assert_eq!(first["error"]["code"], "timeout", "{first}");
    // Once the queue drains, commands run again.
    let r = obs.command("dev-4", r#"{"id":100,"op":"state.get"}"#, &json!(100));
    assert_eq!(r["state"], "OPERATIONAL", "{r}");
}
