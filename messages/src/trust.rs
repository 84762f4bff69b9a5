//! Messages of the trust service (`TrustService`): the just-in-time CA
//! query by Subject Key Identifier, its answer, backend statistics and the
//! service's error type.

use std::fmt::Write as _;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// The longest Subject Key Identifier accepted in a query, in bytes. Real
/// SKIDs are 20 bytes (SHA-1 sized) or at most 32; anything longer is a
/// malformed request rather than a key identifier.
pub const MAX_SKID_LEN: usize = 64;

/// Asks `TrustService` (sent by the control protocol's `trust.query`, or any
/// service that needs a CA) for every trusted CA certificate whose stored
/// Subject Key Identifier equals `skid`. The reply is a [`TrustedCerts`]
/// with at least one certificate, or [`TrustError::NotFound`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "actor",
    derive(actix::Message),
    rtype(result = "Result<TrustedCerts, TrustError>")
)]
pub struct QueryTrust {
    /// The Subject Key Identifier looked for (exact match).
    pub skid: Vec<u8>,
}

impl QueryTrust {
    /// A query for the SKID written in hex, as the protocol carries it.
    /// Pairs may be separated by `:` (as `openssl x509 -text` prints them);
    /// case does not matter.
    pub fn from_hex(hex: &str) -> Result<Self, TrustError> {
        let skid = parse_hex(hex)?;
        if skid.is_empty() || skid.len() > MAX_SKID_LEN {
            return Err(TrustError::BadRequest(format!(
                "a SKID is 1 to {MAX_SKID_LEN} bytes, got {}",
                skid.len()
            )));
        }
        Ok(Self { skid })
    }
}

fn parse_hex(s: &str) -> Result<Vec<u8>, TrustError> {
    let digits: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
    if digits.len() % 2 != 0 {
        return Err(TrustError::BadRequest("SKID hex has an odd number of digits".into()));
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            let hi = hex_value(pair[0]);
            let lo = hex_value(pair[1]);
            match (hi, lo) {
                (Some(h), Some(l)) => Ok(h << 4 | l),
                _ => Err(TrustError::BadRequest(format!("SKID {s:?} is not hex"))),
            }
        })
        .collect()
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Lower-case hex of `bytes`, as SKIDs are shown in errors and logs.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The answer to [`QueryTrust`]: every matching CA certificate, in backend
/// order (the configured order), duplicates across backends removed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TrustedCerts {
    /// The matches; never empty in a successful reply.
    pub certs: Vec<TrustedCert>,
}

/// One trusted CA certificate found by SKID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedCert {
    /// The certificate, DER encoded. On the wire it is `der_b64` (standard
    /// base64 with padding).
    #[serde(rename = "der_b64", with = "b64")]
    pub der: Bytes,
    /// The subject name, such as `"C=US, O=Internet Security Research
    /// Group, CN=ISRG Root X1"`.
    pub subject: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Whether `not_after` had passed when the query was answered. Expired
    /// certificates are reported, never silently dropped; the TLS verifier
    /// ignores them.
    pub expired: bool,
    /// The name of the backend that holds it (a blob file or cert dir).
    pub backend: String,
}

/// Asks `TrustService` for its backends and cache statistics (for
/// `system.info`); the reply is a [`TrustInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "actor", derive(actix::Message), rtype(result = "TrustInfo"))]
pub struct GetTrustInfo;

/// What the trust store holds and how its host cache is doing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TrustInfo {
    /// Each backend, in query order. Empty when the trust query was
    /// replaced by a custom one that reports nothing.
    pub backends: Vec<BackendInfo>,
    /// The host -> SKIDs cache used by the TLS verifier.
    pub cache: CacheInfo,
}

/// One backend's counts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BackendInfo {
    /// Where it comes from: the blob file or the directory path.
    pub name: String,
    /// `"tblb"`, `"cert_dir"` or a custom backend's kind.
    pub kind: String,
    /// Certificates held (distinct ones, for a directory).
    pub certs: usize,
    /// Certificates with no SKID: held and counted, but never found.
    pub without_skid: usize,
    /// Files skipped (unreadable, or not a certificate).
    pub skipped: usize,
    /// Bytes of certificate data held in memory.
    pub bytes: usize,
}

/// The host cache's state and counters since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CacheInfo {
    /// Hosts cached now.
    pub hosts: usize,
    /// Their footprint, in (estimated) bytes.
    pub bytes: usize,
    /// The footprint bound.
    pub max_bytes: usize,
    /// How long an entry lives, in seconds.
    pub ttl_secs: u64,
    /// Verifications that used a cached entry successfully.
    pub hits: u64,
    /// Verifications that looked the CAs up from the presented chain.
    pub misses: u64,
    /// Entries evicted to stay under the footprint bound.
    pub evictions: u64,
}

/// Why a trust query or a trust backend failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// No backend holds a certificate with this SKID.
    #[error("no trusted certificate with SKID {skid_hex}")]
    NotFound {
        /// The SKID asked for, in hex.
        skid_hex: String,
    },
    /// The request is malformed (bad hex, empty or overlong SKID).
    #[error("bad trust request: {0}")]
    BadRequest(String),
    /// A backend file or directory could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The file or directory.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A trust blob is not a valid TBLB.
    #[error("{path}: malformed trust blob: {reason}")]
    Malformed {
        /// The blob file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The trust service or a custom trust query failed.
    #[error("trust query failed: {0}")]
    Unavailable(String),
}

impl TrustError {
    /// The control protocol's code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::Io { .. } | Self::Malformed { .. } => ErrorCode::Io,
            Self::Unavailable(_) => ErrorCode::Internal,
        }
    }

    /// A [`TrustError::NotFound`] for `skid`.
    pub fn not_found(skid: &[u8]) -> Self {
        Self::NotFound { skid_hex: to_hex(skid) }
    }
}

/// Standard base64 (RFC 4648, padded) for `der_b64`. Hand-written because
/// this crate keeps its dependencies to serde, thiserror and bytes; it is
/// small and pinned by the RFC's test vectors below.
mod b64 {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub(super) fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    pub(super) fn decode(s: &str) -> Option<Vec<u8>> {
        let s = s.trim_end_matches('=');
        let mut out = Vec::with_capacity(s.len() * 3 / 4);
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in s.bytes() {
            let v = ALPHABET.iter().position(|a| *a == c)?;
            acc = acc << 6 | u32::try_from(v).ok()?;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push(u8::try_from(acc >> bits & 0xff).ok()?);
            }
        }
        // Leftover bits must be zero padding of the last byte, and at most
        // 4 of them (a lone trailing sextet is not valid base64).
        (bits < 6 && acc & ((1 << bits) - 1) == 0).then_some(out)
    }

    pub(super) fn serialize<S: Serializer>(der: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(der))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        decode(&s).map(Bytes::from).ok_or_else(|| serde::de::Error::custom("invalid base64"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_queries_accept_colons_and_any_case_and_reject_junk() {
        let q = QueryTrust::from_hex("65:CD:eb:ab").unwrap();
        assert_eq!(q.skid, vec![0x65, 0xcd, 0xeb, 0xab]);
        assert_eq!(to_hex(&q.skid), "65cdebab");
        for bad in ["", "abc", "zz", "+1", "é0", &"00".repeat(MAX_SKID_LEN + 1)] {
            let e = QueryTrust::from_hex(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadRequest, "{bad:?}");
        }
    }

    #[test]
    fn error_codes_follow_the_protocol() {
        assert_eq!(TrustError::not_found(&[1, 2]).code(), ErrorCode::NotFound);
        assert_eq!(
            TrustError::not_found(&[1, 2]).to_string(),
            "no trusted certificate with SKID 0102"
        );
        let io = TrustError::Io { path: "/x".into(), message: "gone".into() };
        assert_eq!(io.code(), ErrorCode::Io);
        assert_eq!(TrustError::Unavailable("dead".into()).code(), ErrorCode::Internal);
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in vectors {
            assert_eq!(b64::encode(plain.as_bytes()), enc);
            assert_eq!(b64::decode(enc).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(b64::decode(&b64::encode(&all)).unwrap(), all);
        assert!(b64::decode("Zm9v!").is_none());
        assert!(b64::decode("Z").is_none());
    }

    #[test]
    fn trusted_cert_json_carries_der_b64() {
        let cert = TrustedCert {
            der: Bytes::from_static(b"foo"),
            subject: "CN=x".into(),
            not_before: 1,
            not_after: 2,
            expired: true,
            backend: "b".into(),
        };
        let json = serde_json::to_value(&cert).unwrap();
        assert_eq!(json["der_b64"], "Zm9v");
        assert_eq!(json["not_after"], 2);
        assert_eq!(json["expired"], true);
        let back: TrustedCert = serde_json::from_value(json).unwrap();
        assert_eq!(back, cert);
    }
}
