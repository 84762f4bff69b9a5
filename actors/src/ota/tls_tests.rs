//! OTA over HTTPS: the repository served over TLS on 127.0.0.1, trusted
//! through `[ota] ca_file` or the trust store's just-in-time verifier.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::tests::{log, Fixture, VARIANT};
use super::testserver::TestServer;
use super::*;

fn https_fixture() -> (Fixture, TestServer, tempfile::TempDir) {
    let f = Fixture::new();
    let server = TestServer::start_tls(f.repo.clone());
    let ca = tempfile::tempdir().unwrap();
    std::fs::write(ca.path().join("ca.pem"), server.ca_pem.clone().unwrap()).unwrap();
    (f, server, ca)
}

fn install_over(
    f: &Fixture,
    url: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Manifest, OtaError> {
    let mut cfg = FetchConfig::new(url, VARIANT);
    cfg.read_timeout = Duration::from_secs(5);
    cfg.tls = Some(tls);
    let mut slots = f.slots();
    let cancel = AtomicBool::new(false);
    check_and_install(
        &mut slots,
        &Fetcher::new(cfg),
        &f.public,
        &ManifestPolicy::new(VARIANT),
        &cancel,
        &mut |_| {},
    )
}

#[test]
fn https_repository_trusted_by_ca_file_installs() {
    let (f, server, ca) = https_fixture();
    f.publish(1000, 100_000);
    let tls = tls_from_ca_file(&ca.path().join("ca.pem")).unwrap();
    let m = install_over(&f, &server.url(), tls).unwrap();
    assert_eq!(m.unixtime, 1000);
    assert_eq!(f.slots().selected(), "b");
}

#[test]
fn https_repository_with_an_untrusted_ca_is_a_network_error_and_nothing_is_written() {
    let (f, server, _ca) = https_fixture();
    f.publish(1000, 100_000);
    let (_other, _, other_ca) = https_fixture();
    let tls = tls_from_ca_file(&other_ca.path().join("ca.pem")).unwrap();
    let err = install_over(&f, &server.url(), tls).unwrap_err();
    assert!(matches!(err, OtaError::Network(_)), "{err:?}");
    f.assert_untouched(&f.slots());
}

#[test]
fn https_repository_trusted_through_the_trust_store_installs() {
    let (f, server, ca) = https_fixture();
    f.publish(1000, 100_000);
    let config = crate::trust::TrustConfig {
        sources: vec![crate::trust::TrustSource::CertDir(ca.path().into())],
        ..crate::trust::TrustConfig::default()
    };
    let verifier = crate::trust::TrustService::open(&log(), &config).unwrap().verifier().unwrap();
    let m = install_over(&f, &server.url(), tls_with_verifier(verifier).unwrap()).unwrap();
    assert_eq!(m.unixtime, 1000);
}

#[test]
fn ca_file_without_certificates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.pem"), "nothing here\n").unwrap();
    assert!(matches!(tls_from_ca_file(&dir.path().join("empty.pem")), Err(OtaError::BadKey(_))));
    assert!(tls_from_ca_file(&dir.path().join("missing.pem")).is_err());
}
