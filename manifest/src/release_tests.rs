//! Tests of publishing a release and checking its files: the chunked
//! layout, the upstream-identical one, and every way the index or chunk
//! file can disagree with the signed manifest.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha512};

use crate::chunks::{ChunkIndex, ENTRY_LEN, HEADER_LEN};
use crate::jwk::{generate_key, private_jwk};
use crate::*;

const VARIANT: &str = "xyz-v1";

struct Fixture {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    repo: PathBuf,
    jwk: String,
    public: VerifyingKey,
    image: Vec<u8>,
}

fn fixture(len: usize) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let key = generate_key();
    let image: Vec<u8> = (0..len).map(|i| (((i * 7919) % 253) ^ (i >> 11)) as u8).collect();
    let src = tmp.path().join("fw.img");
    std::fs::write(&src, &image).unwrap();
    let repo = tmp.path().join("repo");
    Fixture { src, repo, jwk: private_jwk(&key), public: *key.verifying_key(), image, _tmp: tmp }
}

impl Fixture {
    fn publish(&self, t: u64, chunk_size: Option<u32>) -> Manifest {
        let opts = PublishOptions { chunk_size, ..PublishOptions::default() };
        publish_with(&self.jwk, VARIANT, &self.src, &self.repo, t, &opts).unwrap()
    }
    fn file(&self, name: &str) -> PathBuf {
        self.repo.join(VARIANT).join(name)
    }
    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.file(name)).unwrap()
    }
    fn payload(&self) -> serde_json::Value {
        let jws = String::from_utf8(self.read("manifest.jws")).unwrap();
        let p = jws.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
    }
    fn verified(&self) -> Manifest {
        let jws = self.read("manifest.jws");
        verify_manifest(&jws, &self.public, &ManifestPolicy::new(VARIANT)).unwrap()
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn publish_writes_a_chunked_release_that_checks_end_to_end() {
    let f = fixture(300_000);
    let m = f.publish(1000, Some(65536));
    assert_eq!(
        names(&f.repo.join(VARIANT)),
        ["manifest.jws", "xyz-v1-1000.chunks", "xyz-v1-1000.idx", "xyz-v1-1000.img.gz"]
    );
    assert_eq!(f.verified(), m);
    let r = m.chunks.clone().unwrap();
    assert_eq!(
        (r.index.as_str(), r.file.as_str(), r.chunk_size),
        ("xyz-v1-1000.idx", "xyz-v1-1000.chunks", 65536)
    );
    let idx = f.read(&r.index);
    assert_eq!(idx.len(), HEADER_LEN + 5 * ENTRY_LEN, "ceil(300000 / 65536) = 5 chunks");
    let ix = check_index(&m, &idx, m.size).unwrap();
    let chunks = f.read(&r.file);
    assert_eq!(ix.comp_total(), chunks.len() as u64);
    verify_chunk_file(&ix, &m, &chunks[..]).unwrap();
    verify_image_gz(&m, &f.read(&m.path)[..]).unwrap();
    // The chunk file is a multi-member gzip of the image: `zcat` reads it.
    let mut all = Vec::new();
    MultiGzDecoder::new(&chunks[..]).read_to_end(&mut all).unwrap();
    assert_eq!(all, f.image);
    assert_eq!(m.sha512, hex::encode(Sha512::digest(&f.image)));
}

#[test]
fn no_chunks_release_is_upstreams_and_the_img_gz_is_the_same_either_way() {
    let f = fixture(200_000);
    let plain = f.publish(1000, None);
    assert_eq!(names(&f.repo.join(VARIANT)), ["manifest.jws", "xyz-v1-1000.img.gz"]);
    let v = f.payload();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["path", "reset", "sha512", "size", "unixtime", "variant"], "no lwsys field");
    assert!(plain.chunks.is_none());
    let gz_plain = f.read(&plain.path);

    let chunked = f.publish(1000, Some(4096));
    assert_eq!(f.read(&chunked.path), gz_plain, "the .img.gz is byte-identical");
    // Upstream's fields are the same values; the chunk reference is extra.
    let v = f.payload();
    for k in ["variant", "path", "size", "unixtime", "sha512", "reset"] {
        assert_eq!(v[k], serde_json::to_value(&plain).unwrap()[k], "{k}");
    }
    assert_eq!(Manifest { chunks: None, ..chunked.clone() }, plain);
}

/// What an upstream device reads of a payload: its six fields, every other
/// member ignored.
#[derive(serde::Deserialize, Debug, PartialEq)]
struct UpstreamPayload {
    variant: String,
    path: String,
    size: u64,
    unixtime: u64,
    sha512: String,
    reset: bool,
}

#[test]
fn a_chunked_manifest_installs_on_an_upstream_device_from_the_img_gz() {
    let f = fixture(100_000);
    let m = f.publish(1000, Some(65536));
    assert!(m.chunks.is_some());
    // The signature verifies over the same bytes (it does not care what
    // the payload says) and the upstream field set is all there, intact.
    f.verified();
    let up: UpstreamPayload = serde_json::from_value(f.payload()).unwrap();
    assert_eq!(
        up,
        UpstreamPayload {
            variant: VARIANT.into(),
            path: "xyz-v1-1000.img.gz".into(),
            size: 100_000,
            unixtime: 1000,
            sha512: hex::encode(Sha512::digest(&f.image)),
            reset: true,
        }
    );
    let stripped = Manifest { chunks: None, ..m };
    verify_image_gz(&stripped, &f.read(&up.path)[..]).unwrap();
}

#[test]
fn an_index_or_chunk_file_that_disagrees_is_refused() {
    let f = fixture(150_000);
    let m = f.publish(1000, Some(4096));
    let r = m.chunks.clone().unwrap();
    let idx = f.read(&r.index);
    let chunks = f.read(&r.file);
    let ix = check_index(&m, &idx, u64::MAX).unwrap();
    let is_chunk_err = |e: OtaError, what: &str| match e {
        OtaError::ChunkIndex(s) => assert!(s.contains(what), "{s:?} lacks {what:?}"),
        other => panic!("{other:?}"),
    };

    // The index: a flipped hash byte, a limit, sizes the manifest disowns.
    let mut bad = idx.clone();
    bad[HEADER_LEN + 10] ^= 1;
    is_chunk_err(check_index(&m, &bad, u64::MAX).unwrap_err(), "index hash");
    assert!(check_index(&m, &idx, m.size - 1).is_err(), "over the image limit");
    let mut other = m.clone();
    other.size += 1;
    is_chunk_err(check_index(&other, &idx, u64::MAX).unwrap_err(), "manifest's image");
    let mut other = m.clone();
    other.chunks.as_mut().unwrap().chunk_size = 8192;
    is_chunk_err(check_index(&other, &idx, u64::MAX).unwrap_err(), "chunk size");
    let mut other = m.clone();
    other.chunks.as_mut().unwrap().file = "../x".into();
    assert!(matches!(check_index(&other, &idx, u64::MAX), Err(OtaError::BadPath(_))));
    is_chunk_err(
        check_index(&Manifest { chunks: None, ..m.clone() }, &idx, 1 << 30).unwrap_err(),
        "no chunk index",
    );

    // The chunk file: a corrupt byte in chunk 3, cut short, one byte long.
    let mut bad = chunks.clone();
    bad[ix.chunks[3].comp_offset as usize + 30] ^= 0x55;
    let e = verify_chunk_file(&ix, &m, &bad[..]).unwrap_err();
    assert!(e.to_string().contains("chunk 3"), "{e}");
    let e = verify_chunk_file(&ix, &m, &chunks[..chunks.len() - 1]).unwrap_err();
    assert!(e.to_string().contains("ends in chunk 36"), "{e}");
    let mut long = chunks.clone();
    long.push(0);
    is_chunk_err(verify_chunk_file(&ix, &m, &long[..]).unwrap_err(), "longer");
    // Every chunk good but not the signed image.
    let mut other = m.clone();
    other.sha512 = "00".repeat(64);
    assert_eq!(verify_chunk_file(&ix, &other, &chunks[..]), Err(OtaError::HashMismatch));
}

#[test]
fn a_bad_chunk_size_is_refused_before_anything_is_written() {
    let f = fixture(10_000);
    for cs in [0, 1000, 4095, 1 << 25] {
        let opts = PublishOptions { chunk_size: Some(cs), ..PublishOptions::default() };
        let e = publish_with(&f.jwk, VARIANT, &f.src, &f.repo, 1, &opts).unwrap_err();
        assert!(matches!(e, OtaError::ChunkIndex(_)), "{e:?}");
    }
    assert!(!f.repo.exists());
}

#[test]
fn an_empty_image_publishes_an_empty_index() {
    let f = fixture(0);
    let m = f.publish(5, Some(65536));
    let r = m.chunks.clone().unwrap();
    let ix: ChunkIndex = check_index(&m, &f.read(&r.index), 0).unwrap();
    assert!(ix.chunks.is_empty());
    verify_chunk_file(&ix, &m, &f.read(&r.file)[..]).unwrap();
}
