//! Tests of the chunk index format: round trips, every header check, the
//! chunk file as multi-member gzip, and random bytes never panicking.

use std::io::Read as _;

use flate2::read::MultiGzDecoder;
use proptest::prelude::*;

use super::*;

/// An image with repeats and noise, so chunks compress unevenly.
fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i / 5000) % 2 == 0 {
                (i % 251) as u8
            } else {
                x as u8
            }
        })
        .collect()
}

fn built(img: &[u8], chunk_size: u32) -> (ChunkIndex, Vec<u8>) {
    ChunkIndex::build(img, chunk_size, Vec::new()).unwrap()
}

#[test]
fn build_round_trips_and_chunks_verify_one_by_one() {
    let img = image(100_000, 7);
    let (ix, file) = built(&img, 4096);
    assert_eq!((ix.size, ix.chunk_size, ix.chunks.len()), (100_000, 4096, 25));
    assert_eq!(ix.comp_total(), file.len() as u64);
    let bytes = ix.to_bytes();
    assert_eq!(bytes.len(), HEADER_LEN + 25 * ENTRY_LEN);
    assert_eq!(&bytes[..4], b"LWCI");
    assert_eq!(ChunkIndex::parse(&bytes, 100_000).unwrap(), ix);
    for (i, c) in ix.chunks.iter().enumerate() {
        let (off, len) = ix.chunk_range(i).unwrap();
        let comp = &file[c.comp_offset as usize..(c.comp_offset + u64::from(c.comp_len)) as usize];
        let plain = inflate_chunk(comp, len, &c.sha256).unwrap();
        assert_eq!(plain, &img[off as usize..off as usize + len as usize]);
    }
    // The last chunk is short: 100_000 - 24 * 4096.
    assert_eq!(ix.chunk_range(24), Some((98_304, 1_696)));
    assert_eq!(ix.chunk_range(25), None);
}

#[test]
fn chunk_file_is_a_multi_member_gzip_of_the_image() {
    let img = image(70_000, 3);
    let (_, file) = built(&img, 16 * 1024);
    let mut out = Vec::new();
    MultiGzDecoder::new(&file[..]).read_to_end(&mut out).unwrap();
    assert_eq!(out, img);
}

#[test]
fn empty_and_exact_multiple_images() {
    let (ix, file) = built(&[], 4096);
    assert!(ix.chunks.is_empty() && file.is_empty());
    assert_eq!(ChunkIndex::parse(&ix.to_bytes(), 0).unwrap(), ix);
    let (ix, _) = built(&image(8192, 1), 4096);
    assert_eq!(ix.chunks.len(), 2);
    assert_eq!(ix.chunk_range(1), Some((4096, 4096)));
}

#[test]
fn incompressible_chunks_stay_under_the_bound() {
    let mut x = 99u64;
    let noise: Vec<u8> = (0..(1 << 20))
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect();
    for cs in [4096u32, 1 << 20] {
        let (ix, _) = built(&noise, cs);
        assert!(ix.chunks.iter().all(|c| c.comp_len <= max_comp_len(cs)));
        assert!(ix.chunks.iter().all(|c| c.comp_len > cs), "noise does not shrink");
    }
}

#[test]
fn chunk_sizes_outside_the_rules_are_refused() {
    for cs in [0u32, 1, 2048, 4095, 5000, 65535, 32 << 20, u32::MAX] {
        assert!(matches!(check_chunk_size(cs), Err(OtaError::ChunkIndex(_))), "{cs}");
        assert!(ChunkBuilder::new(cs, Vec::new()).is_err());
    }
    for cs in [4096u32, DEFAULT_CHUNK_SIZE, 16 << 20] {
        check_chunk_size(cs).unwrap();
    }
}

fn reason(bytes: &[u8], max: u64) -> String {
    match ChunkIndex::parse(bytes, max) {
        Err(OtaError::ChunkIndex(r)) => r,
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn every_header_field_is_checked() {
    let (ix, _) = built(&image(20_000, 5), 4096);
    let good = ix.to_bytes();
    ChunkIndex::parse(&good, 20_000).unwrap();
    let patch = |at: usize, v: &[u8]| {
        let mut b = good.clone();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    assert!(reason(&good[..10], u64::MAX).contains("shorter"));
    assert!(reason(&patch(0, b"LWCX"), u64::MAX).contains("magic"));
    assert!(reason(&patch(4, &[2]), u64::MAX).contains("version"));
    assert!(reason(&patch(5, &[2]), u64::MAX).contains("hash"));
    assert!(reason(&patch(6, &[0, 1]), u64::MAX).contains("reserved"));
    assert!(reason(&patch(8, &5000u32.to_le_bytes()), u64::MAX).contains("power of two"));
    assert!(reason(&good, 19_999).contains("limit"));
    assert!(reason(&patch(12, &30_000u64.to_le_bytes()), u64::MAX).contains("count"));
    assert!(reason(&patch(20, &4u32.to_le_bytes()), u64::MAX).contains("count"));
    assert!(reason(&good[..good.len() - 1], u64::MAX).contains("header says"));
    let mut long = good.clone();
    long.push(0);
    assert!(reason(&long, u64::MAX).contains("header says"));
    let entry0 = HEADER_LEN;
    assert!(reason(&patch(entry0, &0u32.to_le_bytes()), u64::MAX).contains("compressed length"));
    let over = max_comp_len(4096) + 1;
    assert!(reason(&patch(entry0, &over.to_le_bytes()), u64::MAX).contains("compressed length"));
}

#[test]
fn a_huge_count_is_refused_before_any_allocation() {
    // 2^32-1 chunks of 16 MiB claimed in a 24-byte file.
    let mut b = Vec::new();
    write_header(&mut b, MAGIC, 16 << 20, u64::MAX, u32::MAX);
    assert!(reason(&b, u64::MAX).contains("count"));
    let mut b = Vec::new();
    let size = u64::from(u32::MAX) * 4096;
    write_header(&mut b, MAGIC, 4096, size, u32::MAX);
    assert!(reason(&b, u64::MAX).contains("header says"));
}

#[test]
fn inflate_chunk_refuses_wrong_length_hash_and_trailing_bytes() {
    let img = image(10_000, 11);
    let (ix, file) = built(&img, 8192);
    let c = ix.chunks[0];
    let comp = &file[..c.comp_len as usize];
    inflate_chunk(comp, 8192, &c.sha256).unwrap();
    assert!(matches!(inflate_chunk(comp, 8191, &c.sha256), Err(OtaError::ChunkIndex(_))));
    assert!(matches!(inflate_chunk(comp, 8193, &c.sha256), Err(OtaError::ChunkIndex(_))));
    assert!(matches!(inflate_chunk(comp, 8192, &[0; 32]), Err(OtaError::ChunkIndex(_))));
    // Two members where one is wanted.
    assert!(inflate_chunk(&file, 8192, &c.sha256).is_err());
    let mut flipped = comp.to_vec();
    flipped[20] ^= 0xff;
    assert!(inflate_chunk(&flipped, 8192, &c.sha256).is_err());
}

#[test]
fn local_index_matches_the_published_one_and_round_trips() {
    let img = image(150_000, 13);
    let (ix, _) = built(&img, 65536);
    let local = LocalIndex::of_image(&img[..], 65536, u64::MAX).unwrap();
    assert_eq!(local, LocalIndex::from(&ix));
    assert_eq!(local.sha256s.len(), 3);
    assert_eq!(LocalIndex::parse(&local.to_bytes(), u64::MAX).unwrap(), local);
    assert!(ChunkIndex::parse(&local.to_bytes(), u64::MAX).is_err(), "kinds do not mix");
    // A slot larger than its image: only the image's bytes are hashed.
    let mut slot = img.clone();
    slot.extend_from_slice(&[0xee; 10_000]);
    assert_eq!(LocalIndex::of_image(&slot[..], 65536, 150_000).unwrap(), local);
    let by = local.by_hash();
    assert_eq!(by.get(&ix.chunks[2].sha256), Some(&2));
}

proptest! {
    #[test]
    fn random_bytes_never_panic_or_parse_inconsistent(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(ix) = ChunkIndex::parse(&bytes, u64::MAX) {
            prop_assert_eq!(Some(ix.chunks.len() as u32), chunk_count(ix.size, ix.chunk_size));
            prop_assert_eq!(&ix.to_bytes(), &bytes);
        }
        if let Ok(l) = LocalIndex::parse(&bytes, u64::MAX) {
            prop_assert_eq!(Some(l.sha256s.len() as u32), chunk_count(l.size, l.chunk_size));
        }
    }

    #[test]
    fn mutated_headers_never_parse_inconsistent(
        size in 0u64..200_000, at in 0usize..HEADER_LEN, v in any::<u8>(),
    ) {
        let mut b = Vec::new();
        let cs = 4096u32;
        let count = chunk_count(size, cs).unwrap();
        write_header(&mut b, MAGIC, cs, size, count);
        for _ in 0..count {
            b.extend_from_slice(&100u32.to_le_bytes());
            b.extend_from_slice(&[7; 32]);
        }
        b[at] = v;
        if let Ok(ix) = ChunkIndex::parse(&b, u64::MAX) {
            prop_assert_eq!(Some(ix.chunks.len() as u32), chunk_count(ix.size, ix.chunk_size));
            prop_assert_eq!(ix.comp_total(), 100 * u64::from(count));
        }
    }

    #[test]
    fn build_round_trips(len in 0usize..40_000, seed in any::<u64>()) {
        let img = image(len, seed);
        let (ix, file) = built(&img, 4096);
        prop_assert_eq!(ix.size, len as u64);
        prop_assert_eq!(ix.comp_total(), file.len() as u64);
        prop_assert_eq!(ChunkIndex::parse(&ix.to_bytes(), len as u64).unwrap(), ix);
    }
}
