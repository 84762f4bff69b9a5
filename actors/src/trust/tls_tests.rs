//! Loopback TLS tests of `JitVerifier`: a rustls server on 127.0.0.1 with
//! a generated root -> intermediate -> leaf chain, a rustls client whose
//! only trust is a cert dir looked up just in time.

use std::sync::Arc;

use rustls::{CertificateError, Error};

use super::cache::HostCache;
use super::testpki::{connect, forged_root, logger, pem_dir, pki, serve, Pki};
use super::*;

fn verifier_over(dir: &std::path::Path, cache_max_bytes: usize) -> Arc<JitVerifier> {
    let config = TrustConfig {
        sources: vec![TrustSource::CertDir(dir.into())],
        cache_max_bytes,
        ..TrustConfig::default()
    };
    let store = Arc::new(TrustStore::open(&logger(), &config).unwrap());
    Arc::new(JitVerifier::new(&logger(), store))
}

fn serve_chain(p: &Pki, with_intermediate: bool) -> std::net::SocketAddr {
    let mut chain = vec![p.leaf.clone()];
    if with_intermediate {
        chain.push(p.inter.clone());
    }
    serve(chain, p.leaf_key.clone_key())
}

#[test]
fn first_connection_succeeds_and_the_second_uses_the_cache() {
    let p = pki(&["localhost"]);
    let dir = pem_dir(&[&p.root]);
    let v = verifier_over(dir.path(), DEFAULT_CACHE_MAX_BYTES);
    let addr = serve_chain(&p, true);

    connect(addr, "localhost", v.clone()).unwrap();
    let info = v.store().info();
    assert_eq!((info.cache.hits, info.cache.misses), (0, 1));
    assert_eq!(info.cache.hosts, 1);
    assert!(v.store().is_cached("localhost"));

    connect(addr, "localhost", v.clone()).unwrap();
    let info = v.store().info();
    assert_eq!((info.cache.hits, info.cache.misses), (1, 1), "second connection hit the cache");
}

#[test]
fn wrong_host_name_fails() {
    let p = pki(&["localhost"]);
    let dir = pem_dir(&[&p.root]);
    let v = verifier_over(dir.path(), DEFAULT_CACHE_MAX_BYTES);
    let addr = serve_chain(&p, true);
    let e = connect(addr, "other.test", v.clone()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{e:?}"
    );
    assert!(!v.store().is_cached("other.test"));
}

#[test]
fn forged_root_reusing_the_real_skid_fails_the_signature_check() {
    let p = pki(&["localhost"]);
    let dir = pem_dir(&[&forged_root(&p)]);
    let v = verifier_over(dir.path(), DEFAULT_CACHE_MAX_BYTES);
    // The lookup by SKID does find the forged root...
    assert_eq!(v.store().lookup(&p.root_skid).unwrap().certs.len(), 1);
    let addr = serve_chain(&p, true);
    // ...but it did not sign the intermediate.
    let e = connect(addr, "localhost", v.clone()).unwrap_err();
    assert_eq!(e, Error::InvalidCertificate(CertificateError::BadSignature), "{e:?}");
    assert!(!v.store().is_cached("localhost"));
}

#[test]
fn a_chain_without_its_intermediate_fails() {
    let p = pki(&["localhost"]);
    let dir = pem_dir(&[&p.root]);
    let v = verifier_over(dir.path(), DEFAULT_CACHE_MAX_BYTES);
    let addr = serve_chain(&p, false);
    let e = connect(addr, "localhost", v).unwrap_err();
    assert_eq!(e, Error::InvalidCertificate(CertificateError::UnknownIssuer));
}

#[test]
fn an_expired_root_is_found_but_not_trusted() {
    let p = pki(&["localhost"]);
    // Same key and SKID as the real root, but expired: only the validity
    // differs, so a failure here is the verifier ignoring expired CAs.
    let dir = pem_dir(&[&super::testpki::expired_twin(&p)]);
    let v = verifier_over(dir.path(), DEFAULT_CACHE_MAX_BYTES);
    assert!(v.store().lookup(&p.root_skid).unwrap().certs[0].expired);
    let addr = serve_chain(&p, true);
    let e = connect(addr, "localhost", v).unwrap_err();
    assert_eq!(e, Error::InvalidCertificate(CertificateError::UnknownIssuer));
}

#[test]
fn cache_footprint_bound_evicts_the_least_recently_used_host() {
    let p = pki(&["a.test", "b.test", "c.test"]);
    let dir = pem_dir(&[&p.root]);
    let per_host = HostCache::cost("a.test", std::slice::from_ref(&p.root_skid));
    let v = verifier_over(dir.path(), per_host * 2);
    let addr = serve_chain(&p, true);

    connect(addr, "a.test", v.clone()).unwrap();
    connect(addr, "b.test", v.clone()).unwrap();
    connect(addr, "a.test", v.clone()).unwrap(); // a is now the most recent
    connect(addr, "c.test", v.clone()).unwrap();

    let s = v.store();
    assert!(s.is_cached("a.test"));
    assert!(!s.is_cached("b.test"), "b was least recently used");
    assert!(s.is_cached("c.test"));
    let info = s.info();
    assert_eq!(info.cache.evictions, 1);
    assert_eq!(info.cache.hits, 1);
    assert!(info.cache.bytes <= info.cache.max_bytes);
}

#[test]
fn akids_are_tried_top_most_first_across_the_whole_chain() {
    let p = pki(&["localhost"]);
    let akids = super::verifier::chain_akids(&p.leaf, std::slice::from_ref(&p.inter));
    let inter_skid =
        super::table::skid_of(&super::table::parse_cert(&p.inter).unwrap()).unwrap().to_vec();
    assert_eq!(akids, vec![p.root_skid.clone(), inter_skid.clone()]);
    // Sent out of order, the path is still sorted.
    let akids = super::verifier::chain_akids(&p.leaf, &[p.root.clone(), p.inter.clone()]);
    assert_eq!(akids, vec![p.root_skid.clone(), inter_skid]);
}
