//! Trust store benchmarks: TBLB blob load, SKID query latency (hit and
//! miss), and indexing `/etc/ssl/certs` (skipped when absent).
// criterion_group! generates a public fn that cannot carry a doc comment.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use lwsys_actors::trust::{CertDirBackend, TblbBackend, TrustBackend, TrustStore};

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/fixtures/mozilla-trust.tblb"))
        .find(|p| p.is_file())
        .expect("shared/fixtures/mozilla-trust.tblb beside the workspace")
}

fn bench_trust(c: &mut Criterion) {
    let raw = Bytes::from(std::fs::read(fixture_path()).expect("fixture readable"));
    c.bench_function("tblb_load_128_certs", |b| {
        b.iter(|| TblbBackend::parse("fixture", black_box(raw.clone())).expect("valid blob"))
    });

    let blob = TblbBackend::parse("fixture", raw.clone()).expect("valid blob");
    let hit: Vec<u8> =
        blob.iter().map(|(_, s)| s.to_vec()).find(|s| !s.is_empty()).expect("an indexed cert");
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let store = TrustStore::new(&log, vec![Box::new(blob.clone())], Duration::from_secs(3600), 0);
    c.bench_function("tblb_index_hit", |b| b.iter(|| blob.lookup(black_box(&hit))));
    c.bench_function("tblb_index_miss", |b| b.iter(|| blob.lookup(black_box(&[0x5a; 20]))));
    c.bench_function("store_query_hit_with_subject_and_validity", |b| {
        b.iter(|| store.lookup(black_box(&hit)))
    });
    c.bench_function("store_query_miss", |b| b.iter(|| store.lookup(black_box(&[0x5a; 20]))));

    let dir = Path::new("/etc/ssl/certs");
    if dir.is_dir() {
        c.bench_function("cert_dir_index_etc_ssl_certs", |b| {
            b.iter(|| CertDirBackend::open(black_box(dir)).expect("listable"))
        });
    } else {
        eprintln!("skipped cert_dir_index_etc_ssl_certs: /etc/ssl/certs is absent");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = bench_trust
}
criterion_main!(benches);
