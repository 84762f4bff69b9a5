//! The issuer's P-521 keys as JWKs (RFC 7517/7518), parsed by hand.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use lwsys_messages::OtaError;
use p521::ecdsa::{SigningKey, VerifyingKey};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// Bytes in one P-521 coordinate or scalar.
pub const COORD_LEN: usize = 66;

fn bad(msg: &str) -> OtaError {
    OtaError::BadKey(msg.to_owned())
}

fn member<'a>(v: &'a serde_json::Value, name: &str) -> Result<&'a str, OtaError> {
    v.get(name)
        .and_then(|m| m.as_str())
        .ok_or_else(|| OtaError::BadKey(format!("missing string member {name:?}")))
}

fn coord(v: &serde_json::Value, name: &str) -> Result<Vec<u8>, OtaError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(member(v, name)?)
        .map_err(|_| OtaError::BadKey(format!("{name:?} is not base64url")))?;
    if bytes.len() != COORD_LEN {
        return Err(OtaError::BadKey(format!(
            "{name:?} is {} bytes, not {COORD_LEN}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn parse_object(json: &str) -> Result<serde_json::Value, OtaError> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| OtaError::BadKey(format!("not JSON: {e}")))?;
    if member(&v, "kty")? != "EC" {
        return Err(bad("kty is not EC"));
    }
    if member(&v, "crv")? != "P-521" {
        return Err(bad("crv is not P-521"));
    }
    Ok(v)
}

fn point(v: &serde_json::Value) -> Result<VerifyingKey, OtaError> {
    let mut sec1 = Vec::with_capacity(1 + 2 * COORD_LEN);
    sec1.push(0x04);
    sec1.extend_from_slice(&coord(v, "x")?);
    sec1.extend_from_slice(&coord(v, "y")?);
    VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| bad("x, y is not a point on P-521"))
}

/// Parses a public EC P-521 JWK (`kty`, `crv`, `x`, `y`; other members such
/// as `kid`, `use`, `key_ops` or even `d` are ignored).
pub fn parse_public_jwk(json: &str) -> Result<VerifyingKey, OtaError> {
    point(&parse_object(json)?)
}

/// Parses a private EC P-521 JWK (the public members plus `d`), checking
/// that `x`, `y` belong to `d` when present.
pub fn parse_private_jwk(json: &str) -> Result<SigningKey, OtaError> {
    let v = parse_object(json)?;
    let d = coord(&v, "d")?;
    let key = SigningKey::from_slice(&d).map_err(|_| bad("d is not a P-521 scalar"))?;
    if v.get("x").is_some() || v.get("y").is_some() {
        let public = point(&v)?;
        if &public != key.verifying_key() {
            return Err(bad("x, y do not match d"));
        }
    }
    Ok(key)
}

/// The public JWK of `key`, as upstream's tooling writes it.
pub fn public_jwk(key: &VerifyingKey) -> String {
    let (x, y) = xy(key);
    serde_json::json!({"kty": "EC", "crv": "P-521", "x": x, "y": y}).to_string()
}

/// The private JWK of `key` (secret: never log it).
pub fn private_jwk(key: &SigningKey) -> String {
    let (x, y) = xy(key.verifying_key());
    let d = URL_SAFE_NO_PAD.encode(key.to_bytes());
    serde_json::json!({"kty": "EC", "crv": "P-521", "x": x, "y": y, "d": d}).to_string()
}

fn xy(key: &VerifyingKey) -> (String, String) {
    let sec1 = key.to_sec1_bytes();
    // Uncompressed SEC1: 0x04 || x || y, always 133 bytes for P-521.
    let x = sec1.get(1..1 + COORD_LEN).unwrap_or_default();
    let y = sec1.get(1 + COORD_LEN..).unwrap_or_default();
    (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y))
}

/// A fresh P-521 key from the OS's random source.
pub fn generate_key() -> SigningKey {
    let mut rng = rand::rngs::OsRng;
    loop {
        let mut d = [0u8; COORD_LEN];
        rng.fill_bytes(&mut d);
        // P-521 scalars are 521 bits: keep the top byte's low bit only, and
        // retry the rare value at or above the group order.
        d[0] &= 0x01;
        if let Ok(key) = SigningKey::from_slice(&d) {
            return key;
        }
    }
}

/// The RFC 7638 JWK thumbprint of `key`: SHA-256 over the required
/// members in lexical order without spaces, base64url without padding.
/// It names a key that has no `kid`.
pub fn thumbprint(key: &VerifyingKey) -> String {
    let (x, y) = xy(key);
    let canonical = format!(r#"{{"crv":"P-521","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Adds `"kid": kid` to a JWK made by [`public_jwk`] or [`private_jwk`].
fn with_kid(jwk: &str, kid: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(jwk) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("kid".into(), kid.into());
            serde_json::Value::Object(m).to_string()
        }
        _ => jwk.to_owned(),
    }
}

/// `lwsysctl ota keygen`: a new key pair as `(private_jwk, public_jwk)`,
/// both carrying the key's thumbprint as `kid`, so that the manifests it
/// signs name it and a device trusting several keys picks it directly.
pub fn keygen() -> (String, String) {
    let key = generate_key();
    let kid = thumbprint(key.verifying_key());
    (with_kid(&private_jwk(&key), &kid), with_kid(&public_jwk(key.verifying_key()), &kid))
}
