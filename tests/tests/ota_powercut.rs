//! Power cuts during an OTA install, through the real `lwsysd`: the daemon
//! is killed with SIGKILL at random points while it downloads, writes and
//! finalizes an update; after each restart a good slot is selected, the
//! system reaches OPERATIONAL, and a slot that is selected holds exactly
//! the signed image (nothing unverified is ever selected). 10 cuts by
//! default, 50 with `LWSYS_SLOW=1`.
#![allow(clippy::unwrap_used)]

#[path = "common/ota_repo.rs"]
mod ota_repo;

use std::time::Duration;

use lwsys_tests::TestDaemon;
use ota_repo::Repo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// An image of incompressible bytes, big enough that the install spans
/// many progress events.
fn image(len: usize, rng: &mut StdRng) -> Vec<u8> {
    (0..len).map(|_| rng.gen::<u8>()).collect()
}

/// Starts an install on `d` and kills the daemon at a random point of it:
/// at a random progress event of a random phase, after a random extra
/// delay. Returns the phase it was in.
fn cut_during_install(d: &mut TestDaemon, rng: &mut StdRng) -> String {
    let mut events = d.connect();
    events.ok("subscribe", json!({"events": ["ota"]}));
    let mut trigger = d.connect();
    trigger.send("ota.check", json!({}));
    let phase = ["downloading", "verifying", "finalizing"][rng.gen_range(0..3)];
    let skip = if phase == "downloading" { rng.gen_range(0..16) } else { 0 };
    let mut seen = 0;
    let mut last = String::new();
    while let Some(e) = events.read(Duration::from_secs(20)) {
        let Some(p) = e.get("phase").and_then(Value::as_str) else { continue };
        last = p.to_owned();
        if p == phase {
            seen += 1;
        }
        if (p == phase && seen > skip) || p == "done" || p == "failed" {
            break;
        }
    }
    std::thread::sleep(Duration::from_micros(rng.gen_range(0..2000)));
    d.kill();
    last
}

/// What a boot after the cut must find.
fn assert_safe(d: &TestDaemon, repo: &Repo) -> String {
    let mut c = d.connect();
    c.wait_state("OPERATIONAL");
    let s = c.ok("ota.status", json!({}));
    let selected = s["selected"].as_str().unwrap().to_owned();
    let slot = s["slots"].as_array().unwrap().iter().find(|x| x["name"] == selected.as_str());
    let status = slot.and_then(|x| x["status"].as_str()).unwrap_or("none");
    assert!(matches!(status, "good" | "trial"), "selected slot {selected} is {status}: {s}");
    if selected == "b" {
        let on_disk = std::fs::read(d.state_dir().join("ota/b/image")).unwrap();
        assert!(on_disk == repo.image, "slot b selected but its image is not the signed one");
    }
    selected
}

#[test]
fn sigkill_during_write_or_finalize_always_leaves_a_good_verified_slot_selected() {
    let cuts: usize = if std::env::var("LWSYS_SLOW").is_ok_and(|v| v == "1") { 50 } else { 10 };
    let seed = rand::random::<u64>();
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    // About 64 pieces 1 ms apart (some 18 progress events): the cut lands in the download and write
    // as often as in verify and finalize.
    let repo = Repo::paced(1000, image(4 << 20, &mut rng), Some(Duration::from_millis(1)));
    let mut phases = Vec::new();
    let mut installed = 0;
    for _ in 0..cuts {
        // A fresh device each time, so every cut lands in an install.
        let mut d = repo.daemon("auto", None);
        d.connect().wait_state("OPERATIONAL");
        phases.push(cut_during_install(&mut d, &mut rng));
        let state_dir = d.state_dir().to_owned();
        let again = repo.daemon("auto", Some(state_dir));
        if assert_safe(&again, &repo) == "b" {
            installed += 1;
        } else {
            // The update was cut before it was selected: it can still be
            // installed from here.
            let r = again.connect().ok("ota.check", json!({}));
            assert_eq!(r["updated"], true, "{r}");
        }
        drop(again);
        drop(d);
    }
    println!("cuts in phases {phases:?}; {installed} already selected at the cut");
}
