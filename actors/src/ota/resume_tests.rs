//! Tests of the saved download ([`DownloadCache`]): it is used only for
//! the manifest it was recorded for, its files are 0600, and a symlink in
//! their place is never followed.

use std::os::unix::fs::PermissionsExt as _;

use super::resume::{PARTIAL, RECORD};
use super::{DownloadCache, Manifest};

fn manifest(unixtime: u64) -> Manifest {
    Manifest {
        variant: "xyz-v1".into(),
        path: format!("xyz-v1-{unixtime}.img.gz"),
        size: 1000,
        unixtime,
        sha512: "ab".repeat(64),
        reset: true,
        ..Manifest::default()
    }
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_saved_prefix_is_offered_only_for_the_manifest_it_was_recorded_for() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DownloadCache::new(dir.path());
    let m = manifest(1000);
    assert!(cache.prefix(&m).is_none(), "nothing saved yet");
    let mut f = cache.begin(&m).unwrap();
    assert!(cache.prefix(&m).is_none(), "an empty prefix is no prefix");
    std::io::Write::write_all(&mut f, b"0123456789").unwrap();
    drop(f);
    assert_eq!(cache.prefix(&m).map(|(_, n)| n), Some(10));
    // Any field of the manifest differing: not this download.
    assert!(cache.prefix(&manifest(2000)).is_none());
    assert!(cache.prefix(&Manifest { size: 999, ..m.clone() }).is_none());
    assert!(cache.prefix(&Manifest { sha512: "cd".repeat(64), ..m.clone() }).is_none());
    // Appending after 4 bytes drops the rest.
    drop(cache.append(4).unwrap());
    assert_eq!(cache.prefix(&m).map(|(_, n)| n), Some(4));
    for f in [PARTIAL, RECORD] {
        assert_eq!(mode(&dir.path().join(f)), 0o600, "{f}");
    }
    cache.clear().unwrap();
    assert!(!dir.path().join(PARTIAL).exists() && !dir.path().join(RECORD).exists());
}

#[test]
fn a_corrupt_or_oversized_record_means_no_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DownloadCache::new(dir.path());
    let m = manifest(1000);
    let mut f = cache.begin(&m).unwrap();
    std::io::Write::write_all(&mut f, b"data").unwrap();
    std::fs::write(dir.path().join(RECORD), b"{\"version\": 1, \"sha512\": ").unwrap();
    assert!(cache.prefix(&m).is_none());
    std::fs::write(dir.path().join(RECORD), vec![b' '; 8192]).unwrap();
    assert!(cache.prefix(&m).is_none());
}

#[test]
fn symlinks_in_place_of_the_saved_files_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cache = DownloadCache::new(dir.path());
    let m = manifest(1000);
    drop(cache.begin(&m).unwrap());
    // A prefix that is a symlink is not read...
    std::fs::remove_file(dir.path().join(PARTIAL)).unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join(PARTIAL)).unwrap();
    assert!(cache.prefix(&m).is_none());
    assert!(cache.append(0).is_err(), "appending through a symlink");
    // ...nor written through: starting again replaces the link itself.
    let mut f = cache.begin(&m).unwrap();
    std::io::Write::write_all(&mut f, b"x").unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
    assert_eq!(mode(&victim), 0o644);
    assert!(!dir.path().join(PARTIAL).is_symlink());
    // A record that is a symlink is not believed either.
    std::fs::remove_file(dir.path().join(RECORD)).unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join(RECORD)).unwrap();
    assert!(cache.prefix(&m).is_none());
}

mod pipeline {
    //! The pipeline with a saved copy, against the test server.

    use std::sync::atomic::AtomicBool;

    use super::super::tests::Fixture;
    use super::super::{install_resumable, DownloadCache, OtaEvent, SlotStatus};

    fn install(f: &Fixture, m: &super::Manifest, cache: &DownloadCache) -> Vec<OtaEvent> {
        let mut slots = f.slots();
        let mut events = Vec::new();
        let cancel = AtomicBool::new(false);
        install_resumable(
            &mut slots,
            &f.fetcher(),
            m,
            &cancel,
            &mut |e| events.push(e),
            Some(cache),
        )
        .unwrap();
        assert_eq!(slots.state().slots[1].status, SlotStatus::Trial);
        events
    }

    fn image_requests(f: &Fixture) -> Vec<Option<String>> {
        let log = f.server.log.lock().unwrap();
        log.iter().filter(|(p, _)| p.ends_with(".gz")).map(|(_, r)| r.clone()).collect()
    }

    #[test]
    fn a_saved_prefix_is_replayed_and_only_the_rest_is_asked_for() {
        let f = Fixture::new();
        let (m, img) = f.publish(1000, 300_000);
        let gz = std::fs::read(f.dir().join(&m.path)).unwrap();
        let cache = DownloadCache::new(&f.state.join("ota"));
        std::fs::create_dir_all(f.state.join("ota")).unwrap();
        let cut = gz.len() / 3;
        std::io::Write::write_all(&mut cache.begin(&m).unwrap(), &gz[..cut]).unwrap();
        let events = install(&f, &m, &cache);
        assert_eq!(std::fs::read(f.slots().image_path("b")).unwrap(), img);
        assert_eq!(image_requests(&f), vec![Some(format!("bytes={cut}-"))]);
        assert!(events.iter().all(|e| e.resumed_from == cut as u64));
        assert!(cache.prefix(&m).is_none(), "the copy is removed once installed");
    }

    #[test]
    fn a_complete_saved_copy_fetches_nothing_more() {
        let f = Fixture::new();
        let (m, img) = f.publish(1000, 300_000);
        let gz = std::fs::read(f.dir().join(&m.path)).unwrap();
        std::fs::create_dir_all(f.state.join("ota")).unwrap();
        let cache = DownloadCache::new(&f.state.join("ota"));
        std::io::Write::write_all(&mut cache.begin(&m).unwrap(), &gz).unwrap();
        install(&f, &m, &cache);
        assert_eq!(std::fs::read(f.slots().image_path("b")).unwrap(), img);
        // Asked once from its end, answered 416 `bytes */len`: no body.
        assert_eq!(image_requests(&f), vec![Some(format!("bytes={}-", gz.len()))]);
    }

    #[test]
    fn a_saved_copy_with_wrong_bytes_fails_the_hash_and_is_dropped() {
        let f = Fixture::new();
        let (m, _) = f.publish(1000, 300_000);
        let gz = std::fs::read(f.dir().join(&m.path)).unwrap();
        std::fs::create_dir_all(f.state.join("ota")).unwrap();
        let cache = DownloadCache::new(&f.state.join("ota"));
        let mut bad = gz[..gz.len() / 2].to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        std::io::Write::write_all(&mut cache.begin(&m).unwrap(), &bad).unwrap();
        let mut slots = f.slots();
        let cancel = AtomicBool::new(false);
        let r = install_resumable(&mut slots, &f.fetcher(), &m, &cancel, &mut |_| {}, Some(&cache));
        assert!(r.is_err(), "a wrong prefix never installs");
        assert_eq!(slots.selected(), "a");
        assert!(cache.prefix(&m).is_none(), "and is not replayed again");
        // The next attempt starts from zero and installs.
        install(&f, &m, &cache);
    }
}
