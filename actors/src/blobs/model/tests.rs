//! Tests of the pure blob model: every operation and edge, and a property
//! test against a plain `Vec<u8>` per blob.

use bytes::Bytes;
use lwsys_messages::blobs::{BlobError, BlobId, BlobKind, ALL_KINDS};
use proptest::prelude::*;

use super::BlobModel;

const SERIAL: BlobId = BlobId::new(BlobKind::DeviceSerial, 0);
const NTP: BlobId = BlobId::new(BlobKind::NtpServer, 0);

fn read_all(m: &BlobModel, id: BlobId) -> Vec<u8> {
    m.get(id, 0, usize::MAX).unwrap().data.to_vec()
}

#[test]
fn empty_blob_has_size_zero_and_reads_nothing_at_offset_zero() {
    let m = BlobModel::default();
    assert_eq!(m.size(SERIAL).unwrap(), 0);
    let got = m.get(SERIAL, 0, 16).unwrap();
    assert!(got.data.is_empty());
    assert_eq!(got.size, 0);
    assert!(matches!(m.get(SERIAL, 1, 16), Err(BlobError::OffsetPastEnd { size: 0, .. })));
}

#[test]
fn append_chains_chunks_and_size_is_their_total() {
    let mut m = BlobModel::default();
    assert_eq!(m.append(SERIAL, b"abc").unwrap(), 3);
    assert_eq!(m.append(SERIAL, b"de").unwrap(), 5);
    assert_eq!(m.chunks(SERIAL).unwrap(), 2);
    assert_eq!(read_all(&m, SERIAL), b"abcde");
    // An empty chunk adds nothing, not even an empty link.
    assert_eq!(m.append(SERIAL, b"").unwrap(), 5);
    assert_eq!(m.chunks(SERIAL).unwrap(), 2);
}

#[test]
fn get_at_the_end_is_out_of_range() {
    let mut m = BlobModel::default();
    m.append(SERIAL, b"abc").unwrap();
    let e = m.get(SERIAL, 3, 1).unwrap_err();
    assert_eq!(e, BlobError::OffsetPastEnd { id: SERIAL, offset: 3, size: 3 });
    assert!(m.get(SERIAL, usize::MAX, usize::MAX).is_err());
}

#[test]
fn get_inside_the_last_chunk_reads_its_tail() {
    let mut m = BlobModel::default();
    m.append(SERIAL, b"abc").unwrap();
    m.append(SERIAL, b"defg").unwrap();
    let got = m.get(SERIAL, 5, 10).unwrap();
    assert_eq!(&got.data[..], b"fg");
    assert_eq!(got.size, 7);
}

#[test]
fn get_spanning_chunks_with_len_larger_than_the_rest_is_cut_short() {
    let mut m = BlobModel::default();
    for c in [&b"ab"[..], b"cd", b"ef"] {
        m.append(SERIAL, c).unwrap();
    }
    assert_eq!(&m.get(SERIAL, 1, 4).unwrap().data[..], b"bcde");
    assert_eq!(&m.get(SERIAL, 1, 100).unwrap().data[..], b"bcdef");
    assert_eq!(&m.get(SERIAL, 2, 0).unwrap().data[..], b"");
}

#[test]
fn single_view_on_zero_one_and_two_chunks() {
    let mut m = BlobModel::default();
    assert!(m.view(SERIAL).unwrap().data.is_empty());
    m.append(SERIAL, b"one").unwrap();
    let v = m.view(SERIAL).unwrap();
    assert_eq!(&v.data[..], b"one");
    // The view shares the chunk rather than copying it.
    assert_eq!(v.data.as_ptr(), m.view(SERIAL).unwrap().data.as_ptr());
    m.append(SERIAL, b"two").unwrap();
    assert_eq!(m.view(SERIAL).unwrap_err(), BlobError::NotSingle { id: SERIAL, chunks: 2 });
}

#[test]
fn direct_set_shares_the_callers_bytes() {
    let mut m = BlobModel::default();
    let data = Bytes::from_static(b"serial-1234");
    assert_eq!(m.set_direct(SERIAL, data.clone()).unwrap(), 11);
    assert!(m.is_direct(SERIAL).unwrap());
    assert_eq!(m.view(SERIAL).unwrap().data.as_ptr(), data.as_ptr());
    assert_eq!(&m.get(SERIAL, 7, 2).unwrap().data[..], b"12");
    assert!(m.get(SERIAL, 11, 1).is_err());
}

#[test]
fn direct_then_heap_append_keeps_the_direct_bytes_as_a_copy() {
    let mut m = BlobModel::default();
    let data = Bytes::from_static(b"abc");
    m.set_direct(SERIAL, data.clone()).unwrap();
    assert_eq!(m.append(SERIAL, b"def").unwrap(), 6);
    assert!(!m.is_direct(SERIAL).unwrap());
    assert_eq!(m.chunks(SERIAL).unwrap(), 2);
    assert_eq!(read_all(&m, SERIAL), b"abcdef");
    assert_eq!(m.raw_contents(SERIAL).unwrap(), b"abcdef");
}

#[test]
fn heap_set_after_direct_replaces_it() {
    let mut m = BlobModel::default();
    m.set_direct(SERIAL, Bytes::from_static(b"old")).unwrap();
    m.set(SERIAL, b"new!").unwrap();
    assert!(!m.is_direct(SERIAL).unwrap());
    assert_eq!(read_all(&m, SERIAL), b"new!");
    assert_eq!(m.chunks(SERIAL).unwrap(), 1);
}

#[test]
fn destroy_then_get_reads_an_empty_blob() {
    let mut m = BlobModel::default();
    m.append(SERIAL, b"abc").unwrap();
    assert_eq!(m.destroy(SERIAL).unwrap(), 0);
    assert_eq!(m.size(SERIAL).unwrap(), 0);
    assert!(m.get(SERIAL, 0, 8).unwrap().data.is_empty());
    assert!(m.get(SERIAL, 1, 8).is_err());
    m.set_direct(SERIAL, Bytes::from_static(b"d")).unwrap();
    m.destroy(SERIAL).unwrap();
    assert!(!m.is_direct(SERIAL).unwrap());
    // And the blob is usable again.
    m.append(SERIAL, b"z").unwrap();
    assert_eq!(read_all(&m, SERIAL), b"z");
}

#[test]
fn empty_removes_contents() {
    let mut m = BlobModel::default();
    m.append(SERIAL, b"abc").unwrap();
    m.append(SERIAL, b"abc").unwrap();
    assert_eq!(m.empty(SERIAL).unwrap(), 0);
    assert_eq!(m.chunks(SERIAL).unwrap(), 0);
}

#[test]
fn idx_is_checked_against_each_kinds_own_slots() {
    let mut m = BlobModel::default();
    for kind in ALL_KINDS {
        for idx in 0..kind.slots() {
            m.set(BlobId::new(kind, idx), kind.name().as_bytes()).unwrap();
        }
        let bad = BlobId::new(kind, kind.slots());
        let e = BlobError::IdxOutOfRange { kind, idx: kind.slots(), slots: kind.slots() };
        assert_eq!(m.size(bad).unwrap_err(), e);
        assert_eq!(m.append(bad, b"x").unwrap_err(), e);
        assert_eq!(m.set_direct(bad, Bytes::new()).unwrap_err(), e);
        assert_eq!(m.get(bad, 0, 1).unwrap_err(), e);
        assert_eq!(m.view(bad).unwrap_err(), e);
        assert_eq!(m.destroy(bad).unwrap_err(), e);
        assert!(m.size(BlobId::new(kind, usize::MAX)).is_err());
    }
    // Each slot kept its own value: no slot aliases another kind's.
    for kind in ALL_KINDS {
        for idx in 0..kind.slots() {
            assert_eq!(read_all(&m, BlobId::new(kind, idx)), kind.name().as_bytes());
        }
    }
}

#[test]
fn auth_slots_are_independent() {
    let mut m = BlobModel::default();
    m.set(BlobId::new(BlobKind::Auth, 0), b"registration").unwrap();
    m.set(BlobId::new(BlobKind::Auth, 1), b"token").unwrap();
    assert_eq!(read_all(&m, BlobId::new(BlobKind::Auth, 0)), b"registration");
    assert_eq!(read_all(&m, BlobId::new(BlobKind::Auth, 1)), b"token");
}

#[test]
fn too_large_leaves_the_blob_unchanged() {
    let mut m = BlobModel::new(8);
    m.append(SERIAL, b"12345").unwrap();
    let e = m.append(SERIAL, b"6789").unwrap_err();
    assert_eq!(e, BlobError::TooLarge { id: SERIAL, size: 9, max: 8 });
    assert_eq!(read_all(&m, SERIAL), b"12345");
    assert!(m.set(SERIAL, b"123456789").is_err());
    assert_eq!(read_all(&m, SERIAL), b"12345");
    assert!(m.set_direct(SERIAL, Bytes::from_static(b"123456789")).is_err());
    assert_eq!(read_all(&m, SERIAL), b"12345");
    // Exactly the limit is fine, and set replaces rather than adds.
    assert_eq!(m.set(SERIAL, b"12345678").unwrap(), 8);
}

#[test]
fn ntp_server_reads_the_default_whenever_empty() {
    let mut m = BlobModel::default();
    assert_eq!(m.size(NTP).unwrap(), 12);
    assert_eq!(read_all(&m, NTP), b"pool.ntp.org");
    assert_eq!(&m.view(NTP).unwrap().data[..], b"pool.ntp.org");
    assert_eq!(&m.get(NTP, 5, 3).unwrap().data[..], b"ntp");
    m.set(NTP, b"time.example").unwrap();
    assert_eq!(read_all(&m, NTP), b"time.example");
    assert_eq!(m.empty(NTP).unwrap(), 12);
    assert_eq!(read_all(&m, NTP), b"pool.ntp.org");
    // Appending to the empty blob starts from nothing, not the default.
    m.append(NTP, b"a.b").unwrap();
    assert_eq!(read_all(&m, NTP), b"a.b");
    assert_eq!(m.raw_contents(NTP).unwrap(), b"a.b");
    m.empty(NTP).unwrap();
    assert!(m.raw_contents(NTP).unwrap().is_empty());
}

#[test]
fn restore_puts_back_one_chunk() {
    let mut m = BlobModel::new(2);
    assert_eq!(m.restore(SERIAL, b"longer than max".to_vec()).unwrap(), 15);
    assert_eq!(m.chunks(SERIAL).unwrap(), 1);
    assert_eq!(&m.view(SERIAL).unwrap().data[..], b"longer than max");
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Op {
    Set(usize, Vec<u8>),
    Direct(usize, Vec<u8>),
    Append(usize, Vec<u8>),
    Empty(usize),
    Destroy(usize),
    Get(usize, usize, usize),
    Size(usize),
    View(usize),
}

/// The blobs the property test uses: two AUTH slots and a plain kind.
const IDS: [BlobId; 3] = [
    BlobId::new(BlobKind::Auth, 0),
    BlobId::new(BlobKind::Auth, 1),
    BlobId::new(BlobKind::DeviceSerial, 0),
];
const MAX: usize = 32;

fn op() -> impl Strategy<Value = Op> {
    let b = 0..IDS.len();
    let data = proptest::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        1 => (b.clone(), data.clone()).prop_map(|(b, d)| Op::Set(b, d)),
        1 => (b.clone(), data.clone()).prop_map(|(b, d)| Op::Direct(b, d)),
        3 => (b.clone(), data).prop_map(|(b, d)| Op::Append(b, d)),
        1 => b.clone().prop_map(Op::Empty),
        1 => b.clone().prop_map(Op::Destroy),
        3 => (b.clone(), 0..80usize, 0..80usize).prop_map(|(b, o, l)| Op::Get(b, o, l)),
        1 => b.clone().prop_map(Op::Size),
        1 => b.prop_map(Op::View),
    ]
}

proptest! {
    #[test]
    fn model_matches_a_plain_vec(ops in proptest::collection::vec(op(), 1..60)) {
        let mut m = BlobModel::new(MAX);
        let mut plain: [Vec<u8>; 3] = Default::default();
        // Whether each blob is one piece (so a single view must work).
        let mut pieces = [0usize; 3];
        for op in ops {
            match op {
                Op::Set(b, d) if d.len() > MAX => {
                    prop_assert!(m.set(IDS[b], &d).is_err());
                }
                Op::Direct(b, d) if d.len() > MAX => {
                    prop_assert!(m.set_direct(IDS[b], Bytes::from(d)).is_err());
                }
                Op::Set(b, d) => {
                    prop_assert_eq!(m.set(IDS[b], &d).unwrap(), d.len());
                    pieces[b] = usize::from(!d.is_empty());
                    plain[b] = d;
                }
                Op::Direct(b, d) => {
                    prop_assert_eq!(m.set_direct(IDS[b], Bytes::from(d.clone())).unwrap(), d.len());
                    pieces[b] = usize::from(!d.is_empty());
                    plain[b] = d;
                }
                Op::Append(b, d) => {
                    let r = m.append(IDS[b], &d);
                    if plain[b].len() + d.len() > MAX {
                        prop_assert!(
                            matches!(r, Err(BlobError::TooLarge { .. })),
                            "expected TooLarge, got {:?}", r
                        );
                    } else {
                        if !d.is_empty() {
                            pieces[b] += 1;
                        }
                        plain[b].extend_from_slice(&d);
                        prop_assert_eq!(r.unwrap(), plain[b].len());
                    }
                }
                Op::Empty(b) => {
                    prop_assert_eq!(m.empty(IDS[b]).unwrap(), 0);
                    plain[b].clear();
                    pieces[b] = 0;
                }
                Op::Destroy(b) => {
                    prop_assert_eq!(m.destroy(IDS[b]).unwrap(), 0);
                    plain[b].clear();
                    pieces[b] = 0;
                }
                Op::Get(b, o, l) => {
                    let v = &plain[b];
                    match m.get(IDS[b], o, l) {
                        Ok(got) => {
                            prop_assert!(o < v.len() || (o == 0 && v.is_empty()));
                            let end = v.len().min(o + l);
                            prop_assert_eq!(&got.data[..], &v[o..end]);
                            prop_assert_eq!(got.size, v.len());
                        }
                        Err(e) => {
                            prop_assert!(o >= v.len() && !(o == 0 && v.is_empty()), "{}", e);
                        }
                    }
                }
                Op::Size(b) => prop_assert_eq!(m.size(IDS[b]).unwrap(), plain[b].len()),
                Op::View(b) => match m.view(IDS[b]) {
                    Ok(v) => {
                        prop_assert!(pieces[b] <= 1);
                        prop_assert_eq!(&v.data[..], &plain[b][..]);
                    }
                    Err(_) => prop_assert!(pieces[b] > 1),
                },
            }
        }
    }
}
