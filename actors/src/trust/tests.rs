//! Tests of the trust backends, the store and `TrustService` against the
//! real Mozilla TBLB fixture, the machine's `/etc/ssl/certs`, corrupt blobs
//! and generated certificates.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use bytes::Bytes;
use lwsys_messages::trust::{GetTrustInfo, QueryTrust, TrustError};
use lwsys_messages::ErrorCode;
use proptest::prelude::*;

use super::table::{parse_cert, skid_of};
use super::testpki::{fixture_path, logger, pem, pki};
use super::*;

/// A time (2026-09-21) after the 8th fixture root expired and before the
/// 9th (2026-11-27) does; "now" drifts past it, so counts are pinned here.
const PINNED_NOW: i64 = 1_790_000_000;

fn fixture() -> Bytes {
    Bytes::from(std::fs::read(fixture_path()).unwrap())
}

fn blob() -> TblbBackend {
    TblbBackend::parse("fixture", fixture()).unwrap()
}

fn store_of(backends: Vec<Box<dyn TrustBackend>>) -> TrustStore {
    TrustStore::new(&logger(), backends, DEFAULT_CACHE_TTL, DEFAULT_CACHE_MAX_BYTES)
}

#[test]
fn fixture_blob_holds_128_certs_with_126_distinct_skids_equal_to_their_extension() {
    let b = blob();
    let info = b.info();
    assert_eq!(info.certs, 128);
    assert_eq!(info.without_skid, 2);
    assert_eq!(info.bytes, 142_896);
    assert_eq!(b.generated(), 1_623_651_090);
    let mut skids = HashSet::new();
    for (der, stored) in b.iter() {
        let cert = parse_cert(der).expect("every fixture DER parses");
        match skid_of(&cert) {
            Some(ext) => {
                assert_eq!(stored.len(), 20);
                assert_eq!(stored, ext, "stored SKID equals the extension");
                assert!(skids.insert(stored.to_vec()), "SKIDs are distinct");
            }
            None => assert!(stored.is_empty(), "no extension, no stored SKID"),
        }
    }
    assert_eq!(skids.len(), 126);
}

#[test]
fn every_indexed_fixture_skid_is_found_and_only_its_cert_comes_back() {
    let b = blob();
    let store = store_of(vec![Box::new(b.clone())]);
    for (der, skid) in b.iter().filter(|(_, s)| !s.is_empty()) {
        let found = store.lookup(skid).unwrap();
        assert_eq!(found.certs.len(), 1);
        assert_eq!(&found.certs[0].der[..], der);
        assert_eq!(found.certs[0].backend, "fixture");
        assert!(!found.certs[0].subject.is_empty());
    }
}

#[test]
fn random_and_prefix_skids_are_not_found() {
    let b = blob();
    let store = store_of(vec![Box::new(b.clone())]);
    let random: Vec<u8> = (0..20).map(|_| rand::random::<u8>()).collect();
    assert!(b.iter().all(|(_, s)| s != &random[..]));
    let e = store.lookup(&random).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    // Upstream matches prefixes; we match exactly.
    let (_, skid) = b.iter().find(|(_, s)| !s.is_empty()).unwrap();
    assert!(store.lookup(&skid[..10]).is_err());
    assert!(store.lookup(&[]).is_err());
}

#[test]
fn eight_fixture_roots_are_expired_and_reported_not_dropped() {
    let b = blob();
    let describe_all = |now| -> Vec<lwsys_messages::trust::TrustedCert> {
        b.iter()
            .map(|(der, _)| super::store::describe(Bytes::copy_from_slice(der), "f", now).unwrap())
            .collect()
    };
    let expired = |now| describe_all(now).iter().filter(|c| c.expired).count();
    assert_eq!(expired(PINNED_NOW), 8);
    let now = unix_now();
    assert!(expired(now) >= 8, "{}", expired(now));
    for c in describe_all(now) {
        assert_eq!(c.expired, c.not_after < now, "{}", c.subject);
        assert!(c.not_before < c.not_after);
    }
    // The store reports expired certificates rather than dropping them.
    let store = store_of(vec![Box::new(b.clone())]);
    let indexed_expired = b
        .iter()
        .filter(|(_, s)| !s.is_empty())
        .filter(|(_, s)| store.lookup_at(s, PINNED_NOW).unwrap().certs[0].expired)
        .count();
    let unindexed_expired = b
        .iter()
        .filter(|(_, s)| s.is_empty())
        .filter(|(d, _)| {
            super::store::describe(Bytes::copy_from_slice(d), "f", PINNED_NOW).unwrap().expired
        })
        .count();
    assert_eq!(indexed_expired + unindexed_expired, 8);
}

// ---- corrupt blobs ----

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn parse(b: Vec<u8>) -> Result<TblbBackend, TblbError> {
    TblbBackend::parse("corrupt", Bytes::from(b))
}

#[test]
fn bad_magic_is_rejected() {
    let mut b = fixture().to_vec();
    b[0] = b'X';
    assert!(matches!(parse(b), Err(TblbError::BadMagic { found }) if &found == b"XBLB"));
}

#[test]
fn wrong_version_is_rejected() {
    let mut b = fixture().to_vec();
    b[5] = 2;
    assert_eq!(parse(b).unwrap_err(), TblbError::UnsupportedVersion(2));
}

#[test]
fn truncated_blobs_are_rejected() {
    let b = fixture().to_vec();
    let e = parse(b[..b.len() - 1].to_vec()).unwrap_err();
    assert_eq!(e, TblbError::LengthMismatch { header: 142_896, actual: 142_895 });
    assert!(e.to_string().contains("142896"), "{e}");
    assert_eq!(parse(b[..27].to_vec()).unwrap_err(), TblbError::TooShort { len: 27 });
    assert_eq!(parse(Vec::new()).unwrap_err(), TblbError::TooShort { len: 0 });
}

#[test]
fn offsets_past_the_end_are_rejected() {
    let orig = fixture().to_vec();
    for (field, table) in
        [(0x0c, "DER length table"), (0x10, "SKID length table"), (0x14, "SKID table")]
    {
        for bad in [orig.len() as u32, u32::MAX - 1] {
            let mut b = orig.clone();
            put_u32(&mut b, field, bad);
            match parse(b) {
                Err(TblbError::OutOfBounds { table: t, .. }) => assert_eq!(t, table),
                other => panic!("{table} at {bad}: {other:?}"),
            }
        }
    }
}

#[test]
fn tables_that_do_not_fill_the_blob_are_rejected() {
    // One stray byte after the SKID table (total length adjusted).
    let mut b = fixture().to_vec();
    b.push(0);
    let len = b.len() as u32;
    put_u32(&mut b, 0x18, len);
    let e = parse(b).unwrap_err();
    assert!(matches!(e, TblbError::Gap { region: "SKID table", .. }), "{e:?}");
    assert!(e.to_string().contains("SKID table ends at 142896"), "{e}");

    // SKID table shifted by one: the SKID length table no longer meets it.
    let mut b = fixture().to_vec();
    let off = u32::from_be_bytes(b[0x14..0x18].try_into().unwrap());
    put_u32(&mut b, 0x14, off - 1);
    assert!(matches!(parse(b), Err(TblbError::Gap { region: "SKID length table", .. })));

    // A DER length one short: the certificates end before the tables.
    let mut b = fixture().to_vec();
    let dlo = u32::from_be_bytes(b[0x0c..0x10].try_into().unwrap()) as usize;
    b[dlo + 1] -= 1;
    assert!(matches!(parse(b), Err(TblbError::Gap { region: "DER certificates", .. })));
}

#[test]
fn lengths_that_split_certificates_wrongly_are_rejected() {
    // Move one byte from cert 0's length to cert 1's: the totals still
    // tile, but cert 0's DER header disagrees.
    let mut b = fixture().to_vec();
    let dlo = u32::from_be_bytes(b[0x0c..0x10].try_into().unwrap()) as usize;
    let l0 = u16::from_be_bytes([b[dlo], b[dlo + 1]]);
    let l1 = u16::from_be_bytes([b[dlo + 2], b[dlo + 3]]);
    b[dlo..dlo + 2].copy_from_slice(&(l0 - 1).to_be_bytes());
    b[dlo + 2..dlo + 4].copy_from_slice(&(l1 + 1).to_be_bytes());
    assert!(matches!(parse(b), Err(TblbError::BadCert { index: 0, .. })));
}

#[test]
fn zero_certs_is_rejected() {
    let mut b = fixture().to_vec();
    b[6] = 0;
    b[7] = 0;
    assert_eq!(parse(b).unwrap_err(), TblbError::NoCerts);
}

#[test]
fn a_missing_or_malformed_blob_file_is_a_typed_error() {
    let e = TblbBackend::open(Path::new("/nonexistent/trust.tblb")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Io);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.tblb");
    std::fs::write(&p, b"TBLB\0\x02").unwrap();
    let e = TblbBackend::open(&p).unwrap_err();
    assert!(matches!(e, TrustError::Malformed { .. }), "{e:?}");
    assert!(e.to_string().contains("shorter than the 28-byte header"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn corrupted_header_or_tables_never_panic(
        edits in prop::collection::vec((0usize..142_896, any::<u8>()), 1..6),
        cut in 0usize..142_897,
    ) {
        let mut b = fixture().to_vec();
        for (at, v) in edits {
            // Mostly hit the header and the tables, where layout lives.
            let at = if at % 2 == 0 { at % 0x1c } else { 0x222d8 + at % (142_896 - 0x222d8) };
            b[at] = v;
        }
        b.truncate(cut.max(b.len() / 2));
        if let Ok(t) = parse(b) {
            for (_, skid) in t.iter() {
                let _ = t.lookup(skid);
            }
        }
    }
}

// ---- certificate directories ----

#[test]
fn cert_dir_reads_pem_der_bundles_and_links_and_counts_what_it_skips() {
    let a = pki(&["a.test"]);
    let b = pki(&["b.test"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a.pem"), pem(&a.root)).unwrap();
    std::fs::write(d.join("b.der"), &b.root[..]).unwrap();
    std::fs::write(d.join("bundle.crt"), pem(&a.inter) + &pem(&a.root)).unwrap();
    std::fs::write(d.join("leaf.pem"), pem(&a.leaf)).unwrap();
    std::fs::write(d.join("README"), "not a cert").unwrap();
    std::os::unix::fs::symlink(d.join("a.pem"), d.join("1234abcd.0")).unwrap();
    std::os::unix::fs::symlink(d.join("gone.pem"), d.join("dangling.0")).unwrap();
    std::fs::create_dir(d.join("java")).unwrap();

    let back = CertDirBackend::open(d).unwrap();
    let info = back.info();
    // a.root, a.inter, b.root, and the leaf (which has no SKID).
    assert_eq!(info.certs, 4);
    assert_eq!(info.without_skid, 1);
    assert_eq!(info.skipped, 2, "README and the dangling link");
    assert_eq!(back.duplicates(), 1, "a.root again in the bundle");
    assert_eq!(back.lookup(&a.root_skid), vec![Bytes::from(a.root.to_vec())]);
    assert_eq!(back.lookup(&b.root_skid), vec![Bytes::from(b.root.to_vec())]);
    assert_eq!(CertDirBackend::open(&d.join("nope")).unwrap_err().code(), ErrorCode::Io);
}

#[test]
fn system_cert_dir_finds_every_cert_with_a_skid_and_both_roots_sharing_one() {
    let dir = Path::new("/etc/ssl/certs");
    if !dir.is_dir() {
        println!("skipped: /etc/ssl/certs is absent on this machine");
        return;
    }
    let back = CertDirBackend::open(dir).unwrap();
    let info = back.info();
    println!("/etc/ssl/certs: {info:?}, {} duplicates", back.duplicates());
    if info.certs == 0 {
        println!("skipped: /etc/ssl/certs holds no certificates");
        return;
    }
    let mut by_skid: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for (der, skid) in back.iter() {
        let cert = parse_cert(der).unwrap();
        assert_eq!(skid_of(&cert).unwrap_or_default(), skid);
        if !skid.is_empty() {
            by_skid.entry(skid.to_vec()).or_default().push(der.to_vec());
        }
    }
    let store = store_of(vec![Box::new(back)]);
    for (skid, ders) in &by_skid {
        let found = store.lookup(skid).unwrap();
        let got: Vec<Vec<u8>> = found.certs.iter().map(|c| c.der.to_vec()).collect();
        assert_eq!(&got, ders, "every cert with SKID {}", hex::encode(skid));
    }
    let shared: Vec<_> = by_skid.iter().filter(|(_, d)| d.len() > 1).collect();
    println!("SKIDs shared by several roots: {}", shared.len());
    for (skid, ders) in shared {
        let found = store.lookup(skid).unwrap();
        assert_eq!(found.certs.len(), ders.len());
        for c in &found.certs {
            println!("  {} {} expired={}", hex::encode(skid), c.subject, c.expired);
        }
    }
}

// ---- the store ----

#[test]
fn store_queries_backends_in_order_and_reports_a_cert_once() {
    let p = pki(&["a.test"]);
    let dir1 = super::testpki::pem_dir(&[&p.root]);
    let dir2 = super::testpki::pem_dir(&[&p.root, &p.inter]);
    let config = TrustConfig {
        sources: vec![
            TrustSource::Blob(fixture_path()),
            TrustSource::CertDir(dir1.path().into()),
            TrustSource::CertDir(dir2.path().into()),
        ],
        ..TrustConfig::default()
    };
    let store = TrustStore::open(&logger(), &config).unwrap();
    let found = store.lookup(&p.root_skid).unwrap();
    assert_eq!(found.certs.len(), 1, "the same root from two dirs is one answer");
    assert_eq!(found.certs[0].backend, dir1.path().display().to_string());
    let info = store.info();
    let counts: Vec<usize> = info.backends.iter().map(|b| b.certs).collect();
    assert_eq!(counts, vec![128, 1, 2]);
    assert_eq!(info.backends[0].kind, "tblb");
    assert_eq!(info.backends[1].kind, "cert_dir");
    assert_eq!(info.cache.ttl_secs, 3600);
}

#[tokio::test(start_paused = true)]
async fn store_cache_entries_expire_after_the_configured_ttl_on_tokio_time() {
    let store = TrustStore::new(&logger(), Vec::new(), Duration::from_secs(3600), 4096);
    store.remember("a.test", vec![vec![1; 20]]);
    tokio::time::advance(Duration::from_secs(3599)).await;
    assert_eq!(store.cached_skids("a.test"), Some(vec![vec![1; 20]]));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(store.cached_skids("a.test"), None);
    assert_eq!(store.info().cache.hosts, 0);
}

#[test]
fn a_bad_source_fails_the_store_with_its_path() {
    let config = TrustConfig {
        sources: vec![TrustSource::Blob("/nonexistent.tblb".into())],
        ..TrustConfig::default()
    };
    let e = TrustStore::open(&logger(), &config).unwrap_err();
    assert!(e.to_string().contains("/nonexistent.tblb"), "{e}");
}

#[test]
fn config_reads_from_toml_with_documented_defaults() {
    let c: TrustConfig = serde_json::from_value(serde_json::json!({
        "sources": [{"blob": "/a.tblb"}, {"cert_dir": "/etc/ssl/certs"}]
    }))
    .unwrap();
    assert_eq!(
        c.sources,
        vec![TrustSource::Blob("/a.tblb".into()), TrustSource::CertDir("/etc/ssl/certs".into())]
    );
    assert_eq!(c.cache_ttl_secs, 3600);
    assert_eq!(c.cache_max_bytes, DEFAULT_CACHE_MAX_BYTES);
}

// ---- the service ----

#[actix_rt::test]
async fn trust_service_answers_queries_from_the_fixture() {
    let config =
        TrustConfig { sources: vec![TrustSource::Blob(fixture_path())], ..TrustConfig::default() };
    let svc = TrustService::open(&logger(), &config).unwrap();
    assert!(svc.store().is_some());
    let addr = svc.start();
    let (_, skid) =
        blob().iter().find(|(_, s)| !s.is_empty()).map(|(d, s)| (d.to_vec(), s.to_vec())).unwrap();
    let found = addr.send(QueryTrust { skid: skid.clone() }).await.unwrap().unwrap();
    assert_eq!(found.certs.len(), 1);
    let json = serde_json::to_value(&found.certs[0]).unwrap();
    assert!(json["der_b64"].as_str().unwrap().starts_with("MII"));

    let e = addr.send(QueryTrust { skid: vec![0; 20] }).await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    let e = addr.send(QueryTrust { skid: vec![] }).await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest);

    let info = addr.send(GetTrustInfo).await.unwrap();
    assert_eq!(info.backends.len(), 1);
    assert_eq!((info.backends[0].certs, info.backends[0].without_skid), (128, 2));
}

#[actix_rt::test]
async fn a_custom_trust_query_replaces_the_default_and_may_answer_later() {
    let p = pki(&["a.test"]);
    let root = Bytes::from(p.root.to_vec());
    let want = p.root_skid.clone();
    let query = move |skid: &[u8]| -> TrustReply {
        let hit = skid == &want[..];
        let skid = skid.to_vec();
        let root = root.clone();
        Box::pin(async move {
            // Answered from another task after a delay, as a device that
            // reads its CA from flash would.
            tokio::time::sleep(Duration::from_millis(1)).await;
            if !hit {
                return Err(TrustError::not_found(&skid));
            }
            Ok(lwsys_messages::trust::TrustedCerts {
                certs: vec![lwsys_messages::trust::TrustedCert {
                    der: root,
                    subject: "CN=lwsys test root".into(),
                    not_before: 0,
                    not_after: i64::MAX,
                    expired: false,
                    backend: "custom".into(),
                }],
            })
        })
    };
    let addr = TrustService::with_query(&logger(), Arc::new(query)).start();
    let found = addr.send(QueryTrust { skid: p.root_skid.clone() }).await.unwrap().unwrap();
    assert_eq!(found.certs[0].backend, "custom");
    let e = addr.send(QueryTrust { skid: vec![1; 20] }).await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert!(addr.send(GetTrustInfo).await.unwrap().backends.is_empty());
}
