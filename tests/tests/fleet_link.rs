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
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\n"))
            .unwrap();
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
        if x["pending"]["by"] == "fleet" {
            break x;
        }
        assert!(Instant::now() < deadline, "never held by fleet: {x}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(held["pending"]["target"], "REGISTERED", "{held}");
    let reason = held["pending"]["reason"].as_str().unwrap().to_owned();
    assert!(["broker unreachable", "waiting for broker"].contains(&reason.as_str()), "{reason}");
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
    let _d = fleet_daemon(port, "device_id = \"dev-3\"\ncommands = \"admin\"\n");
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
}
