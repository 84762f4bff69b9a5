//! `lwsysctl plot` as a person would see it: a scripted boot on the real
//! daemon (three socket notifiers, one deferring TIME_VALID with a reason
//! and resuming), then the SVG parsed with an XML parser and searched for
//! every state, every notifier, the reason and the highlight.
#![allow(clippy::unwrap_used)] // a test that cannot read its input should fail loudly

use std::collections::BTreeSet;
use std::process::Command;

use lwsys_messages::state::{SystemState, ALL_STATES};
use lwsys_tests::{bin_path, Client, TestDaemon};
use serde_json::json;

const NOTIFIERS: [&str; 3] = ["network", "timesync", "cloud"];
const REASON: &str = "waiting for NTP";

fn plot(d: &TestDaemon) -> String {
    let o = Command::new(bin_path("lwsysctl"))
        .arg("--socket")
        .arg(d.socket())
        .arg("plot")
        .env_remove("LWSYS_SOCKET")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "plot failed: {err}");
    String::from_utf8(o.stdout).unwrap()
}

/// The text content of every `<text>` (tspans included), and of those
/// whose class includes `class`.
fn texts(doc: &roxmltree::Document, class: Option<&str>) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text") || n.has_tag_name("tspan"))
        .filter(|n| {
            class.is_none_or(|c| n.attribute("class").unwrap_or("").split(' ').any(|x| x == c))
        })
        .map(|n| n.descendants().filter(|t| t.is_text()).filter_map(|t| t.text()).collect())
        .collect()
}

/// One consent round: each notifier in registration order answers
/// `verdict(name, target)`; stops at the first that does not allow, as
/// the daemon does. Returns the round's target.
fn answer_round(ns: &mut [Client], verdict: impl Fn(&str, &str) -> &'static str) -> String {
    let mut target = String::new();
    for (n, name) in ns.iter_mut().zip(NOTIFIERS) {
        let ev = n.event("consent");
        target = ev["target"].as_str().unwrap().to_owned();
        let v = verdict(name, &target);
        n.ok("consent.reply", json!({"ticket": ev["ticket"], "verdict": v, "reason": REASON}));
        if v != "allow" {
            break;
        }
    }
    target
}

#[test]
fn the_plot_of_a_scripted_boot_shows_every_state_notifier_and_the_deferral() {
    let d =
        TestDaemon::start(&["--boot-target", "CONTEXT_CREATED", "--consent-timeout-ms", "20000"]);
    let mut ns: Vec<Client> = NOTIFIERS
        .iter()
        .map(|name| {
            let mut c = d.connect();
            c.ok("notifier.register", json!({"name": name}));
            c
        })
        .collect();
    let mut c = d.connect();
    let id = c.send("state.steps", json!({"target": "OPERATIONAL"}));
    // Everyone allows until timesync defers TIME_VALID.
    let defer_tv =
        |n: &str, t: &str| if n == "timesync" && t == "TIME_VALID" { "defer" } else { "allow" };
    while answer_round(&mut ns, defer_tv) != "TIME_VALID" {}
    let r = c.reply(&json!(id));
    assert_eq!(r["pending"]["by"], "timesync", "{r}");

    // Keep the walk held for a time the daemon measures (a wait that
    // times out), so timesync's deferral outlasts anyone's consent time.
    c.err("state.wait", json!({"state": "TIME_VALID", "timeout_ms": 300}), "timeout");
    let mid = plot(&d);
    let mid = roxmltree::Document::parse(&mid).unwrap();
    let t = texts(&mid, None);
    assert!(t.iter().any(|x| x == "held"), "TIME_VALID shown as held: {t:?}");
    assert!(t.iter().any(|x| x == &format!("deferred: {REASON}")), "{t:?}");

    ns[1].ok("notifier.resume", json!({"name": "timesync"}));
    while answer_round(&mut ns, |_, _| "allow") != "OPERATIONAL" {}
    c.wait_state("OPERATIONAL");

    let svg = plot(&d);
    let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    let root = doc.root_element();
    assert!(root.has_tag_name(("http://www.w3.org/2000/svg", "svg")), "{svg}");
    let num = |a: &str| root.attribute(a).unwrap().parse::<f64>().unwrap();
    let (w, h) = (num("width"), num("height"));
    assert!(w > 0.0 && h > 0.0);
    assert_eq!(root.attribute("viewBox"), Some(format!("0 0 {w} {h}").as_str()));

    let t = texts(&doc, None);
    let shown: BTreeSet<&str> = t.iter().map(String::as_str).collect();
    // Every state of the walk, CONTEXT_CREATED to OPERATIONAL, each as the
    // journal says it was reached.
    let why = c.ok("state.explain", json!({}));
    let mut reached: Vec<String> = vec![why["journal"][0]["current"].as_str().unwrap().to_owned()];
    for e in why["journal"].as_array().unwrap() {
        if e["outcome"] == "committed" {
            reached.push(e["target"].as_str().unwrap().to_owned());
        }
    }
    let walk: Vec<&str> = ALL_STATES
        .iter()
        .take_while(|s| **s <= SystemState::Operational)
        .map(|s| s.name())
        .collect();
    assert_eq!(reached, walk);
    for s in &walk {
        assert!(shown.contains(s), "state {s} missing from {shown:?}");
    }
    // Each state's row says when it was entered, relative to the first
    // round, in ms.
    assert!(
        t.iter().filter(|x| x.starts_with('+') && x.ends_with(" ms")).count() >= walk.len() - 1
    );
    for n in NOTIFIERS.iter().chain(&["clock"]) {
        assert!(shown.contains(n), "notifier {n} missing from {shown:?}");
    }
    assert!(shown.contains(format!("deferred: {REASON}").as_str()), "{shown:?}");
    let longest: BTreeSet<String> = texts(&doc, Some("longest")).into_iter().collect();
    assert_eq!(longest, BTreeSet::from(["timesync".to_owned()]), "{svg}");
    // The deferral's tooltip says how long it held the walk.
    let titles: Vec<&str> =
        doc.descendants().filter(|n| n.has_tag_name("title")).filter_map(|n| n.text()).collect();
    assert!(
        titles.iter().any(|x| x.starts_with("timesync deferred for ") && x.ends_with(REASON)),
        "{titles:?}"
    );
}
