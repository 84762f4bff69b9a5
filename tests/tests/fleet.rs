//! The fleet over a real mosquitto (issue 16): the broker harness itself
//! (TLS with client certificates required, the per-device ACL, a restart
//! on the same port), then lwsysd's fleet link against it.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use lwsys_tests::mosquitto::{Mode, OPERATOR};
use lwsys_tests::{Mosquitto, TestCa};

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
