//! Test helpers for the trust service: the fixture's path, a discarding
//! logger, a generated root -> intermediate -> leaf PKI, a forged root,
//! certificate directories in temp dirs, and a loopback rustls server.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

use super::table::{parse_cert, skid_of};
use super::JitVerifier;

/// The real Mozilla TBLB fixture: `shared/fixtures/` in the nearest
/// ancestor of this crate that has it (`../shared` beside the clone in CI,
/// `/work/shared` for a worktree).
pub fn fixture_path() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/fixtures/mozilla-trust.tblb"))
        .find(|p| p.is_file())
        .expect("shared/fixtures/mozilla-trust.tblb beside the workspace")
}

/// A logger that drops everything.
pub fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// A root -> intermediate -> leaf chain made for one test.
pub struct Pki {
    /// The root CA, self-signed.
    pub root: CertificateDer<'static>,
    /// The root's SKID (the intermediate's AKID).
    pub root_skid: Vec<u8>,
    /// The root's key.
    pub root_key: KeyPair,
    /// The intermediate CA, signed by the root.
    pub inter: CertificateDer<'static>,
    /// The leaf, signed by the intermediate, valid for the given names.
    pub leaf: CertificateDer<'static>,
    /// The leaf's private key.
    pub leaf_key: PrivateKeyDer<'static>,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name.push(DnType::OrganizationName, "lwsys tests");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// A fresh PKI whose leaf is valid for `names`.
pub fn pki(names: &[&str]) -> Pki {
    let root_key = KeyPair::generate().unwrap();
    let root = ca_params("lwsys test root").self_signed(&root_key).unwrap();

    let inter_key = KeyPair::generate().unwrap();
    let mut ip = ca_params("lwsys test intermediate");
    ip.use_authority_key_identifier_extension = true;
    let inter = ip.signed_by(&inter_key, &root, &root_key).unwrap();

    let leaf_key = KeyPair::generate().unwrap();
    let mut lp =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    lp.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
    lp.use_authority_key_identifier_extension = true;
    lp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = lp.signed_by(&leaf_key, &inter, &inter_key).unwrap();

    let root_der = root.der().clone();
    let root_skid = skid_of(&parse_cert(&root_der).unwrap()).unwrap().to_vec();
    Pki {
        root: root_der,
        root_skid,
        root_key,
        inter: inter.der().clone(),
        leaf: leaf.der().clone(),
        leaf_key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
    }
}

/// A root with the same name and SKID as `pki`'s but a different key: an
/// attacker's CA that a lookup by SKID alone would find.
pub fn forged_root(pki: &Pki) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    let mut p = ca_params("lwsys test root");
    p.key_identifier_method = KeyIdMethod::PreSpecified(pki.root_skid.clone());
    let forged = p.self_signed(&key).unwrap().der().clone();
    assert_eq!(skid_of(&parse_cert(&forged).unwrap()), Some(&pki.root_skid[..]));
    assert_ne!(forged, pki.root);
    forged
}

/// The root of `pki` again (same name, key and SKID) but valid only in
/// 2000: webpki does not check a trust anchor's validity, the verifier must.
pub fn expired_twin(pki: &Pki) -> CertificateDer<'static> {
    let mut p = ca_params("lwsys test root");
    p.not_before = rcgen::date_time_ymd(2000, 1, 1);
    p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    p.self_signed(&pki.root_key).unwrap().der().clone()
}

/// A temp directory holding `certs` as PEM files.
pub fn pem_dir(certs: &[&CertificateDer<'_>]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (i, der) in certs.iter().enumerate() {
        std::fs::write(dir.path().join(format!("ca{i}.pem")), pem(der)).unwrap();
    }
    dir
}

/// `der` as a PEM `CERTIFICATE` block.
pub fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server on 127.0.0.1 (ephemeral port) that presents `chain`,
/// one std thread per connection, for the rest of the test process.
pub fn serve(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> SocketAddr {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { return };
            let config = config.clone();
            thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                let mut conn = ServerConnection::new(config).unwrap();
                while conn.is_handshaking() {
                    if conn.complete_io(&mut tcp).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Connects to `addr` as `host` with `verifier` and completes the
/// handshake; the error is rustls's when verification failed.
pub fn connect(
    addr: SocketAddr,
    host: &str,
    verifier: Arc<JitVerifier>,
) -> Result<(), rustls::Error> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name =
        ServerName::try_from(host.to_owned()).map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut conn = ClientConnection::new(Arc::new(config), name)?;
    let mut tcp = TcpStream::connect(addr).map_err(|e| rustls::Error::General(e.to_string()))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(io_to_rustls)?;
    }
    Ok(())
}

fn io_to_rustls(e: io::Error) -> rustls::Error {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(r) => r.clone(),
        None => rustls::Error::General(e.to_string()),
    }
}
