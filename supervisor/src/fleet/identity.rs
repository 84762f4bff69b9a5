//! Who the device is to the broker and how the broker is checked: the
//! device id (configured, else the MQTT_CLIENT_ID blob, else DEVICE_SERIAL,
//! else the hostname; never rewritten, only taken when it is a valid id),
//! the MQTT_USERNAME / MQTT_PASSWORD credentials, and for `mqtts` a rustls
//! config whose server verifier is the trust store's `JitVerifier` (and/or
//! `[fleet] ca_file`) and whose client certificate is CLIENT_CERT_DER /
//! CLIENT_KEY_DER. Secrets are read here and handed to the MQTT client;
//! they never reach a log line (errors name the blob, not its bytes).

use std::sync::Arc;

use lwsys_actors::logsafe::LogSafe;
use lwsys_actors::trust::JitVerifier;
use lwsys_messages::blobs::BlobKind;
use lwsys_messages::fleet::device_id_from;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use slog::{warn, Logger};

use super::FleetSettings;
use crate::handle::SystemHandle;

/// A blob's bytes; `None` when empty or unreadable.
async fn blob(sys: &SystemHandle, kind: BlobKind) -> Option<bytes::Bytes> {
    let b = sys.blob(kind, 0).ok()?.view().await.ok()?;
    (!b.is_empty()).then_some(b)
}

/// The device id: see the module docs. `Err` when no source gives a valid
/// one.
pub async fn device_id(
    sys: &SystemHandle,
    s: &FleetSettings,
    log: &Logger,
) -> Result<String, String> {
    if let Some(id) = &s.device_id {
        return Ok(id.clone());
    }
    for kind in [BlobKind::MqttClientId, BlobKind::DeviceSerial] {
        if let Some(b) = blob(sys, kind).await {
            let text = String::from_utf8_lossy(&b);
            match device_id_from(&text) {
                Some(id) => return Ok(id),
                None => warn!(log, "blob is not a usable fleet device id; skipped";
                              "blob" => ?kind, "value" => %LogSafe(&text)),
            }
        }
    }
    // The kernel's name for the host (nix's gethostname is behind a feature
    // we do not build).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map_err(|e| {
            format!("no device id: no [fleet] device_id, no id blob, no hostname ({e})")
        })?;
    device_id_from(&host).ok_or_else(|| {
        format!(
            "no device id: set [fleet] device_id or the MQTT_CLIENT_ID blob (hostname {} is not a valid id)",
            LogSafe(&host)
        )
    })
}

/// MQTT_USERNAME and MQTT_PASSWORD, when the user name is set.
pub async fn credentials(sys: &SystemHandle) -> Option<(String, String)> {
    let user = blob(sys, BlobKind::MqttUsername).await?;
    let pass = blob(sys, BlobKind::MqttPassword).await.unwrap_or_default();
    Some((String::from_utf8_lossy(&user).into_owned(), String::from_utf8_lossy(&pass).into_owned()))
}

/// Accepts a server either verifier accepts (the trust store first, then
/// `ca_file`'s roots).
#[derive(Debug)]
struct Either {
    first: Arc<dyn ServerCertVerifier>,
    second: Arc<dyn ServerCertVerifier>,
}

impl ServerCertVerifier for Either {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.first.verify_server_cert(end_entity, intermediates, server_name, ocsp, now).or_else(
            |_| self.second.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.first.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.first.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.first.supported_verify_schemes()
    }
}

/// The verifier of `ca_file`'s roots.
fn ca_file_verifier(path: &std::path::Path) -> Result<Arc<dyn ServerCertVerifier>, String> {
    let bad = |e: String| format!("[fleet] ca_file {}: {e}", path.display());
    let f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(f).map_err(bad)? {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificates".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let v = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    Ok(v)
}

/// The DER certificates of a PEM file (only `CERTIFICATE` blocks).
fn rustls_pemfile_certs(f: std::fs::File) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut r = std::io::BufReader::new(f);
    CertificateDer::pem_reader_iter(&mut r)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// The verifier of an `mqtts` broker: the system trust store's `JitVerifier`
/// (`store`, present when `[trust]` has sources), `ca_file`'s roots, or
/// either. Built once per link.
pub fn verifier(
    s: &FleetSettings,
    store: Option<Arc<JitVerifier>>,
) -> Result<Arc<dyn ServerCertVerifier>, String> {
    let store = store.map(|v| v as Arc<dyn ServerCertVerifier>);
    let extra = s.ca_file.as_deref().map(ca_file_verifier).transpose()?;
    match (store, extra) {
        (Some(first), Some(second)) => Ok(Arc::new(Either { first, second })),
        (Some(v), None) | (None, Some(v)) => Ok(v),
        (None, None) => {
            Err("an mqtts broker needs [trust] sources or [fleet] ca_file to be verified".into())
        }
    }
}

/// TLS settings with `verifier` and no client certificate: what an
/// attempt uses when the certificate blobs are unusable, so a link to an
/// `mqtts` broker never falls back to plain TCP.
pub fn tls_anonymous(
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The TLS settings for one connection attempt: `verifier` for the
/// broker, and the client certificate as the blobs hold it now (so one
/// provisioned after boot is used from the next attempt on).
pub async fn tls_config(
    sys: &SystemHandle,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let cert = blob(sys, BlobKind::ClientCertDer).await;
    let key = blob(sys, BlobKind::ClientKeyDer).await;
    let cfg = match (cert, key) {
        (Some(cert), Some(key)) => {
            let key = PrivateKeyDer::try_from(key.to_vec())
                .map_err(|_| "the CLIENT_KEY_DER blob is not a DER private key".to_owned())?;
            builder
                .with_client_auth_cert(vec![CertificateDer::from(cert.to_vec())], key)
                .map_err(|e| format!("client certificate (CLIENT_CERT_DER/CLIENT_KEY_DER): {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}
