//! Tests of chunked installs against the test HTTP server on 127.0.0.1:
//! only changed chunks are fetched, an identical image fetches none, a
//! corrupted chunk is fetched again and never written, a dropped
//! connection costs at most the chunk in flight, a bad index is refused
//! before any write, an interrupted install resumes from its re-hashed
//! partial image, and an index-less manifest installs as before.

use std::sync::atomic::{AtomicBool, Ordering};

use lwsys_manifest::{ChunkIndex, ChunkRef};
use sha2::{Digest as _, Sha256};

use super::chunked::install_auto;
use super::jwk::private_jwk;
use super::manifest::sign_manifest;
use super::tests::{Fixture, VARIANT};
use super::*;

const CS: u32 = 4096;

/// `chunks` chunks of noisy text (compresses to about half).
fn image(chunks: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..chunks * CS as usize)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"abcdefghijklmnop"[(x % 16) as usize]
        })
        .collect()
}

/// Publishes `img` at `unixtime` with a chunk index and chunk file beside
/// the `.img.gz`, and signs the manifest that commits to them.
fn publish_chunked(f: &Fixture, unixtime: u64, img: &[u8]) -> (Manifest, ChunkIndex) {
    let src = f.repo.with_extension(format!("chunked-{unixtime}"));
    std::fs::write(&src, img).unwrap();
    let mut m = publish(&private_jwk(&f.key), VARIANT, &src, &f.repo, unixtime).unwrap();
    let name = format!("{VARIANT}-{unixtime}");
    let (ix, file) = ChunkIndex::build(img, CS, Vec::new()).unwrap();
    let idx = ix.to_bytes();
    std::fs::write(f.dir().join(format!("{name}.chunks")), file).unwrap();
    std::fs::write(f.dir().join(format!("{name}.idx")), &idx).unwrap();
    m.chunks = Some(ChunkRef {
        index: format!("{name}.idx"),
        index_sha256: hex::encode(Sha256::digest(&idx)),
        file: format!("{name}.chunks"),
        chunk_size: CS,
    });
    f.write_manifest(&m);
    (m, ix)
}

/// Slots that record every write.
struct Recording {
    inner: SlotDir,
    writes: Vec<Vec<u8>>,
    starts: u32,
}

impl OtaOps for Recording {
    fn start(&mut self, m: &Manifest) -> Result<(), OtaError> {
        self.starts += 1;
        self.inner.start(m)
    }
    fn write(&mut self, chunk: &[u8]) -> Result<(), OtaError> {
        self.writes.push(chunk.to_vec());
        self.inner.write(chunk)
    }
    fn abort(&mut self) -> Result<(), OtaError> {
        self.inner.abort()
    }
    fn finalize(&mut self, m: &Manifest) -> Result<(), OtaError> {
        self.inner.finalize(m)
    }
    fn report_current(&mut self, bad: bool) -> Result<(), OtaError> {
        self.inner.report_current(bad)
    }
    fn last_fw_unixtime(&self) -> u64 {
        self.inner.last_fw_unixtime()
    }
    fn read_active(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, OtaError> {
        self.inner.read_active(offset, buf)
    }
    fn load_index(&mut self) -> Option<Vec<u8>> {
        self.inner.load_index()
    }
    fn store_index(&mut self, index: &[u8]) -> Result<(), OtaError> {
        self.inner.store_index(index)
    }
    fn read_partial(
        &mut self,
        m: &Manifest,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, OtaError> {
        self.inner.read_partial(m, offset, buf)
    }
    fn start_at(&mut self, m: &Manifest, keep: u64) -> Result<u64, OtaError> {
        self.starts += 1;
        self.inner.start_at(m, keep)
    }
    fn checkpoint(&mut self) -> Result<(), OtaError> {
        self.inner.checkpoint()
    }
    fn suspend(&mut self) -> Result<(), OtaError> {
        self.inner.suspend()
    }
}

fn recording(f: &Fixture) -> Recording {
    Recording { inner: f.slots(), writes: Vec::new(), starts: 0 }
}

/// Checks and installs the served release through `ops` with the journal
/// under the state dir; returns the outcome and the last event.
fn install(
    f: &Fixture,
    ops: &mut dyn OtaOps,
    cancel_at: Option<u64>,
) -> (Result<(), OtaError>, OtaEvent) {
    let fetcher = f.fetcher();
    let m = check(ops, &fetcher, &f.public, &ManifestPolicy::new(VARIANT)).unwrap();
    let cache = DownloadCache::new(&f.state.join("ota"));
    let cancel = AtomicBool::new(false);
    let mut last = OtaEvent::default();
    let r = install_auto(
        ops,
        &fetcher,
        &m,
        &cancel,
        &mut |e| {
            if cancel_at.is_some_and(|n| e.bytes >= n) {
                cancel.store(true, Ordering::Relaxed);
            }
            last = e;
        },
        Some(&cache),
    );
    (r, last)
}

fn sent(f: &Fixture, file: &str) -> u64 {
    let path = format!("/{VARIANT}/{file}");
    f.server.sent.lock().unwrap().get(&path).copied().unwrap_or(0)
}

fn requested(f: &Fixture) -> Vec<String> {
    f.server.log.lock().unwrap().iter().map(|(p, _)| p.clone()).collect()
}

fn comp(ix: &ChunkIndex, i: usize) -> u64 {
    u64::from(ix.chunks[i].comp_len)
}

fn chunk_of(img: &[u8], i: usize) -> &[u8] {
    let cs = CS as usize;
    &img[i * cs..((i + 1) * cs).min(img.len())]
}

#[test]
fn a_one_percent_change_fetches_only_the_changed_chunks_and_an_identical_image_none() {
    let f = Fixture::new();
    let old = image(200, 1);
    std::fs::write(f.state.join("ota/a/image"), &old).unwrap();
    let mut new = old.clone();
    let cs = CS as usize;
    for c in [17, 150] {
        new[c * cs..(c + 1) * cs].copy_from_slice(&image(1, c as u64 + 99));
    }
    let (_, ix) = publish_chunked(&f, 2000, &new);
    let mut ops = recording(&f);
    let (r, ev) = install(&f, &mut ops, None);
    r.unwrap();
    assert_eq!(std::fs::read(f.state.join("ota/b/image")).unwrap(), new);
    assert_eq!(ev.phase, OtaPhase::Done);
    let want_fetched = comp(&ix, 17) + comp(&ix, 150);
    assert_eq!(
        (ev.counts.chunks_fetched, ev.counts.chunks_reused, ev.counts.chunks_refetched),
        (2, 198, 0)
    );
    assert_eq!(ev.counts.bytes_reused, 198 * CS as u64);
    assert_eq!(ev.counts.bytes_fetched, want_fetched);
    let chunks_file = format!("{VARIANT}-2000.chunks");
    assert_eq!(sent(&f, &chunks_file), want_fetched, "bytes the server sent");
    assert!(want_fetched * 100 <= ix.comp_total() * 3, "{want_fetched} of {}", ix.comp_total());
    assert!(!requested(&f).iter().any(|p| p.ends_with(".img.gz")));
    // The factory image was hashed once and its index kept; the new
    // image's index was saved beside it.
    assert!(f.state.join("ota/a/image.idx").exists());
    assert!(f.state.join("ota/b/image.idx").exists());
    assert_eq!(ops.writes.concat(), new);

    // Confirmed, then the same bytes again as a newer release: nothing
    // but the manifest and the index is fetched.
    ops.report_current(false).unwrap();
    f.server.log.lock().unwrap().clear();
    publish_chunked(&f, 3000, &new);
    let (r, ev) = install(&f, &mut ops, None);
    r.unwrap();
    assert_eq!(std::fs::read(f.state.join("ota/a/image")).unwrap(), new);
    assert_eq!(
        (ev.counts.chunks_fetched, ev.counts.chunks_reused, ev.counts.bytes_fetched),
        (0, 200, 0)
    );
    assert_eq!(ev.counts.bytes_reused, new.len() as u64);
    let asked = requested(&f);
    assert_eq!(
        asked,
        vec![format!("/{VARIANT}/manifest.jws"), format!("/{VARIANT}/{VARIANT}-3000.idx")]
    );
}

#[test]
fn a_chunk_corrupted_once_is_fetched_again_and_never_written() {
    let f = Fixture::new();
    let img = image(50, 2);
    let (_, ix) = publish_chunked(&f, 2000, &img);
    let at = ix.chunks[7].comp_offset + comp(&ix, 7) / 2;
    f.server.faults.lock().unwrap().corrupt_at = Some((at as usize, 1));
    let mut ops = recording(&f);
    let (r, ev) = install(&f, &mut ops, None);
    r.unwrap();
    assert_eq!(ev.counts.chunks_refetched, 1);
    assert_eq!(ev.counts.chunks_fetched, 50);
    // Chunk 7 came twice, everything else once.
    assert_eq!(ev.counts.bytes_fetched, ix.comp_total() + comp(&ix, 7));
    assert_eq!(sent(&f, &format!("{VARIANT}-2000.chunks")), ix.comp_total() + comp(&ix, 7));
    // Every write was one good chunk, in order: no bad byte reached it.
    assert_eq!(ops.writes.len(), 50);
    for (i, w) in ops.writes.iter().enumerate() {
        assert_eq!(w.as_slice(), chunk_of(&img, i), "write {i}");
    }
    assert_eq!(std::fs::read(f.state.join("ota/b/image")).unwrap(), img);
}

#[test]
fn a_chunk_bad_on_every_fetch_fails_after_three_attempts_and_none_of_it_is_written() {
    let f = Fixture::new();
    let img = image(30, 3);
    let (_, ix) = publish_chunked(&f, 2000, &img);
    let at = ix.chunks[7].comp_offset + 20;
    f.server.faults.lock().unwrap().corrupt_at = Some((at as usize, 100));
    let mut ops = recording(&f);
    let (r, ev) = install(&f, &mut ops, None);
    assert_eq!(r.unwrap_err(), OtaError::ChunkMismatch { chunk: 7, attempts: 3 });
    assert_eq!(ev.phase, OtaPhase::Failed);
    assert_eq!(ops.writes.concat(), img[..7 * CS as usize].to_vec());
    // Bad data: nothing is kept for a resume.
    assert!(!f.state.join("ota/b/image.partial").exists());
    assert!(!f.state.join("ota/install.json").exists());
    f.assert_untouched(&ops.inner);
}

#[test]
fn a_connection_dropped_mid_chunk_costs_only_that_chunk() {
    let f = Fixture::new();
    let img = image(60, 4);
    let (_, ix) = publish_chunked(&f, 2000, &img);
    let half = comp(&ix, 10) / 2;
    let cut = ix.chunks[10].comp_offset + half;
    f.server.faults.lock().unwrap().drop_after = Some(cut as usize);
    let mut ops = recording(&f);
    let (r, ev) = install(&f, &mut ops, None);
    r.unwrap();
    assert_eq!(std::fs::read(f.state.join("ota/b/image")).unwrap(), img);
    assert_eq!((ev.counts.chunks_fetched, ev.counts.chunks_refetched), (60, 1));
    assert_eq!(ev.counts.bytes_fetched, ix.comp_total() + half);
    assert_eq!(sent(&f, &format!("{VARIANT}-2000.chunks")), ix.comp_total() + half);
    let ranges: Vec<_> = f
        .server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.ends_with(".chunks"))
        .map(|(_, r)| r.clone().unwrap_or_default())
        .collect();
    let end = ix.comp_total() - 1;
    assert_eq!(
        ranges,
        vec![format!("bytes=0-{end}"), format!("bytes={}-{end}", ix.chunks[10].comp_offset)]
    );
}

#[test]
fn a_bad_index_is_refused_before_anything_is_written() {
    let f = Fixture::new();
    let img = image(20, 5);
    let (m, _) = publish_chunked(&f, 2000, &img);
    let idx = f.dir().join(format!("{VARIANT}-2000.idx"));
    let mut bytes = std::fs::read(&idx).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&idx, &bytes).unwrap();
    let mut ops = recording(&f);
    let (r, _) = install(&f, &mut ops, None);
    assert!(matches!(r, Err(OtaError::ChunkIndex(ref s)) if s.contains("SHA-256")), "{r:?}");
    assert_eq!((ops.starts, ops.writes.len()), (0, 0));
    f.assert_untouched(&ops.inner);
    assert_eq!(ops.inner.state().slots[1].status, SlotStatus::Empty);

    // A signed hash of an index that disagrees with the manifest (another
    // chunk size) is refused the same way.
    let good = ChunkIndex::build(img.as_slice(), 2 * CS, Vec::new()).unwrap().0.to_bytes();
    std::fs::write(&idx, &good).unwrap();
    let mut m2 = m.clone();
    m2.unixtime = 2001;
    m2.chunks = Some(ChunkRef {
        index_sha256: hex::encode(Sha256::digest(&good)),
        ..m.chunks.clone().unwrap()
    });
    std::fs::write(f.dir().join("manifest.jws"), sign_manifest(&f.key, &m2)).unwrap();
    let (r, _) = install(&f, &mut ops, None);
    assert!(matches!(r, Err(OtaError::ChunkIndex(_))), "{r:?}");
    assert_eq!((ops.starts, ops.writes.len()), (0, 0));
    f.assert_untouched(&ops.inner);
}

#[test]
fn an_interrupted_install_resumes_from_its_rehashed_partial_image_after_a_reopen() {
    let f = Fixture::new();
    let img = image(100, 6);
    let (_, ix) = publish_chunked(&f, 2000, &img);
    let cs = u64::from(CS);
    let mut ops = recording(&f);
    let (r, _) = install(&f, &mut ops, Some(30 * cs));
    assert_eq!(r.unwrap_err(), OtaError::Cancelled);
    let partial = f.state.join("ota/b/image.partial");
    let written = std::fs::metadata(&partial).unwrap().len();
    assert!(written >= 30 * cs, "{written}");
    drop(ops);
    // A restart: the slots are reopened and keep the partial image the
    // journal names. A byte gone bad in chunk 12 (a torn write) ends what
    // is kept there.
    let mut bytes = std::fs::read(&partial).unwrap();
    bytes[12 * CS as usize + 5] ^= 1;
    std::fs::write(&partial, &bytes).unwrap();
    let mut ops = recording(&f);
    assert!(partial.exists());
    f.server.sent.lock().unwrap().clear();
    let (r, ev) = install(&f, &mut ops, None);
    r.unwrap();
    assert_eq!(std::fs::read(f.state.join("ota/b/image")).unwrap(), img);
    assert_eq!(ev.counts.bytes_resumed, 12 * cs);
    assert_eq!(ev.counts.chunks_fetched, 88);
    let rest: u64 = (12..100).map(|i| comp(&ix, i)).sum();
    assert_eq!(sent(&f, &format!("{VARIANT}-2000.chunks")), rest);
    assert_eq!(ops.writes.concat(), img[12 * CS as usize..].to_vec());
    assert!(!f.state.join("ota/install.json").exists());
}

#[test]
fn a_partial_image_of_another_release_is_dropped_and_the_new_one_starts_clean() {
    let f = Fixture::new();
    let img = image(40, 7);
    publish_chunked(&f, 2000, &img);
    let mut ops = recording(&f);
    let (r, _) = install(&f, &mut ops, Some(10 * u64::from(CS)));
    assert_eq!(r.unwrap_err(), OtaError::Cancelled);
    drop(ops);
    let newer = image(40, 8);
    let (_, ix) = publish_chunked(&f, 3000, &newer);
    let mut ops = recording(&f);
    let (r, ev) = install(&f, &mut ops, None);
    r.unwrap();
    assert_eq!(ev.counts.bytes_resumed, 0);
    assert_eq!(ev.counts.bytes_fetched, ix.comp_total());
    assert_eq!(std::fs::read(f.state.join("ota/b/image")).unwrap(), newer);
}

#[test]
fn an_index_less_manifest_still_installs_through_the_whole_image_pipeline() {
    let f = Fixture::new();
    let (mut m, img) = f.publish(1000, 300_000);
    m.chunks = None;
    f.write_manifest(&m);
    let mut ops = recording(&f);
    let (r, ev) = install(&f, &mut ops, None);
    r.unwrap();
    assert_eq!(std::fs::read(f.state.join("ota/b/image")).unwrap(), img);
    let gz = std::fs::metadata(f.dir().join(&m.path)).unwrap().len();
    assert_eq!(ev.counts.bytes_fetched, gz);
    assert_eq!((ev.counts.chunks_fetched, ev.counts.bytes_reused), (0, 0));
    assert!(!requested(&f).iter().any(|p| p.ends_with(".chunks") || p.ends_with(".idx")));
}

#[test]
fn a_server_that_ignores_range_gets_the_whole_image_installed_instead() {
    let f = Fixture::new();
    let img = image(30, 9);
    let (m, _) = publish_chunked(&f, 2000, &img);
    f.server.faults.lock().unwrap().ignore_range = true;
    let mut ops = recording(&f);
    let (r, ev) = install(&f, &mut ops, None);
    r.unwrap();
    assert_eq!(std::fs::read(f.state.join("ota/b/image")).unwrap(), img);
    let gz = std::fs::metadata(f.dir().join(&m.path)).unwrap().len();
    assert_eq!(ev.counts.bytes_fetched, gz);
    assert!(requested(&f).iter().any(|p| p.ends_with(".img.gz")));
    assert_eq!(ops.writes.concat(), img);
}

#[test]
fn the_journal_is_private_atomic_and_ignores_what_is_not_its_own() {
    use std::os::unix::fs::PermissionsExt as _;

    use super::journal::{Journal, JOURNAL};
    let f = Fixture::new();
    let (m, _) = publish_chunked(&f, 2000, &image(2, 10));
    let dir = f.state.join("ota");
    let j = Journal::new(&dir);
    assert!(!j.names(&m));
    j.begin(&m).unwrap();
    assert!(j.names(&m));
    let path = dir.join(JOURNAL);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!dir.join(format!("{JOURNAL}.tmp")).exists());
    let mut other = m.clone();
    other.unixtime = 2001;
    assert!(!j.names(&other), "another release is not ours");
    // Unknown fields, a wrong version, garbage or a file over 4 KiB: none.
    let good = std::fs::read_to_string(&path).unwrap();
    let extra = good.replacen('{', "{\"more\":1,", 1);
    let v2 = good.replacen("\"version\":1", "\"version\":2", 1);
    for bad in [extra, v2, "{".to_owned(), format!("{good}{}", " ".repeat(5000))] {
        std::fs::write(&path, bad).unwrap();
        assert_eq!(j.read(), None);
    }
    // Never read through a symlink.
    std::fs::remove_file(&path).unwrap();
    let elsewhere = f.state.join("elsewhere.json");
    std::fs::write(&elsewhere, &good).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    assert_eq!(j.read(), None);
    j.clear().unwrap();
    assert!(!path.exists() && elsewhere.exists());
}

#[test]
fn a_reopen_keeps_a_partial_image_only_while_the_journal_names_its_release() {
    let f = Fixture::new();
    let img = image(20, 11);
    publish_chunked(&f, 2000, &img);
    let mut ops = recording(&f);
    let (r, _) = install(&f, &mut ops, Some(5 * u64::from(CS)));
    assert_eq!(r.unwrap_err(), OtaError::Cancelled);
    drop(ops);
    let partial = f.state.join("ota/b/image.partial");
    drop(f.slots());
    assert!(partial.exists(), "kept for the release the journal names");
    // The journal now names another release: the partial image goes.
    let journal = f.state.join("ota").join(super::journal::JOURNAL);
    let text = std::fs::read_to_string(&journal).unwrap();
    std::fs::write(&journal, text.replace("\"unixtime\":2000", "\"unixtime\":1999")).unwrap();
    drop(f.slots());
    assert!(!partial.exists());
}
