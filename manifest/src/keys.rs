//! Issuer keys by `kid`: what a device trusts, how a key is named (its
//! JWK `kid`, else its RFC 7638 thumbprint) and which key a manifest's
//! JWS header asks for.

use lwsys_messages::OtaError;
use p521::ecdsa::VerifyingKey;

use crate::jwk::{parse_public_jwk, public_jwk, thumbprint};

/// Most issuer keys a device trusts at once (the configured one
/// included): a manifest whose `next_jwk` would pass it is refused, so the
/// issuer retires a key in the same manifest that announces the next.
pub const MAX_TRUSTED_KEYS: usize = 8;

/// Longest `kid` accepted, in bytes. Thumbprints are 43.
pub const MAX_KID_LEN: usize = 128;

/// One issuer public key and its `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerKey {
    kid: String,
    key: VerifyingKey,
    /// Its RFC 7638 thumbprint, the name it answers to besides `kid`.
    thumb: String,
}

impl IssuerKey {
    /// The key named by its RFC 7638 thumbprint (for a bare key, such as
    /// one read from a JWK without `kid`).
    pub fn from_key(key: VerifyingKey) -> Self {
        let thumb = thumbprint(&key);
        Self { kid: thumb.clone(), key, thumb }
    }

    /// Parses a public P-521 JWK as the device's configured key: other
    /// members are ignored, as [`parse_public_jwk`] does; `kid` names it
    /// when present (and must then be a sane string).
    pub fn from_config_jwk(json: &str) -> Result<Self, OtaError> {
        let key = parse_public_jwk(json)?;
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| OtaError::BadKey(format!("not JSON: {e}")))?;
        Self::named(&v, key)
    }

    /// Parses an announced key (a manifest's `next_jwk`, or one kept in
    /// the keyring): an object with an EC P-521 public key and no private
    /// member `d`.
    pub fn from_announced(v: &serde_json::Value) -> Result<Self, OtaError> {
        if !v.is_object() {
            return Err(OtaError::BadKey("next_jwk is not a JSON object".into()));
        }
        if v.get("d").is_some() {
            return Err(OtaError::BadKey("next_jwk has a private member \"d\"".into()));
        }
        let key = parse_public_jwk(&v.to_string())?;
        Self::named(v, key)
    }

    fn named(v: &serde_json::Value, key: VerifyingKey) -> Result<Self, OtaError> {
        let kid = match v.get("kid") {
            None => thumbprint(&key),
            Some(k) => {
                let k = k.as_str().ok_or_else(|| OtaError::BadKey("kid is not a string".into()))?;
                check_kid(k)?;
                k.to_owned()
            }
        };
        Ok(Self { kid, thumb: thumbprint(&key), key })
    }

    /// The key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Whether `name` names this key: its `kid`, or its thumbprint (so an
    /// issuer retiring by thumbprint reaches a key configured under
    /// another `kid`, and the reverse cannot spare it).
    pub fn answers_to(&self, name: &str) -> bool {
        self.kid == name || self.thumb == name
    }

    /// The public JWK with its `kid`, as the keyring file keeps it.
    pub fn to_jwk(&self) -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_str(&public_jwk(&self.key)).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert("kid".into(), self.kid.clone().into());
        }
        v
    }
}

impl From<VerifyingKey> for IssuerKey {
    fn from(key: VerifyingKey) -> Self {
        Self::from_key(key)
    }
}

/// Checks that `kid` is 1..=[`MAX_KID_LEN`] bytes of printable ASCII
/// (it is logged and shown by `ota.status`).
pub fn check_kid(kid: &str) -> Result<(), OtaError> {
    let ok = !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if ok {
        Ok(())
    } else {
        Err(OtaError::BadKey(format!("kid must be 1 to {MAX_KID_LEN} printable ASCII characters")))
    }
}

/// The `kid` a signing key's JWK gives the manifests it signs: its `kid`
/// member if it has one, else `None` (the header then stays upstream's
/// `{"alg":"ES512"}`).
pub fn jwk_kid(json: &str) -> Result<Option<String>, OtaError> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| OtaError::BadKey(format!("not JSON: {e}")))?;
    match v.get("kid") {
        None => Ok(None),
        Some(k) => {
            let k = k.as_str().ok_or_else(|| OtaError::BadKey("kid is not a string".into()))?;
            check_kid(k)?;
            Ok(Some(k.to_owned()))
        }
    }
}
