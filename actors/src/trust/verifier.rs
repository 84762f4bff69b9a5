//! `JitVerifier`: a rustls `ServerCertVerifier` that finds the issuing CAs
//! of a server's chain just in time, by the Authority Key Identifiers of
//! the certificates the server presented, and verifies with webpki against
//! only those CAs. Unlike upstream lws, rustls gives the verifier the whole
//! chain, so the first connection succeeds without a sacrificial attempt.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use slog::{debug, Logger};

use super::table::{akid_of, parse_cert, skid_of};
use super::TrustStore;

/// At most this many CA certificates are trusted for one handshake, as
/// upstream: enough for a root plus cross-signed variants, few enough that
/// a server cannot make us load the whole store.
pub const MAX_JIT_CAS: usize = 3;

/// Verifies server certificates against CAs looked up by SKID in a
/// [`TrustStore`], caching per host which SKIDs worked.
pub struct JitVerifier {
    store: Arc<TrustStore>,
    algs: WebPkiSupportedAlgorithms,
    log: Logger,
}

impl std::fmt::Debug for JitVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitVerifier").field("store", &self.store).finish_non_exhaustive()
    }
}

/// The CAs found for a handshake and the SKIDs that found them.
struct Anchors {
    roots: RootCertStore,
    skids: Vec<Vec<u8>>,
}

impl JitVerifier {
    /// A verifier over `store`, with *ring*'s signature algorithms.
    pub fn new(log: &Logger, store: Arc<TrustStore>) -> Self {
        Self {
            store,
            algs: rustls::crypto::ring::default_provider().signature_verification_algorithms,
            log: log.new(slog::o!("service" => "trust", "part" => "verifier")),
        }
    }

    /// The store it looks CAs up in (for its stats).
    pub fn store(&self) -> &Arc<TrustStore> {
        &self.store
    }

    /// Up to [`MAX_JIT_CAS`] CAs, valid at `now`, found by `skids` in order.
    /// Expired (or not yet valid) CAs are skipped: the store reports them,
    /// the verifier must not trust them.
    fn anchors(&self, skids: &[Vec<u8>], now: i64) -> Anchors {
        let mut found = Anchors { roots: RootCertStore::empty(), skids: Vec::new() };
        for skid in skids {
            let Ok(hits) = self.store.lookup_at(skid, now) else { continue };
            let mut used = false;
            for cert in hits.certs {
                if found.roots.len() >= MAX_JIT_CAS {
                    break;
                }
                if cert.expired || cert.not_before > now {
                    debug!(self.log, "ignoring CA outside its validity";
                        "subject" => &cert.subject, "not_after" => cert.not_after);
                    continue;
                }
                if found.roots.add(CertificateDer::from(cert.der.to_vec())).is_ok() {
                    used = true;
                }
            }
            if used {
                found.skids.push(skid.clone());
            }
            if found.roots.len() >= MAX_JIT_CAS {
                break;
            }
        }
        found
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
        roots: &RootCertStore,
    ) -> Result<(), Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, self.algs.all)?;
        verify_server_name(&cert, server_name)
    }
}

/// The AKIDs of the presented chain, top-most first: the chain is sorted
/// into a path from the end entity (each AKID naming the next certificate's
/// SKID), then any presented certificates off that path (cross-signed
/// variants) follow. Every presented certificate's AKID is tried, which
/// covers cross-signing and servers that send their root.
pub(crate) fn chain_akids(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Vec<Vec<u8>> {
    // (SKID, AKID) of each presented certificate; (None, None) if it does
    // not parse, which webpki will then reject on its own terms.
    type KeyIds<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);
    let ids: Vec<KeyIds<'_>> = std::iter::once(end_entity)
        .chain(intermediates)
        .map(|der| parse_cert(der).map_or((None, None), |c| (skid_of(&c), akid_of(&c))))
        .collect();
    let mut path = vec![0usize];
    while let Some(akid) = path.last().and_then(|&i| ids.get(i)).and_then(|id| id.1) {
        let next = (0..ids.len())
            .find(|j| !path.contains(j) && ids.get(*j).and_then(|id| id.0) == Some(akid));
        match next {
            Some(j) => path.push(j),
            None => break,
        }
    }
    let off_path = (0..ids.len()).rev().filter(|j| !path.contains(j)).collect::<Vec<_>>();
    let mut akids: Vec<Vec<u8>> = Vec::new();
    for i in path.into_iter().rev().chain(off_path) {
        if let Some(akid) = ids.get(i).and_then(|id| id.1) {
            if !akid.is_empty() && !akids.iter().any(|a| a == akid) {
                akids.push(akid.to_vec());
            }
        }
    }
    akids
}

impl ServerCertVerifier for JitVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let host = server_name.to_str();
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);

        if let Some(skids) = self.store.cached_skids(&host) {
            let anchors = self.anchors(&skids, now_secs);
            if !anchors.roots.is_empty()
                && self.check(end_entity, intermediates, server_name, now, &anchors.roots).is_ok()
            {
                self.store.count_hit();
                debug!(self.log, "verified from cache"; "host" => %host);
                return Ok(ServerCertVerified::assertion());
            }
            // The server changed its chain or a CA left the store: look
            // again from the chain rather than fail on a stale entry.
            self.store.forget(&host);
        }

        self.store.count_miss();
        let akids = chain_akids(end_entity, intermediates);
        let anchors = self.anchors(&akids, now_secs);
        debug!(self.log, "JIT trust lookup"; "host" => %host, "akids" => akids.len(),
            "cas" => anchors.roots.len());
        if anchors.roots.is_empty() {
            return Err(Error::InvalidCertificate(CertificateError::UnknownIssuer));
        }
        self.check(end_entity, intermediates, server_name, now, &anchors.roots)?;
        self.store.remember(&host, anchors.skids);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
