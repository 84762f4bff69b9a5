//! The signed update manifest: a compact JWS (ES512) over lws_ota's JSON
//! payload, verified strictly (exact variant, newer unixtime, sane path),
//! by the issuer key its header names or by each trusted key in turn, and
//! fresh (not expired, not below the signed anti-rollback floor).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use lwsys_messages::OtaError;
use p521::ecdsa::signature::{Signer as _, Verifier as _};
use p521::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::keys::{check_kid, IssuerKey};

/// Bytes in an ES512 signature (r || s).
pub const SIGNATURE_LEN: usize = 132;

/// Most `retire_kids` entries a manifest may carry.
pub const MAX_RETIRE_KIDS: usize = 16;

/// The manifest payload: upstream's fields as upstream's tooling writes
/// them, then lwsys's optional fields (DESIGN §9). An upstream device
/// ignores fields it does not know, and a manifest without the optional
/// ones behaves exactly as upstream's; none of them is written when unset,
/// so a manifest lwsys signs without them is byte-for-byte upstream's
/// payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Manifest {
    /// Firmware variant; must equal the device's exactly.
    pub variant: String,
    /// The gzip image's file name next to the manifest.
    pub path: String,
    /// Bytes of the inflated image.
    pub size: u64,
    /// Release time; orders releases.
    pub unixtime: u64,
    /// SHA-512 of the inflated image, 128 hex digits.
    pub sha512: String,
    /// Whether to reboot after installing.
    #[serde(default)]
    pub reset: bool,
    /// Unixtime after which the manifest is refused once the device's
    /// clock is valid (stops a replayed or frozen old manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// The oldest release the issuer still allows on a device; raises the
    /// device's anti-rollback floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_unixtime: Option<u64>,
    /// A public JWK (object) the device adds to its trusted issuer keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_jwk: Option<serde_json::Value>,
    /// Issuer key ids (`kid`) the device stops trusting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retire_kids: Vec<String>,
    /// How pressing the release is; absent means normal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urgency: Option<Urgency>,
    /// The release's signed chunk index, for chunked, resumable,
    /// verify-before-write installs; absent: the whole `.img.gz` is
    /// streamed as upstream does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<ChunkRef>,
}

/// How pressing a release is (the manifest's `urgency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    /// Installs when the update policy and the notifiers allow.
    #[default]
    Normal,
    /// Installs at its deadline even past deferrals.
    Security,
}

/// The manifest's signed reference to a chunk index: the index file is
/// trusted because its hash is signed here, and each chunk because its
/// hash is in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRef {
    /// The index file's name next to the manifest.
    pub index: String,
    /// SHA-256 of the index file, 64 lowercase hex digits.
    pub index_sha256: String,
    /// The chunk file's name next to the manifest: every chunk compressed
    /// on its own and concatenated, so each can be fetched by HTTP range.
    pub file: String,
    /// Inflated bytes per chunk (the last chunk may be shorter).
    pub chunk_size: u32,
}

/// What a manifest must satisfy besides its signature.
#[derive(Debug, Clone)]
pub struct ManifestPolicy {
    /// The device's variant.
    pub variant: String,
    /// The last confirmed install's unixtime; the manifest must be newer.
    pub installed_unixtime: u64,
    /// The newest rolled-back release; it and older ones are not retried.
    pub rolled_back_unixtime: u64,
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Largest inflated image accepted, in bytes.
    pub max_image_bytes: u64,
    /// The device's time (unixtime) when its clock is valid (TIME_VALID
    /// reached); `None` before: a manifest with `expires` is then refused
    /// with [`OtaError::ClockNotValid`], since it cannot be judged.
    pub now: Option<u64>,
    /// The highest signed `min_unixtime` accepted so far (durable): an
    /// older release is refused with [`OtaError::BelowFloor`].
    pub min_unixtime: u64,
}

impl ManifestPolicy {
    /// A policy for `variant` with default limits (64 KiB manifest, 4 GiB
    /// image), nothing installed yet, no floor and no valid clock.
    pub fn new(variant: &str) -> Self {
        Self {
            variant: variant.to_owned(),
            installed_unixtime: 0,
            rolled_back_unixtime: 0,
            max_manifest_bytes: 64 * 1024,
            max_image_bytes: 4 << 30,
            now: None,
            min_unixtime: 0,
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    /// The signing key's id (RFC 7515 §4.1.4); upstream's JOSE parser
    /// knows and skips it.
    kid: Option<String>,
}

/// A manifest that verified, and the `kid` of the key that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The manifest.
    pub manifest: Manifest,
    /// Its signer's `kid`.
    pub kid: String,
}

/// A compact JWS split and its header read; nothing in it trusted yet.
struct Parsed<'a> {
    kid: Option<String>,
    signed: &'a str,
    payload: &'a str,
    sig: Signature,
}

fn malformed(msg: impl Into<String>) -> OtaError {
    OtaError::Malformed(msg.into())
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>, OtaError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| malformed(format!("{what} is not base64url")))
}

/// Checks that `path` names a plain file next to the manifest.
pub fn check_path(path: &str) -> Result<(), OtaError> {
    let bad = path.is_empty()
        || path.contains(['/', '\\', ':', '\0'])
        || path.contains("..")
        || path.chars().any(char::is_control);
    if bad {
        return Err(OtaError::BadPath(path.to_owned()));
    }
    Ok(())
}

/// Verifies a compact JWS manifest with the issuer's key and checks it
/// against `policy`. The signature is checked before anything in the
/// payload is trusted; the header must say exactly `ES512` (a `kid` in it
/// is not looked at: there is one key).
pub fn verify_manifest(
    jws: &[u8],
    key: &VerifyingKey,
    policy: &ManifestPolicy,
) -> Result<Manifest, OtaError> {
    let p = parse(jws, policy)?;
    key.verify(p.signed.as_bytes(), &p.sig).map_err(|_| OtaError::BadSignature)?;
    payload(&p, policy)
}

/// Verifies a compact JWS manifest against a set of trusted issuer keys
/// and checks it against `policy`. A `kid` in the header is a hint (RFC
/// 7515 §4.1.4): the key of that id is tried first, then every other
/// trusted key, so a key whose `kid` the device does not know (a JWK
/// configured without its `kid`) still verifies. When none does and the
/// header names a key in `retired`, the error says so
/// ([`OtaError::RetiredKey`]); otherwise it is [`OtaError::BadSignature`].
/// Returns the manifest and its signer's `kid`.
pub fn verify_with_keys(
    jws: &[u8],
    keys: &[IssuerKey],
    retired: &[String],
    policy: &ManifestPolicy,
) -> Result<Verified, OtaError> {
    let p = parse(jws, policy)?;
    let named = p.kid.as_deref();
    let mut order: Vec<&IssuerKey> = keys.iter().filter(|k| Some(k.kid()) == named).collect();
    order.extend(keys.iter().filter(|k| Some(k.kid()) != named));
    let Some(signer) =
        order.into_iter().find(|k| k.key().verify(p.signed.as_bytes(), &p.sig).is_ok())
    else {
        return Err(match named {
            // Shown and logged: keep it short.
            Some(kid) if retired.iter().any(|r| r == kid) => {
                OtaError::RetiredKey(kid.chars().take(64).collect())
            }
            _ => OtaError::BadSignature,
        });
    };
    let manifest = payload(&p, policy)?;
    Ok(Verified { manifest, kid: signer.kid().to_owned() })
}

fn parse<'a>(jws: &'a [u8], policy: &ManifestPolicy) -> Result<Parsed<'a>, OtaError> {
    if jws.len() as u64 > policy.max_manifest_bytes {
        return Err(OtaError::ManifestTooLarge {
            size: jws.len() as u64,
            max: policy.max_manifest_bytes,
        });
    }
    let text = std::str::from_utf8(jws).map_err(|_| malformed("not UTF-8"))?;
    // Tolerate the trailing newline a file written by hand may have.
    let text = text.trim_end_matches(['\n', '\r']);
    let mut parts = text.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not header.payload.signature"));
    };
    let header: Header = serde_json::from_slice(&b64(h, "header")?)
        .map_err(|e| malformed(format!("header: {e}")))?;
    match header.alg.as_deref() {
        Some("ES512") => {}
        other => return Err(OtaError::BadAlg(other.unwrap_or("").to_owned())),
    }
    if let Some(kid) = &header.kid {
        check_kid(kid).map_err(|_| malformed("header kid is not a sane key id"))?;
    }
    let sig = b64(s, "signature")?;
    if sig.len() != SIGNATURE_LEN {
        return Err(OtaError::BadSignature);
    }
    let sig = Signature::from_slice(&sig).map_err(|_| OtaError::BadSignature)?;
    let signed_len = h.len() + 1 + p.len();
    let signed = text.get(..signed_len).ok_or(OtaError::BadSignature)?;
    Ok(Parsed { kid: header.kid, signed, payload: p, sig })
}

/// The payload of a JWS whose signature verified, checked.
fn payload(p: &Parsed<'_>, policy: &ManifestPolicy) -> Result<Manifest, OtaError> {
    let m: Manifest = serde_json::from_slice(&b64(p.payload, "payload")?)
        .map_err(|e| malformed(format!("payload: {e}")))?;
    check_manifest(&m, policy)?;
    Ok(m)
}

/// The checks on a signed payload.
pub fn check_manifest(m: &Manifest, policy: &ManifestPolicy) -> Result<(), OtaError> {
    // Exact match: upstream compares a prefix, so "" or "xyz" would pass on
    // an "xyz-v1" device and could brick it.
    if m.variant != policy.variant {
        return Err(OtaError::WrongVariant {
            want: policy.variant.clone(),
            got: m.variant.clone(),
        });
    }
    check_path(&m.path)?;
    if m.sha512.len() != 128 || !m.sha512.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(OtaError::BadHash);
    }
    if m.size > policy.max_image_bytes {
        return Err(OtaError::ImageTooLarge { size: m.size, max: policy.max_image_bytes });
    }
    check_trust_fields(m)?;
    // Before the release order: a frozen server keeps serving the manifest
    // of the release a device already runs, and only its expiry tells.
    if let Some(expires) = m.expires {
        let now = policy.now.ok_or(OtaError::ClockNotValid)?;
        if now > expires {
            return Err(OtaError::Expired { expires, now });
        }
    }
    if m.unixtime <= policy.installed_unixtime {
        return Err(OtaError::NotNewer {
            manifest: m.unixtime,
            installed: policy.installed_unixtime,
        });
    }
    if m.unixtime < policy.min_unixtime {
        return Err(OtaError::BelowFloor {
            manifest: m.unixtime,
            min_unixtime: policy.min_unixtime,
        });
    }
    if m.unixtime <= policy.rolled_back_unixtime {
        return Err(OtaError::RolledBack(m.unixtime));
    }
    Ok(())
}

/// The key rotation and floor fields are well formed: `next_jwk` a public
/// P-521 JWK, `retire_kids` few and sane, `min_unixtime` not above the
/// release itself (it would forbid its own install).
pub(crate) fn check_trust_fields(m: &Manifest) -> Result<(), OtaError> {
    if let Some(v) = &m.next_jwk {
        IssuerKey::from_announced(v)?;
    }
    if m.retire_kids.len() > MAX_RETIRE_KIDS {
        return Err(malformed(format!("more than {MAX_RETIRE_KIDS} retire_kids")));
    }
    for kid in &m.retire_kids {
        check_kid(kid).map_err(|_| malformed("a retire_kids entry is not a sane key id"))?;
    }
    if m.min_unixtime.is_some_and(|min| min > m.unixtime) {
        return Err(malformed("min_unixtime is above the release's own unixtime"));
    }
    Ok(())
}

/// Signs `payload` (any JSON value, so tests can sign bad payloads) as a
/// compact JWS with header `{"alg":"ES512"}`, the way upstream's tooling
/// does.
pub fn sign_payload(key: &SigningKey, payload: &serde_json::Value) -> String {
    sign_with_header(key, r#"{"alg":"ES512"}"#, payload.to_string().as_bytes())
}

/// Signs arbitrary header and payload bytes (for tests of other algs).
pub fn sign_with_header(key: &SigningKey, header: &str, payload: &[u8]) -> String {
    let signed = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let sig: Signature = key.sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

/// Signs a manifest.
pub fn sign_manifest(key: &SigningKey, m: &Manifest) -> String {
    sign_manifest_as(key, None, m)
}

/// Signs a manifest with header `{"alg":"ES512","kid":kid}` when the key
/// has a `kid` (upstream's JOSE parser accepts `kid`), else exactly
/// upstream's header.
pub fn sign_manifest_as(key: &SigningKey, kid: Option<&str>, m: &Manifest) -> String {
    let payload = serde_json::to_value(m).unwrap_or_default().to_string();
    match kid {
        None => sign_with_header(key, r#"{"alg":"ES512"}"#, payload.as_bytes()),
        Some(kid) => {
            let header = serde_json::json!({"alg": "ES512", "kid": kid}).to_string();
            sign_with_header(key, &header, payload.as_bytes())
        }
    }
}
