//! Blob benchmarks: heap append and get throughput on the pure model for
//! small and large chunks, and the latency of a durable set through the
//! directory store (write, fsync, rename, directory fsync).
// criterion_group! expands to an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lwsys_actors::blobs::BlobModel;
use lwsys_actors::{BlobService, Store};
use lwsys_messages::blobs::{BlobId, BlobKind, DEFAULT_DURABLE};

/// Bytes moved per measured iteration.
const TOTAL: usize = 1024 * 1024;
const ID: BlobId = BlobId::new(BlobKind::DeviceSerial, 0);
const CHUNKS: [usize; 2] = [64, 64 * 1024];

fn filled(chunk: usize) -> BlobModel {
    let mut m = BlobModel::new(usize::MAX);
    let data = vec![0xa5; chunk];
    for _ in 0..TOTAL / chunk {
        m.append(ID, &data).ok();
    }
    m
}

fn heap(c: &mut Criterion) {
    let mut g = c.benchmark_group("blob_heap");
    g.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Bytes(TOTAL as u64));
    for chunk in CHUNKS {
        let data = vec![0x5a; chunk];
        g.bench_function(format!("append_{chunk}B_chunks_to_1MiB"), |b| {
            b.iter_batched(
                || BlobModel::new(usize::MAX),
                |mut m| {
                    for _ in 0..TOTAL / chunk {
                        m.append(ID, black_box(&data)).ok();
                    }
                    m
                },
                BatchSize::SmallInput,
            )
        });
        let m = filled(chunk);
        g.bench_function(format!("get_1MiB_from_{chunk}B_chunks"), |b| {
            b.iter(|| m.get(ID, black_box(0), usize::MAX).map(|r| r.data.len()))
        });
        g.bench_function(format!("get_{chunk}B_reads_over_1MiB"), |b| {
            b.iter(|| {
                let mut n = 0;
                for ofs in (0..TOTAL).step_by(chunk) {
                    n += m.get(ID, black_box(ofs), chunk).map_or(0, |r| r.data.len());
                }
                n
            })
        });
    }
    g.finish();
}

fn durable(c: &mut Criterion) {
    let mut g = c.benchmark_group("blob_durable");
    g.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    g.sample_size(20);
    let Ok(dir) = tempfile::tempdir() else { return };
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let Ok(store) = Store::open(dir.path()) else { return };
    let Ok(mut svc) = BlobService::new(&log, 1024 * 1024, &DEFAULT_DURABLE, Some(store)) else {
        return;
    };
    for size in [64usize, 4096, 64 * 1024] {
        let data = vec![0x3c; size];
        g.bench_function(format!("set_{size}B"), |b| b.iter(|| svc.set(ID, black_box(&data))));
    }
    g.finish();
}

criterion_group!(benches, heap, durable);
criterion_main!(benches);
