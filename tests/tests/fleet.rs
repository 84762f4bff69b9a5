//! The fleet over a real mosquitto (issue 16, "How it is checked"): the
//! broker harness itself (TLS with client certificates required, the
//! per-device ACL, a restart on the same port), then lwsysd's fleet link
//! against it over TLS, the daemon verifying the broker through `[trust]
//! cert_dirs` and presenting its CLIENT_CERT_DER / CLIENT_KEY_DER blobs:
//! devices boot and appear, a notifier's hold shows who and why, a killed
//! daemon reads `lost`, a broker restart is survived, commands are
//! answered, admin ops are `forbidden` unless granted, a device cannot
//! publish another device's topics, and the operator sees it all through
//! `lwsysctl fleet status` / `explain` / `send` with its own certificate.
//! (Plain-MQTT link details are `fleet_link.rs`.)
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use lwsys_tests::mosquitto::{Mode, OPERATOR};
use lwsys_tests::{
    Client, Identity, Login, Message, Mosquitto, Options, Subscriber, TestCa, TestDaemon,
};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::path::Path;

const PREFIX: &str = "lwsys";

// "Nothing arrived" is shown without waiting out a timer: mosquitto routes
// a message (and sends a new subscriber the retained ones) before it answers
// the next packet, and `publish` returns on the PUBACK, so a marker published
// afterwards on a topic the same subscriber gets is delivered after anything
// it would have got; what came before the marker is all there was.

#[test]
fn tls_broker_accepts_a_client_cert_from_its_ca_and_refuses_none_or_a_foreign_one() {
    let Some(broker) = Mosquitto::tls(PREFIX) else { return };
    let dev = broker.device("dev-a");

    // A cert from the CA: subscribed (SUBACK seen) and its own retained
    // state round-trips.
    let mut sub = broker.subscribe(Some(&dev), "lwsys/dev-a/#").unwrap();
    broker.publish(Some(&dev), "lwsys/dev-a/state", b"{\"state\":\"OPERATIONAL\"}", true).unwrap();
    let m = sub.wait_text("lwsys/dev-a/state", "{\"state\":\"OPERATIONAL\"}");
    assert!(!m.retained, "a live message is not flagged retained: {m:?}");

    // No client certificate at all: refused.
    let none = broker.subscribe(None, "lwsys/dev-a/#");
    assert!(none.is_err(), "a client without a certificate was let in");
    assert!(broker.publish(None, "lwsys/dev-a/state", b"x", true).is_err());

    // A certificate from another CA with the same CN: refused.
    let other = tempfile::tempdir().unwrap();
    let rogue_ca = TestCa::new(other.path(), "rogue CA");
    let rogue = rogue_ca.client("dev-a");
    let r = broker.subscribe(Some(&rogue), "lwsys/dev-a/#");
    assert!(r.is_err(), "a certificate from a foreign CA was let in");
    assert!(broker.publish(Some(&rogue), "lwsys/dev-a/state", b"rogue", true).is_err());

    // A client that trusts another CA refuses the broker.
    let r = broker.subscribe_with(Some(&dev), Some(&rogue_ca.ca_pem), "lwsys/dev-a/#");
    assert!(r.is_err(), "the client accepted a broker its CA did not sign");

    // Still exactly the one legitimate retained state: none of the refused
    // publishes reached the store.
    let mut fresh = broker.subscribe(Some(&dev), "lwsys/dev-a/state").unwrap();
    broker.publish(Some(&dev), "lwsys/dev-a/state", b"marker", false).unwrap();
    let (_, before) = fresh.wait_for(|m| m.payload == b"marker");
    let retained: Vec<String> = before.iter().filter(|m| m.retained).map(|m| m.text()).collect();
    assert_eq!(retained, ["{\"state\":\"OPERATIONAL\"}"], "exactly 1 retained state");
}

#[test]
fn a_device_cannot_publish_or_read_another_devices_topics() {
    let Some(mut broker) = Mosquitto::tls(PREFIX) else { return };
    let (a, b) = (broker.device("dev-a"), broker.device("dev-b"));
    let op = broker.operator();
    let mut watch = broker.subscribe(Some(&op), "lwsys/+/#").unwrap();

    // Each publish waits for the broker's PUBACK, and the broker routes a
    // message before acknowledging it: once A's own marker arrives, the
    // forbidden message would have arrived before it.
    let _ = broker.publish(Some(&a), "lwsys/dev-b/state", b"forged by A", true);
    broker.wait_log(&["Denied PUBLISH", "'lwsys/dev-b/state'"]);
    broker.publish(Some(&a), "lwsys/dev-a/state", b"marker", false).unwrap();
    let (_, before) = watch.wait_for(|m| m.topic == "lwsys/dev-a/state");
    assert!(before.is_empty(), "the operator saw a forbidden publish: {before:?}");

    // Not retained either: B's subtree holds nothing.
    let mut b_own = broker.subscribe(Some(&b), "lwsys/dev-b/#").unwrap();
    broker.publish(Some(&b), "lwsys/dev-b/status", b"marker", false).unwrap();
    let (_, before) = b_own.wait_for(|m| m.payload == b"marker");
    assert!(before.is_empty(), "A's forged message reached B's subtree: {before:?}");

    // A subscribing to B's subtree sees nothing B publishes there, while
    // the operator sees it.
    let mut a_snoops =
        broker.subscribe_all(Some(&a), None, &["lwsys/dev-b/#", "lwsys/dev-a/#"]).unwrap();
    broker.publish(Some(&b), "lwsys/dev-b/state", b"B's own", false).unwrap();
    watch.wait_text("lwsys/dev-b/state", "B's own");
    b_own.wait_text("lwsys/dev-b/state", "B's own");
    broker.publish(Some(&a), "lwsys/dev-a/status", b"marker", false).unwrap();
    let (_, before) = a_snoops.wait_for(|m| m.payload == b"marker");
    assert!(before.is_empty(), "device A read device B's topics: {before:?}");

    // The operator may send B a command but not forge B's state.
    broker.publish(Some(&op), "lwsys/dev-b/cmd", b"{\"op\":\"state\"}", false).unwrap();
    b_own.wait_text("lwsys/dev-b/cmd", "{\"op\":\"state\"}");
    let _ = broker.publish(Some(&op), "lwsys/dev-b/state", b"forged by operator", false);
    broker.publish(Some(&b), "lwsys/dev-b/reply", b"marker", false).unwrap();
    let (_, before) = b_own.wait_for(|m| m.topic == "lwsys/dev-b/reply");
    assert!(before.is_empty(), "the operator wrote device B's state: {before:?}");
    assert!(broker.log().contains(OPERATOR), "the operator connected under its CN");

    // The fleet-wide command topic: the operator writes it, every device
    // reads it, no device writes it (or it could command the fleet).
    let all = lwsys_messages::fleet::fleet_cmd_topic(PREFIX);
    let mut a_all = broker.subscribe_all(Some(&a), None, &[&all, "lwsys/dev-a/#"]).unwrap();
    let _ = broker.publish(Some(&b), &all, b"forged by B", false);
    broker.publish(Some(&op), &all, b"{\"op\":\"state\"}", false).unwrap();
    let (m, before) = a_all.wait_for(|m| m.topic == all);
    assert_eq!(m.text(), "{\"op\":\"state\"}", "device A got the operator's fleet command");
    assert!(before.is_empty(), "device B wrote the fleet-wide command topic: {before:?}");
}

#[test]
fn a_broker_restart_on_the_same_port_loses_retained_state_and_serves_again() {
    let Some(mut broker) = Mosquitto::start(Mode::Plain) else { return };
    let port = broker.port;
    broker.publish(None, "lwsys/d/state", b"before", true).unwrap();
    let mut sub = broker.subscribe(None, "lwsys/d/state").unwrap();
    assert!(sub.wait_text("lwsys/d/state", "before").retained);

    broker.restart();
    assert_eq!(broker.port, port, "the restarted broker moved port");
    assert!(broker.running());
    // The old subscriber's connection died with the broker.
    // persistence false: the retained "before" is gone, as a device's
    // fleet link must expect after a broker crash.
    let mut fresh = broker.subscribe(None, "lwsys/d/state").unwrap();
    broker.publish(None, "lwsys/d/state", b"after", true).unwrap();
    let (m, before) = fresh.wait_for(|m| m.payload == b"after");
    assert!(before.is_empty(), "a retained message survived the restart: {before:?}");
    assert!(!m.retained, "a live publish is delivered as live");
}

// ---------------------------------------------------------------------------
// lwsysd's fleet link against the broker.

/// Stops a daemon cleanly (SIGTERM) so its state dir can be reused.
fn stop(mut d: TestDaemon) {
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit().success());
}

/// A device: its state dir provisioned with its client certificate and key
/// (durable blobs, set over the control socket by a daemon without the
/// link), then lwsysd started on it with `[fleet]` pointing at `broker`.
struct Device {
    id: String,
    d: TestDaemon,
    _dir: tempfile::TempDir,
}

/// The `[trust]` and `[fleet]` config of device `id`: the broker verified
/// through the trust store's cert dir holding the test CA.
fn fleet_config(broker: &Mosquitto, id: &str, commands: &str) -> String {
    fleet_config_trusting(broker, id, commands, &broker.ca_dir())
}

/// [`fleet_config`] with `ca_dir` as the only trusted cert dir.
fn fleet_config_trusting(broker: &Mosquitto, id: &str, commands: &str, ca_dir: &Path) -> String {
    format!(
        "[trust]\ncert_dirs = [{:?}]\n\n[fleet]\nbroker = {:?}\nprefix = {PREFIX:?}\n\
         device_id = {id:?}\ncommands = {commands:?}\n",
        ca_dir.display().to_string(),
        broker.url(),
    )
}

impl Device {
    fn start(broker: &Mosquitto, id: &str, commands: &str, args: &[&str]) -> Self {
        Self::start_as(broker, id, &broker.device(id), commands, args)
    }

    /// A device whose certificate is `who`'s (for a device posing as another).
    fn start_as(
        broker: &Mosquitto,
        id: &str,
        who: &Identity,
        commands: &str,
        args: &[&str],
    ) -> Self {
        let blobs = [("CLIENT_CERT_DER", &who.cert_der[..]), ("CLIENT_KEY_DER", &who.key_der[..])];
        Self::start_with(id, &blobs, "", &fleet_config(broker, id, commands), args)
    }

    /// A device provisioned with `blobs` (durable kinds, or made durable by
    /// `extra_config`), then started with `extra_config`, `fleet` (its
    /// `[trust]` and `[fleet]` sections) and `args`.
    fn start_with(
        id: &str,
        blobs: &[(&str, &[u8])],
        extra_config: &str,
        fleet: &str,
        args: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let p = TestDaemon::with(Options {
            state_dir: Some(state.clone()),
            config: Some(extra_config.to_owned()),
            ..Options::default()
        });
        let mut c = p.connect();
        for (kind, bytes) in blobs {
            c.ok("blob.set", json!({"kind": kind, "data_b64": B64.encode(bytes)}));
        }
        drop(c);
        stop(p);
        let d = TestDaemon::with(Options {
            state_dir: Some(state),
            config: Some(format!("{extra_config}\n{fleet}")),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Options::default()
        });
        Self { id: id.to_owned(), d, _dir: dir }
    }

    fn topic(&self, t: &str) -> String {
        format!("{PREFIX}/{}/{t}", self.id)
    }
}

/// Publishes `req` as the operator on the device's `cmd` topic and waits
/// for the reply with its id on `reply`.
/// Walks `dev` towards TIME_VALID with a socket notifier, `ntp-wait`, that
/// allows every step before it and defers TIME_VALID ("no time yet").
/// Returns the notifier's client: the hold lasts while it is connected.
fn hold_below_time_valid(dev: &Device) -> Client {
    let mut n = dev.d.connect();
    n.ok("notifier.register", json!({"name": "ntp-wait"}));
    let mut c = dev.d.connect();
    let id = c.send("state.steps", json!({"target": "TIME_VALID"}));
    loop {
        let ev = n.event("consent");
        let defer = ev["target"] == "TIME_VALID";
        let (verdict, reason) = if defer { ("defer", "no time yet") } else { ("allow", "") };
        n.ok(
            "consent.reply",
            json!({"ticket": ev["ticket"], "verdict": verdict, "reason": reason}),
        );
        if defer {
            break;
        }
    }
    assert_eq!(c.reply(&json!(id))["reached"], false);
    n
}

fn command(broker: &Mosquitto, watch: &mut Subscriber, dev: &Device, req: Value) -> Value {
    let op = broker.operator();
    let id = req["id"].clone();
    broker.publish(Some(&op), &dev.topic("cmd"), req.to_string().as_bytes(), false).unwrap();
    watch.wait_json(&dev.topic("reply"), |r| r["id"] == id)
}

#[test]
fn devices_boot_and_appear_online_and_operational() {
    let Some(broker) = Mosquitto::tls(PREFIX) else { return };
    let mut watch = broker.subscribe(Some(&broker.operator()), "lwsys/+/#").unwrap();
    let devs: Vec<Device> =
        ["dev-1", "dev-2"].iter().map(|id| Device::start(&broker, id, "none", &[])).collect();
    for dev in &devs {
        watch.wait_text(&dev.topic("status"), "online");
        let s = watch.wait_json(&dev.topic("state"), |v| v["state"] == "OPERATIONAL");
        assert_eq!(s["pending"], Value::Null, "{s}");
        assert!(s["since_us"].as_u64().is_some_and(|t| t > 0), "{s}");
    }
    // Retained: an observer that comes later sees both at once.
    let mut late = broker.subscribe(Some(&broker.operator()), "lwsys/+/state").unwrap();
    for dev in &devs {
        let (m, _) = late.wait_for(|m| m.topic == dev.topic("state"));
        assert!(m.retained, "{}'s state is retained: {m:?}", dev.id);
        assert_eq!(m.json().unwrap()["state"], "OPERATIONAL");
    }
}

#[test]
fn a_device_held_by_a_notifier_shows_who_holds_it_and_why() {
    let Some(broker) = Mosquitto::tls(PREFIX) else { return };
    let mut watch = broker.subscribe(Some(&broker.operator()), "lwsys/+/#").unwrap();
    let dev = Device::start(&broker, "held-1", "none", &["--boot-target", "CONTEXT_CREATED"]);
    watch.wait_json(&dev.topic("state"), |v| v["state"] == "CONTEXT_CREATED");
    let _n = hold_below_time_valid(&dev);
    let s = watch.wait_json(&dev.topic("state"), |v| !v["pending"].is_null());
    assert_eq!(s["state"], "CPD_PRE_TIME", "{s}");
    assert_eq!(s["pending"]["by"], "ntp-wait", "{s}");
    assert_eq!(s["pending"]["reason"], "no time yet", "{s}");
    assert_eq!(s["pending"]["target"], "TIME_VALID", "{s}");
    assert!(s["pending"]["since_us"].as_u64().is_some_and(|t| t > 0), "{s}");
    // The compact explain summary says the same, with the refusal itself.
    let x = watch.wait_json(&dev.topic("explain"), |v| !v["pending"].is_null());
    assert_eq!(x["pending"], s["pending"], "{x}");
    assert_eq!(x["parked"], 1, "{x}");
    assert_eq!(x["last_refusal"]["outcome"], "deferred", "{x}");
    assert_eq!(x["last_refusal"]["by"], "ntp-wait", "{x}");
    assert_eq!(x["last_refusal"]["reason"], "no time yet", "{x}");
}

#[test]
fn killing_a_daemon_shows_it_lost() {
    let Some(broker) = Mosquitto::tls(PREFIX) else { return };
    let mut watch = broker.subscribe(Some(&broker.operator()), "lwsys/+/status").unwrap();
    let mut dev = Device::start(&broker, "doomed-1", "none", &[]);
    watch.wait_text(&dev.topic("status"), "online");
    dev.d.signal(Signal::SIGKILL);
    let _ = dev.d.wait_exit();
    // The broker sees the socket close and publishes the last will.
    let m = watch.wait_text(&dev.topic("status"), "lost");
    assert!(!m.retained, "a live will");
    let mut late = broker.subscribe(Some(&broker.operator()), &dev.topic("status")).unwrap();
    assert!(late.wait_text(&dev.topic("status"), "lost").retained, "the will is retained");
}

#[test]
fn a_broker_restart_is_survived_and_the_state_republished() {
    let Some(mut broker) = Mosquitto::tls(PREFIX) else { return };
    let op = broker.operator();
    let mut watch = broker.subscribe(Some(&op), "lwsys/+/#").unwrap();
    let dev = Device::start(&broker, "survivor-1", "readonly", &[]);
    watch.wait_json(&dev.topic("state"), |v| v["state"] == "OPERATIONAL");
    drop(watch);
    broker.restart();
    // persistence false: the broker forgot everything; what comes is the
    // device's republication after its reconnect.
    let mut watch = broker.subscribe(Some(&op), "lwsys/+/#").unwrap();
    watch.wait_text(&dev.topic("status"), "online");
    watch.wait_json(&dev.topic("state"), |v| v["state"] == "OPERATIONAL");
    // And it takes commands again.
    let r = command(&broker, &mut watch, &dev, json!({"id": 1, "op": "state.get"}));
    assert_eq!(r["ok"], true, "{r}");
    // The daemon itself never noticed beyond its link.
    assert_eq!(dev.d.connect().ok("state.get", Value::Null)["state"], "OPERATIONAL");
}

#[test]
fn a_command_from_the_broker_runs_and_is_answered_on_reply() {
    let Some(broker) = Mosquitto::tls(PREFIX) else { return };
    let mut watch = broker.subscribe(Some(&broker.operator()), "lwsys/+/#").unwrap();
    let dev = Device::start(&broker, "cmd-1", "readonly", &[]);
    watch.wait_json(&dev.topic("state"), |v| v["state"] == "OPERATIONAL");
    let r = command(&broker, &mut watch, &dev, json!({"id": 41, "op": "state.get"}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["state"], "OPERATIONAL", "{r}");
    // A string id comes back as sent.
    let r = command(&broker, &mut watch, &dev, json!({"id": "q-7", "op": "state.get"}));
    assert_eq!(r["ok"], true, "{r}");

    // The fleet-wide topic: every device answers on its own `reply`.
    let dev2 = Device::start(&broker, "cmd-2", "readonly", &[]);
    watch.wait_text(&dev2.topic("status"), "online");
    let all = lwsys_messages::fleet::fleet_cmd_topic(PREFIX);
    let req = json!({"id": "everyone", "op": "state.get"}).to_string();
    broker.publish(Some(&broker.operator()), &all, req.as_bytes(), false).unwrap();
    for d in [&dev, &dev2] {
        let r = watch.wait_json(&d.topic("reply"), |r| r["id"] == "everyone");
        assert_eq!(r["state"], "OPERATIONAL", "{}: {r}", d.id);
    }
}

#[test]
fn an_admin_op_from_the_broker_is_forbidden_unless_granted() {
    let Some(broker) = Mosquitto::tls(PREFIX) else { return };
    let mut watch = broker.subscribe(Some(&broker.operator()), "lwsys/+/#").unwrap();
    let set =
        |id: u64| json!({"id": id, "op": "blob.set", "kind": "DEVICE_TYPE", "data": "from-broker"});
    for (commands, allowed) in [("none", false), ("readonly", false), ("admin", true)] {
        let dev = Device::start(&broker, &format!("admin-{commands}"), commands, &[]);
        watch.wait_json(&dev.topic("state"), |v| v["state"] == "OPERATIONAL");
        // A read runs unless commands are "none".
        let r = command(&broker, &mut watch, &dev, json!({"id": 0, "op": "state.get"}));
        if commands == "none" {
            assert_eq!(r["error"]["code"], "forbidden", "commands = none: {r}");
        } else {
            assert_eq!(r["state"], "OPERATIONAL", "commands = {commands}: {r}");
        }
        let r = command(&broker, &mut watch, &dev, set(1));
        let got = dev.d.connect().ok("blob.get", json!({"kind": "DEVICE_TYPE"}));
        if allowed {
            assert_eq!(r["ok"], true, "commands = {commands}: {r}");
            assert_eq!(got["data"], "from-broker");
        } else {
            assert_eq!(r["ok"], false, "commands = {commands}: {r}");
            assert_eq!(r["error"]["code"], "forbidden", "commands = {commands}: {r}");
            assert_ne!(got["data"], "from-broker", "a refused command changed nothing");
        }
    }
}

#[test]
fn a_device_posing_as_another_cannot_publish_its_topics() {
    let Some(mut broker) = Mosquitto::tls(PREFIX) else { return };
    let op = broker.operator();
    let mut watch = broker.subscribe(Some(&op), "lwsys/+/#").unwrap();
    let victim = Device::start(&broker, "victim-1", "none", &[]);
    let (m, _) = watch.wait_for(|m| {
        m.topic == victim.topic("state") && m.json().is_some_and(|v| v["state"] == "OPERATIONAL")
    });
    // The victim goes away cleanly first, so the poser (the same client
    // id: the device id) does not just take its session over. Its last
    // word is the state it stopped in, then `lost`.
    stop(victim.d);
    let (_, before) = watch.wait_for(|m| m.topic == "lwsys/victim-1/status" && m.text() == "lost");
    let victims_state = before.into_iter().rfind(|b| b.topic == m.topic).unwrap_or(m).payload;
    watch.take_backlog();

    // A daemon configured as victim-1 but holding attacker-1's certificate:
    // the broker knows it as attacker-1 and refuses every publish under
    // victim-1 (its `online`, published after the rest, last).
    let attacker_cert = broker.device("attacker-1");
    let _poser = Device::start_as(&broker, "victim-1", &attacker_cert, "admin", &[]);
    broker.wait_log(&["Denied PUBLISH", "'lwsys/victim-1/state'"]);
    broker.wait_log(&["Denied PUBLISH", "'lwsys/victim-1/status'"]);

    // What the fleet sees of victim-1 is still the victim's own: its last
    // state and `lost`, each exactly once in the retained store.
    let mut late = broker.subscribe(Some(&op), "lwsys/victim-1/#").unwrap();
    broker.publish(Some(&op), "lwsys/victim-1/cmd", b"marker", false).unwrap();
    let (_, before) = late.wait_for(|m| m.payload == b"marker");
    let state: Vec<_> = before.iter().filter(|m| m.topic.ends_with("/state")).collect();
    assert_eq!(state.len(), 1, "{before:?}");
    assert_eq!(state[0].payload, victims_state, "victim-1's state is the victim's");
    let status: Vec<_> = before.iter().filter(|m| m.topic.ends_with("/status")).collect();
    assert_eq!(status.len(), 1, "{before:?}");
    assert_eq!(status[0].text(), "lost");
    // Nothing the poser sent reached the operator live either.
    let forged: Vec<_> = watch_drain(&mut watch, &broker, &op);
    assert!(forged.is_empty(), "the operator saw the poser's publishes: {forged:?}");
}

/// Everything `watch` has not yet taken up to a marker the operator sends
/// now (on the victim's `cmd`, which `lwsys/+/#` also reads).
fn watch_drain(watch: &mut Subscriber, broker: &Mosquitto, op: &Identity) -> Vec<Message> {
    broker.publish(Some(op), "lwsys/victim-1/cmd", b"drain", false).unwrap();
    let (_, before) = watch.wait_for(|m| m.payload == b"drain");
    before.into_iter().filter(|m| m.topic != "lwsys/victim-1/cmd").collect()
}

#[test]
fn a_device_logs_in_with_its_mqtt_username_and_password_and_never_shows_them() {
    const PASSWORD: &str = "s3cret-Pw-4711";
    const WRONG: &str = "wr0ng-Pw-0815";
    if !lwsys_tests::mosquitto::installed() {
        return;
    }
    let users = vec![
        ("pw-dev-1".to_owned(), PASSWORD.to_owned()),
        (OPERATOR.to_owned(), "operator-pw".to_owned()),
    ];
    let mut broker =
        Mosquitto::start(Mode::TlsPassword { prefix: PREFIX.to_owned(), users }).unwrap();
    let op = Login::Password(OPERATOR, "operator-pw");
    let mut watch = broker.subscribe(op, "lwsys/+/#").unwrap();
    // The credentials are not durable by default: these devices keep them.
    let durable = "[blobs]\ndurable = [\"MQTT_USERNAME\", \"MQTT_PASSWORD\"]\n";
    let mut dev = Device::start_with(
        "pw-dev-1",
        &[("MQTT_USERNAME", b"pw-dev-1"), ("MQTT_PASSWORD", PASSWORD.as_bytes())],
        durable,
        &fleet_config(&broker, "pw-dev-1", "none"),
        &["--log-level", "debug"],
    );
    watch.wait_text(&dev.topic("status"), "online");
    let (_, before) = watch.wait_for(|m| m.topic == dev.topic("state"));
    assert!(before.iter().all(|m| m.topic.starts_with("lwsys/pw-dev-1/")), "{before:?}");

    // A wrong password: the broker refuses the device, which shows nowhere.
    let mut bad = Device::start_with(
        "pw-dev-2",
        &[("MQTT_USERNAME", b"pw-dev-1"), ("MQTT_PASSWORD", WRONG.as_bytes())],
        durable,
        &fleet_config(&broker, "pw-dev-2", "none"),
        &["--log-level", "debug"],
    );
    broker.wait_log(&["disconnected, not authorised"]);
    // Its first failed attempt is logged by the daemon too.
    bad.d.wait_log("fleet broker unreachable");

    // Neither secret reaches a log line or a topic.
    let published = watch_drain_all(&mut watch, &broker, op);
    for (name, logs) in [("pw-dev-1", dev.d.logs()), ("pw-dev-2", bad.d.logs())] {
        for secret in [PASSWORD, WRONG] {
            assert!(!logs.contains(secret), "{name}'s log shows a password:\n{logs}");
        }
    }
    for m in &published {
        let text = m.text();
        assert!(!text.contains(PASSWORD) && !text.contains(WRONG), "a topic shows it: {m:?}");
    }
    assert!(
        published.iter().all(|m| !m.topic.contains("pw-dev-2")),
        "the refused device published: {published:?}"
    );
}

/// Everything `watch` has received and not yet taken, up to a marker the
/// operator sends now on a `cmd` topic (which `lwsys/+/#` also reads).
fn watch_drain_all(watch: &mut Subscriber, broker: &Mosquitto, op: Login<'_>) -> Vec<Message> {
    broker.publish(op, "lwsys/marker/cmd", b"drain", false).unwrap();
    let (_, before) = watch.wait_for(|m| m.payload == b"drain");
    watch.take_backlog();
    before
}

#[test]
fn a_device_refuses_a_broker_its_trust_store_does_not_vouch_for() {
    let Some(mut broker) = Mosquitto::tls(PREFIX) else { return };
    let mut watch = broker.subscribe(Some(&broker.operator()), "lwsys/+/#").unwrap();
    // The device trusts only another CA; its own certificate is fine.
    let other = tempfile::tempdir().unwrap();
    let rogue_ca = TestCa::new(&other.path().join("pki"), "not the broker's CA");
    let rogue_dir = other.path().join("certs");
    std::fs::create_dir_all(&rogue_dir).unwrap();
    std::fs::copy(&rogue_ca.ca_pem, rogue_dir.join("rogue.pem")).unwrap();
    let who = broker.device("wary-1");
    let blobs = [("CLIENT_CERT_DER", &who.cert_der[..]), ("CLIENT_KEY_DER", &who.key_der[..])];
    let fleet = fleet_config_trusting(&broker, "wary-1", "none", &rogue_dir);
    let mut dev = Device::start_with("wary-1", &blobs, "", &fleet, &[]);
    // The device drops the handshake itself (the broker sees its alert)...
    broker.wait_log(&["alert unknown ca"]);
    let line = dev.d.wait_log("fleet broker unreachable");
    assert!(line.contains("UnknownIssuer"), "the reason names the certificate's issuer: {line}");
    // ...and so never publishes: the operator sees nothing of it.
    let seen = watch_drain_all(&mut watch, &broker, Login::Cert(&broker.operator()));
    assert!(seen.iter().all(|m| m.topic == "lwsys/marker/cmd"), "{seen:?}");
    // The device itself is unaffected: it boots as without a fleet.
    dev.d.connect().wait_state("OPERATIONAL");
}

/// `lwsysctl fleet` as the operator (its certificate) against `broker`.
fn fleet_ctl(broker: &Mosquitto, args: &[&str]) -> std::process::Output {
    let op = broker.operator();
    std::process::Command::new(lwsys_tests::bin_path("lwsysctl"))
        .args(["fleet", "--broker", &broker.url(), "--prefix", PREFIX])
        .arg("--ca")
        .arg(&broker.ca().ca_pem)
        .arg("--cert")
        .arg(&op.cert_pem)
        .arg("--key")
        .arg(&op.key_pem)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_operator_sees_the_fleet_in_lwsysctl_fleet_status_and_explain_and_commands_it() {
    let Some(broker) = Mosquitto::tls(PREFIX) else { return };
    let mut watch = broker.subscribe(Some(&broker.operator()), "lwsys/+/#").unwrap();
    let ok = Device::start(&broker, "fl-ok", "readonly", &[]);
    let held = Device::start(&broker, "fl-held", "none", &["--boot-target", "CONTEXT_CREATED"]);
    let mut dead = Device::start(&broker, "fl-dead", "none", &[]);
    watch.wait_json(&ok.topic("state"), |v| v["state"] == "OPERATIONAL");
    watch.wait_json(&dead.topic("state"), |v| v["state"] == "OPERATIONAL");
    watch.wait_json(&held.topic("state"), |v| v["state"] == "CONTEXT_CREATED");
    // fl-held: a notifier holds TIME_VALID.
    let _n = hold_below_time_valid(&held);
    watch.wait_json(&held.topic("state"), |v| v["pending"]["by"] == "ntp-wait");
    // fl-dead: killed.
    dead.d.signal(Signal::SIGKILL);
    let _ = dead.d.wait_exit();
    watch.wait_text(&dead.topic("status"), "lost");

    let o = fleet_ctl(&broker, &["--json", "status"]);
    assert!(o.status.success(), "{o:?}");
    let rows: Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = |id: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["device"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing from fleet status: {rows}"))
    };
    assert_eq!(rows.as_array().unwrap().len(), 3, "3 devices: {rows}");
    assert_eq!(
        (row("fl-ok")["state"].clone(), row("fl-ok")["status"].clone()),
        (json!("OPERATIONAL"), json!("online"))
    );
    let h = row("fl-held");
    assert_eq!(
        (h["state"].as_str(), h["pending"]["by"].as_str()),
        (Some("CPD_PRE_TIME"), Some("ntp-wait")),
        "{h}"
    );
    assert_eq!(h["pending"]["reason"], "no time yet", "{h}");
    assert_eq!(row("fl-dead")["status"], "lost");

    let o = fleet_ctl(&broker, &["--json", "explain"]);
    assert!(o.status.success(), "{o:?}");
    let x: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((x["total"].as_u64(), x["not_operational"].as_u64()), (Some(3), Some(2)), "{x}");
    let groups = x["groups"].as_array().unwrap();
    assert!(
        groups.iter().any(|g| g["by"] == "ntp-wait"
            && g["count"] == 1
            && g["devices"] == json!(["fl-held"])),
        "{x}"
    );
    assert!(groups.iter().any(|g| g["lost"] == true && g["devices"] == json!(["fl-dead"])), "{x}");

    // A command through lwsysctl runs on the real device and comes back.
    let o =
        fleet_ctl(&broker, &["--json", "send", "fl-ok", r#"{"op":"state.get","id":"via-ctl"}"#]);
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["reply"]["state"], "OPERATIONAL", "{v}");
    assert_eq!(v[0]["reply"]["id"], "via-ctl", "{v}");
    // fl-held takes no commands (commands = "none"): forbidden, exit 1.
    let o = fleet_ctl(&broker, &["--json", "send", "fl-held", r#"{"op":"state.get"}"#]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["reply"]["error"]["code"], "forbidden", "{v}");
}
