//! Issue 18's freshness and key rotation through the real `lwsysd` and a
//! real HTTP server on 127.0.0.1: a replayed older manifest, an expired
//! one once the clock is valid (and before it), a frozen repository, the
//! signed anti-rollback floor, and rotating to a new issuer key then
//! retiring the old one, each surviving a restart.
#![allow(clippy::unwrap_used)]

#[path = "common/ota_repo.rs"]
mod ota_repo;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use lwsys_ctl::ota_tools as ctl_ota;
use lwsys_manifest::publish::PublishOptions;
use lwsys_tests::{Options, TestDaemon};
use ota_repo::{Repo, VARIANT};
use serde_json::{json, Value};

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Publishes the repo's image as the release at `unixtime`, signed by the
/// private JWK `key` with `opts`; returns the manifest's bytes.
fn publish(repo: &Repo, key: &Path, unixtime: u64, opts: &PublishOptions) -> Vec<u8> {
    let src = repo.dir.path().join(format!("fw-{unixtime}.img"));
    std::fs::write(&src, &repo.image).unwrap();
    let out = repo.dir.path().join("repo");
    ctl_ota::publish_with(key, VARIANT, &src, &out, Some(unixtime), opts).unwrap();
    std::fs::read(manifest_path(repo)).unwrap()
}

fn manifest_path(repo: &Repo) -> PathBuf {
    repo.dir.path().join("repo").join(VARIANT).join("manifest.jws")
}

fn slots(s: &Value) -> (String, String, String) {
    let st = |i: usize| s["slots"][i]["status"].as_str().unwrap().to_owned();
    (s["selected"].as_str().unwrap().to_owned(), st(0), st(1))
}

/// `ota.check` installs release `unixtime` and the daemon goes down for
/// the reboot; returns its state dir.
fn check_installs(d: &mut TestDaemon, unixtime: u64) -> PathBuf {
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    let r = c.ok("ota.check", json!({}));
    assert_eq!(
        (r["updated"].clone(), r["unixtime"].clone()),
        (json!(true), json!(unixtime)),
        "{r}"
    );
    assert!(d.wait_exit().success());
    d.state_dir().to_owned()
}

/// A restarted daemon over `state`; with `confirm = "auto"` its trial boot
/// is confirmed by hand once OPERATIONAL, since the health gate would
/// confirm it only after `confirm_after_secs` and a check during an
/// unconfirmed trial installs nothing.
fn again(repo: &Repo, confirm: &str, state: PathBuf) -> TestDaemon {
    let d = repo.daemon(confirm, Some(state));
    if confirm == "auto" {
        let mut c = d.connect();
        c.wait_state("OPERATIONAL");
        c.ok("ota.report_current", json!({"bad": false}));
    }
    d
}

#[test]
fn replayed_older_manifest_from_a_kidless_upstream_key_is_refused_and_the_slot_untouched() {
    let repo = Repo::new(1000);
    // Upstream's keys carry no kid: the device names the key by its
    // thumbprint and the header stays {"alg":"ES512"}.
    for path in [&repo.keys.private, &repo.keys.public] {
        let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("kid");
        std::fs::write(path, v.to_string()).unwrap();
    }
    // And upstream's repository: no chunk index, upstream's fields only.
    let upstream = PublishOptions { chunk_size: None, ..PublishOptions::default() };
    let old = publish(&repo, &repo.keys.private, 1000, &upstream);
    assert!(String::from_utf8_lossy(&old).starts_with("eyJhbGciOiJFUzUxMiJ9."));
    publish(&repo, &repo.keys.private, 2000, &upstream);
    let mut d = repo.daemon("auto", None);
    let state = check_installs(&mut d, 2000);
    let d = again(&repo, "auto", state);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    // The server now replays the older, validly signed manifest.
    std::fs::write(manifest_path(&repo), &old).unwrap();
    let r = c.ok("ota.check", json!({}));
    assert_eq!(r["updated"], false, "{r}");
    assert!(r["reason"].as_str().unwrap().contains("not newer than the installed 2000"), "{r}");
    let s = c.ok("ota.status", json!({}));
    assert_eq!(slots(&s), ("b".into(), "good".into(), "good".into()), "{s}");
    assert_eq!((s["confirmed_unixtime"].clone(), s["phase"].clone()), (json!(2000), json!("idle")));
    let pk = lwsys_manifest::parse_public_jwk(&std::fs::read_to_string(&repo.keys.public).unwrap())
        .unwrap();
    assert_eq!(s["trusted_kids"], json!([lwsys_manifest::jwk::thumbprint(&pk)]), "{s}");
    assert_eq!(std::fs::read(d.state_dir().join("ota/b/image")).unwrap(), repo.image);
}

#[test]
fn expired_manifest_after_time_valid_is_refused_with_its_own_kind_and_event() {
    let repo = Repo::new(1000);
    let expires = unix_now() - 60;
    let opts = PublishOptions { expires: Some(expires), ..PublishOptions::default() };
    publish(&repo, &repo.keys.private, 2000, &opts);
    let d = repo.daemon("auto", None);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    c.ok("subscribe", json!({"events": ["ota"]}));
    let r = c.err("ota.check", json!({}), "forbidden");
    assert_eq!(r["kind"], "expired", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains(&format!("expired at {expires}")));
    let e = loop {
        let e = c.event("ota");
        if e["phase"] == "failed" {
            break e;
        }
    };
    assert_eq!(e["error_kind"], "expired", "{e}");
    let s = c.ok("ota.status", json!({}));
    assert_eq!(
        (s["phase"].clone(), s["last_error_kind"].clone()),
        (json!("failed"), json!("expired"))
    );
    assert_eq!(slots(&s), ("a".into(), "good".into(), "empty".into()), "{s}");
    assert_eq!(c.ok("state.get", json!({}))["state"], "OPERATIONAL");
    assert_eq!(s["trusted_kids"], json!([repo.keys.kid]), "{s}");
}

#[test]
fn before_time_valid_an_expiring_manifest_waits_for_the_clock_then_installs() {
    let repo = Repo::new(1000);
    let opts = PublishOptions { expires: Some(unix_now() + 3600), ..PublishOptions::default() };
    publish(&repo, &repo.keys.private, 2000, &opts);
    let config = repo.config(&repo.keys.public, "auto", "/bin/true");
    let config = format!("[supervisor]\nboot_target = \"CONTEXT_CREATED\"\n\n{config}");
    let mut d = TestDaemon::with(Options { config: Some(config), ..Options::default() });
    let mut c = d.connect();
    assert_eq!(c.ok("state.get", json!({}))["state"], "CONTEXT_CREATED");
    let r = c.err("ota.check", json!({}), "deferred");
    assert_eq!(r["kind"], "clock_not_valid", "{r}");
    let s = c.ok("ota.status", json!({}));
    assert_eq!(slots(&s), ("a".into(), "good".into(), "empty".into()), "{s}");
    // Past TIME_VALID the same manifest is judged, and it is fresh.
    c.ok("state.steps", json!({"target": "OPERATIONAL"}));
    check_installs(&mut d, 2000);
}

#[test]
fn frozen_repository_serving_a_manifest_past_its_expiry_is_refused_at_every_check() {
    let repo = Repo::new(1000);
    let expires = unix_now() + 3600;
    let opts = PublishOptions { expires: Some(expires), ..PublishOptions::default() };
    publish(&repo, &repo.keys.private, 2000, &opts);
    let d = repo.daemon("auto", None);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    // Two hours on (the daemon's clock; the server keeps serving).
    let later = (unix_now() + 7200) * 1_000_000;
    c.ok("clock.set", json!({"unix_us": later}));
    for _ in 0..3 {
        let r = c.err("ota.check", json!({}), "forbidden");
        assert_eq!(r["kind"], "expired", "{r}");
        let s = c.ok("ota.status", json!({}));
        assert_eq!(s["last_error_kind"], "expired", "{s}");
        assert!(s["last_error"].as_str().unwrap().contains(&format!("expired at {expires}")));
        assert_eq!(slots(&s), ("a".into(), "good".into(), "empty".into()), "{s}");
    }
}

#[test]
fn min_unixtime_raises_the_floor_durably_even_before_the_release_is_confirmed() {
    let repo = Repo::new(1000);
    let replay = publish(&repo, &repo.keys.private, 1500, &PublishOptions::default());
    let opts = PublishOptions { min_unixtime: Some(1800), ..PublishOptions::default() };
    publish(&repo, &repo.keys.private, 2000, &opts);
    let mut d = repo.daemon("manual", None);
    let state = check_installs(&mut d, 2000);
    let keyring = state.join("ota/keyring.json");
    assert_eq!(std::fs::metadata(&keyring).unwrap().permissions().mode() & 0o777, 0o600);
    // Restarted, the trial not confirmed, then rolled back: the floor
    // stays, so the replayed 1500 is refused though nothing newer runs.
    let d = again(&repo, "manual", state);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    let s = c.ok("ota.report_current", json!({"bad": true}));
    assert_eq!(
        (s["confirmed_unixtime"].clone(), s["min_unixtime"].clone()),
        (json!(0), json!(1800))
    );
    std::fs::write(manifest_path(&repo), &replay).unwrap();
    let r = c.err("ota.check", json!({}), "out_of_range");
    assert_eq!(r["kind"], "below_floor", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("older than the signed minimum 1800"));
    let s = c.ok("ota.status", json!({}));
    assert_eq!(slots(&s), ("a".into(), "good".into(), "bad".into()), "{s}");
    assert_eq!(
        (s["last_error_kind"].clone(), s["min_unixtime"].clone()),
        (json!("below_floor"), json!(1800))
    );
}

#[test]
fn rotation_to_a_new_key_then_retiring_the_old_survives_restarts() {
    let repo = Repo::new(1000);
    let k1 = repo.keys.clone();
    let k2 = ctl_ota::keygen(&repo.dir.path().join("keys2")).unwrap();
    // Manifest 1, signed by K1, announces K2.
    let next: Value = serde_json::from_slice(&std::fs::read(&k2.public).unwrap()).unwrap();
    let opts = PublishOptions { next_jwk: Some(next), ..PublishOptions::default() };
    publish(&repo, &k1.private, 2000, &opts);
    let mut d = repo.daemon("auto", None);
    let state = check_installs(&mut d, 2000);
    assert!(d.logs().contains("issuer key added"));

    // Restarted: both trusted, from the durable keyring. Manifest 2,
    // signed by K2, installs and retires K1.
    let mut d = again(&repo, "auto", state);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    let s = c.ok("ota.status", json!({}));
    assert_eq!(s["trusted_kids"], json!([k1.kid, k2.kid]), "{s}");
    let opts = PublishOptions { retire_kids: vec![k1.kid.clone()], ..PublishOptions::default() };
    publish(&repo, &k2.private, 3000, &opts);
    let state = check_installs(&mut d, 3000);

    // Restarted with the config still naming K1: only K2 is trusted, and
    // manifest 3, signed by K1, is refused; the slots stay as they were.
    let d = again(&repo, "auto", state);
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    let s = c.ok("ota.status", json!({}));
    assert_eq!(s["trusted_kids"], json!([k2.kid]), "{s}");
    publish(&repo, &k1.private, 4000, &PublishOptions::default());
    let r = c.err("ota.check", json!({}), "forbidden");
    assert_eq!(r["kind"], "retired_key", "{r}");
    let s = c.ok("ota.status", json!({}));
    assert_eq!(s["last_error_kind"], "retired_key", "{s}");
    assert_eq!(s["selected"], "a", "{s}");
    assert_eq!(s["confirmed_unixtime"], 3000, "{s}");
    let ring: Value =
        serde_json::from_slice(&std::fs::read(d.state_dir().join("ota/keyring.json")).unwrap())
            .unwrap();
    assert_eq!(ring["retired"], json!([k1.kid]), "{ring}");
    assert_eq!(ring["keys"].as_array().unwrap().len(), 1, "{ring}");
    assert!(ring["keys"][0].get("d").is_none());
}

#[test]
fn unreadable_keyring_refuses_every_manifest_instead_of_trusting_the_config_alone() {
    let repo = Repo::new(1000);
    let state = tempfile::tempdir().unwrap();
    let ota = state.path().join("ota");
    std::fs::create_dir(&ota).unwrap();
    std::fs::set_permissions(&ota, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(ota.join("keyring.json"), b"{\"version\": 1, \"keys\": [").unwrap();
    let d = again(&repo, "auto", state.path().to_owned());
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    let r = c.err("ota.check", json!({}), "bad_request");
    assert_eq!(r["kind"], "bad_key", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("keyring.json"), "{r}");
    let s = c.ok("ota.status", json!({}));
    assert!(s.get("trusted_kids").is_none(), "{s}");
    assert_eq!(slots(&s), ("a".into(), "good".into(), "empty".into()), "{s}");
}
