//! Issue 18 through the real `lwsysd` and a real HTTP repository on
//! 127.0.0.1: the health-gated commit of a trial boot (a failing command
//! or a notifier failing the health round rolls it back with a durable
//! reason, a healthy one is confirmed only after its stable time), and the update policy under `clock.set` (the
//! daemon's soft clock, so no real waiting): maintenance windows, the
//! deferral budget, and a security release's deadline overriding a
//! notifier that keeps deferring.
#![allow(clippy::unwrap_used)]

#[path = "common/ota_repo.rs"]
mod ota_repo;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use lwsys_tests::{bin_path, Client, TestDaemon, WAIT};
use ota_repo::Repo;
use serde_json::{json, Value};

/// 2030-01-01 12:00:00 UTC.
const NOON: u64 = 1_893_499_200;
/// 2030-01-02 02:00:00 UTC, when a 02:00-04:00 window next opens.
const NEXT_2AM: u64 = NOON + 14 * 3600;

/// Runs `ota.check` on a fresh daemon until release 1000 is installed and
/// the daemon went down for the reboot; returns the stopped daemon.
fn install(repo: &Repo) -> TestDaemon {
    let mut d = repo.daemon("auto", None);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    let r = c.ok("ota.check", json!({}));
    assert_eq!((r["updated"].clone(), r["reboot"].clone()), (json!(true), json!(true)), "{r}");
    assert!(d.wait_exit().success());
    d
}

fn ctl(d: &TestDaemon, args: &[&str]) -> String {
    let o = Command::new(bin_path("lwsysctl"))
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .env_remove("LWSYS_SOCKET")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn a_trial_whose_health_check_fails_is_rolled_back_with_its_reason_and_not_retried() {
    let repo = Repo::new(1000);
    let first = install(&repo);
    let state = first.state_dir().to_owned();
    let mut d = repo.daemon_with(
        "confirm_after_secs = 1\nhealth_commands = [\"/bin/true\", \"/bin/false --always\"]",
        Some(state.clone()),
        vec![],
    );
    // Stable for a second, then the checks run; the second fails: rolled
    // back and rebooted (the reboot op exits the daemon).
    d.wait_log("trial boot rolled back");
    assert!(d.wait_exit().success());
    let d = repo.daemon("auto", Some(state));
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    let s = c.ok("ota.status", json!({}));
    assert_eq!(s["selected"], "a", "{s}");
    assert_eq!(s["slots"][1]["status"], "bad", "{s}");
    let rb = &s["last_rollback"];
    assert_eq!(rb["cause"], "health_check", "{s}");
    assert_eq!(rb["check"], "/bin/false --always", "{s}");
    assert_eq!(rb["release_unixtime"], 1000, "{s}");
    assert!(rb["at_unix"].as_u64().unwrap() > 1_600_000_000, "{s}");
    assert!(s["last_rollback_reason"].as_str().unwrap().contains("/bin/false"), "{s}");
    let text = ctl(&d, &["ota", "status"]);
    assert!(text.contains("last rollback: cause health_check, release 1000"), "{text}");
    assert!(text.contains("check /bin/false --always"), "{text}");
    // The rolled-back release is not retried.
    let r = c.ok("ota.check", json!({}));
    assert_eq!(r["updated"], false, "{r}");
    assert!(r["reason"].as_str().unwrap().contains("rolled back"), "{r}");
}

#[test]
fn a_healthy_trial_is_confirmed_only_once_stable_and_its_check_passed() {
    let repo = Repo::new(1000);
    let first = install(&repo);
    // The check waits for a file the test makes: until then the trial
    // stays unconfirmed, however long the test takes.
    let (gate, command) = gated_check(&repo);
    let extra = format!("confirm_after_secs = 1\nhealth_commands = [\"{command}\"]");
    let mut d = repo.daemon_with(&extra, Some(first.state_dir().to_owned()), vec![]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    d.wait_log("trial boot: confirming once healthy");
    let s = c.ok("ota.status", json!({}));
    assert_eq!(
        (s["selected"].clone(), s["slots"][1]["status"].clone()),
        (json!("b"), json!("trial"))
    );
    assert_eq!(s["confirmed_unixtime"], 0, "not at OPERATIONAL: {s}");
    // A check meanwhile installs nothing and leaves OPERATIONAL alone.
    let r = c.ok("ota.check", json!({}));
    assert_eq!(r["updated"], false, "{r}");
    assert!(r["reason"].as_str().unwrap().contains("unconfirmed trial"), "{r}");
    c.ok("subscribe", json!({"events": ["ota"]}));
    std::fs::write(&gate, b"").unwrap();
    let e = loop {
        let e = c.event("ota");
        if e.get("trial").is_some() {
            break e;
        }
    };
    assert_eq!(e["trial"], "confirmed", "{e}");
    let s = c.ok("ota.status", json!({}));
    assert_eq!(
        (s["slots"][1]["status"].clone(), s["confirmed_unixtime"].clone()),
        (json!("good"), json!(1000))
    );
    assert!(s.get("last_rollback").is_none(), "{s}");
}

/// A health command that waits until the file `gate` exists.
fn gated_check(repo: &Repo) -> (std::path::PathBuf, String) {
    let gate = repo.dir.path().join("healthy");
    let script = repo.dir.path().join("check.sh");
    std::fs::write(&script, "#!/bin/sh\nwhile [ ! -e \"$1\" ]; do sleep 0.05; done\n").unwrap();
    let exec = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(&script, exec).unwrap();
    let command = format!("{} {}", script.display(), gate.display());
    (gate, command)
}

#[test]
fn a_notifier_failing_the_health_round_rolls_the_trial_back_naming_it() {
    let repo = Repo::new(1000);
    let first = install(&repo);
    let state = first.state_dir().to_owned();
    let (gate, command) = gated_check(&repo);
    let extra = format!("confirm_after_secs = 1\nhealth_commands = [\"{command}\"]");
    let mut d = repo.daemon_with(&extra, Some(state.clone()), vec![]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    // A notifier that finds the system unhealthy; registered while the
    // command still holds the gate, so the health round asks it.
    let mut n = d.connect();
    n.ok("notifier.register", json!({"name": "db-watch"}));
    std::fs::write(&gate, b"").unwrap();
    let e = n.event("consent");
    assert_eq!(
        (e["current"].clone(), e["target"].clone(), e["check"].clone()),
        (json!("OPERATIONAL"), json!("OPERATIONAL"), json!("health")),
        "{e}"
    );
    n.send(
        "consent.reply",
        json!({"ticket": e["ticket"], "verdict": "deny", "reason": "database corrupt"}),
    );
    d.wait_log("trial boot rolled back");
    assert!(d.wait_exit().success());
    let d = repo.daemon("auto", Some(state));
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    let s = c.ok("ota.status", json!({}));
    assert_eq!(s["selected"], "a", "{s}");
    let rb = &s["last_rollback"];
    assert_eq!(
        (rb["cause"].clone(), rb["check"].clone()),
        (json!("health_check"), json!("db-watch")),
        "{s}"
    );
    assert!(rb["message"].as_str().unwrap().contains("database corrupt"), "{s}");
}

fn set_clock(c: &mut Client, unix: u64) {
    c.ok("clock.set", json!({"unix_us": unix * 1_000_000}));
}

#[test]
fn outside_its_window_an_install_waits_and_the_status_says_until_when() {
    let repo = Repo::new(1000);
    let mut d = repo.daemon_with("\n[ota.policy]\nwindows = [\"02:00-04:00\"]", None, vec![]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    set_clock(&mut c, NOON);
    c.ok("subscribe", json!({"events": ["ota"]}));
    let r = c.ok("ota.check", json!({}));
    assert_eq!(r["updated"], false, "{r}");
    assert!(r["reason"].as_str().unwrap().contains("maintenance window"), "{r}");
    let s = c.ok("ota.status", json!({}));
    assert_eq!(s["waiting"], json!({"for": "window", "until_unix": NEXT_2AM, "release": 1000}));
    assert_eq!(s["slots"][1]["status"], "empty", "nothing written: {s}");
    let e = loop {
        let e = c.event("ota");
        if e.get("policy").is_some() {
            break e;
        }
    };
    assert_eq!(e["policy"], "wait_window", "{e}");
    assert_eq!(e["waiting"]["until_unix"], NEXT_2AM, "{e}");
    let text = ctl(&d, &["ota", "status"]);
    assert!(
        text.contains(&format!("release 1000 waiting for window until unix {NEXT_2AM}")),
        "{text}"
    );
    // Half an hour into the window it installs.
    set_clock(&mut c, NEXT_2AM + 1800);
    let r = c.ok("ota.check", json!({}));
    assert_eq!(r["updated"], true, "{r}");
    assert!(d.wait_exit().success());
}

/// A notifier connection that defers MODAL_UPDATING and allows the rest;
/// each MODAL_UPDATING consent it is asked is sent on `asked`.
fn deferring_app(
    d: &TestDaemon,
    asked: mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let mut n = d.connect();
    n.ok("notifier.register", json!({"name": "kiosk"}));
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Some(e) = n.read(Duration::from_millis(100)) else { continue };
            if e["event"] != "consent" {
                continue;
            }
            let modal = e["target"] == "MODAL_UPDATING";
            let verdict = if modal { "defer" } else { "allow" };
            if modal {
                let _ = asked.send(());
            }
            n.send(
                "consent.reply",
                json!({"ticket": e["ticket"], "verdict": verdict, "reason": "customer at the till"}),
            );
        }
    })
}

/// The journal's rounds into MODAL_UPDATING, as (outcome, kiosk's verdict).
fn modal_rounds(c: &mut Client) -> Vec<(String, String)> {
    let x = c.ok("state.explain", json!({}));
    x["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["target"] == "MODAL_UPDATING")
        .map(|r| {
            let v = r["verdicts"].as_array().unwrap().iter().find(|v| v["name"] == "kiosk");
            let verdict = v.map_or(String::new(), |v| v["verdict"].as_str().unwrap().to_owned());
            (r["outcome"].as_str().unwrap().to_owned(), verdict)
        })
        .collect()
}

#[test]
fn once_the_deferral_budget_is_spent_the_install_goes_past_a_deferring_notifier() {
    let repo = Repo::new(1000);
    let mut d = repo.daemon_with("\n[ota.policy]\nmax_deferrals = 2", None, vec![]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    let (tx, asked) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let app = deferring_app(&d, tx, stop.clone());
    let r = c.ok("ota.check", json!({}));
    assert_eq!(r["updated"], true, "{r}");
    // Two deferrals (the budget), then a round past them: the kiosk is
    // still asked, and its defer is overridden.
    let rounds = modal_rounds(&mut c);
    assert_eq!(
        rounds,
        [("deferred", "defer"), ("deferred", "defer"), ("forced", "defer")]
            .map(|(a, b)| (a.to_owned(), b.to_owned())),
        "{rounds:?}"
    );
    assert_eq!(asked.try_iter().count(), 3);
    assert!(d.wait_exit().success());
    stop.store(true, Ordering::SeqCst);
    app.join().unwrap();
    let policy: Value =
        serde_json::from_slice(&std::fs::read(d.state_dir().join("ota/policy.json")).unwrap())
            .unwrap();
    assert_eq!((policy["release"].clone(), policy["deferrals"].clone()), (json!(1000), json!(2)));
}

#[test]
fn a_budget_in_seconds_runs_out_on_the_injected_clock_and_the_install_goes_past_the_defer() {
    let repo = Repo::new(1000);
    let mut d = repo.daemon_with("\n[ota.policy]\nmax_defer_secs = 3600", None, vec![]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    set_clock(&mut c, NOON);
    let (tx, asked) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let app = deferring_app(&d, tx, stop.clone());
    let id = c.send("ota.check", json!({}));
    asked.recv_timeout(WAIT).unwrap();
    asked.recv_timeout(WAIT).unwrap();
    let mut other = d.connect();
    let s = other.ok("ota.status", json!({}));
    assert_eq!(s["waiting"], json!({"for": "consent", "until_unix": NOON + 3600, "release": 1000}));
    // An hour later on lwsys's clock, with no real waiting: past the defer.
    set_clock(&mut other, NOON + 3600);
    let r = c.reply(&json!(id));
    assert_eq!((r["ok"].clone(), r["updated"].clone()), (json!(true), json!(true)), "{r}");
    let rounds = modal_rounds(&mut other);
    assert_eq!(rounds.last().unwrap(), &("forced".to_owned(), "defer".to_owned()), "{rounds:?}");
    assert!(d.wait_exit().success());
    stop.store(true, Ordering::SeqCst);
    app.join().unwrap();
}

#[test]
fn a_security_release_installs_at_its_deadline_past_a_notifier_that_keeps_deferring() {
    let repo = Repo::new(1000);
    repo.resign(1000, |m| m.urgency = Some(lwsys_manifest::Urgency::Security));
    let mut d = repo.daemon_with("\n[ota.policy]\nsecurity_deadline_secs = 3600", None, vec![]);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    set_clock(&mut c, NOON);
    let (tx, asked) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let app = deferring_app(&d, tx, stop.clone());
    let id = c.send("ota.check", json!({}));
    // Deferred before the deadline: it waits, and says until when (asked
    // a second time: the first refusal has been counted by then).
    asked.recv_timeout(WAIT).unwrap();
    asked.recv_timeout(WAIT).unwrap();
    let mut other = d.connect();
    let s = other.ok("ota.status", json!({}));
    assert_eq!(s["phase"], "awaiting_consent", "{s}");
    assert_eq!(s["waiting"], json!({"for": "consent", "until_unix": NOON + 3600, "release": 1000}));
    // The deadline passes: the next attempt is forced; the kiosk is told.
    set_clock(&mut other, NOON + 3601);
    let r = c.reply(&json!(id));
    assert_eq!((r["ok"].clone(), r["updated"].clone()), (json!(true), json!(true)), "{r}");
    let rounds = modal_rounds(&mut other);
    assert_eq!(rounds.last().unwrap(), &("forced".to_owned(), "defer".to_owned()), "{rounds:?}");
    assert!(rounds.iter().filter(|r| r.0 == "deferred").count() >= 1, "{rounds:?}");
    assert!(d.wait_exit().success());
    stop.store(true, Ordering::SeqCst);
    app.join().unwrap();
}

#[test]
fn an_upstream_style_repository_and_config_install_as_before() {
    // No new manifest fields, no [ota.policy]: found, installed, rebooted.
    let repo = Repo::new(1000);
    let d = install(&repo);
    assert!(!d.state_dir().join("ota/policy.json.tmp").exists());
}
