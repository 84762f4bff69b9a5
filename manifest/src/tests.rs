//! Tests of the manifest format alone: key round trips, upstream's JWS
//! shape, and that no input bytes panic or verify unless signed.

use proptest::prelude::*;

use crate::jwk::{generate_key, public_jwk};
use crate::jws::{sign_manifest, sign_with_header};
use crate::*;

const VARIANT: &str = "xyz-v1";

#[test]
fn keygen_pair_round_trips_and_extra_jwk_members_are_tolerated() {
    let (private, public) = keygen();
    let sk = parse_private_jwk(&private).unwrap();
    let pk = parse_public_jwk(&public).unwrap();
    assert_eq!(sk.verifying_key(), &pk);
    let mut v: serde_json::Value = serde_json::from_str(&public).unwrap();
    v["kid"] = "k1".into();
    v["use"] = "sig".into();
    v["key_ops"] = serde_json::json!(["verify"]);
    assert_eq!(parse_public_jwk(&v.to_string()).unwrap(), pk);
    v["crv"] = "P-256".into();
    assert!(parse_public_jwk(&v.to_string()).is_err());
    assert!(parse_public_jwk(r#"{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}"#).is_err());
    assert!(!public.contains("\"d\""));
}

#[test]
fn upstream_shaped_manifest_verifies_unchanged() {
    // Upstream's tooling: header with alg (and possibly typ/kid), payload
    // with its own member order and spacing; we sign exactly those bytes.
    let key = generate_key();
    let pk = *key.verifying_key();
    let payload = format!(
        "{{\"variant\": \"xyz-v1\", \"path\": \"xyz-v1-1645768101.img.gz\", \"size\": 1234567, \"unixtime\": 1645768101, \"sha512\": \"{}\", \"reset\": true}}",
        "ab".repeat(64)
    );
    let jws = sign_with_header(&key, r#"{"alg":"ES512","typ":"JWT"}"#, payload.as_bytes());
    let m = verify_manifest(jws.as_bytes(), &pk, &ManifestPolicy::new(VARIANT)).unwrap();
    assert_eq!(m.size, 1234567);
    assert_eq!(m.unixtime, 1645768101);
    let jwk = public_jwk(&pk);
    assert_eq!(parse_public_jwk(&jwk).unwrap(), pk);
}

fn valid_manifest() -> (&'static p521::ecdsa::VerifyingKey, String) {
    use std::sync::OnceLock;
    static K: OnceLock<(p521::ecdsa::VerifyingKey, String)> = OnceLock::new();
    let (pk, jws) = K.get_or_init(|| {
        let key = generate_key();
        let m = Manifest {
            variant: VARIANT.into(),
            path: "xyz-v1-5.img.gz".into(),
            size: 5,
            unixtime: 5,
            sha512: "00".repeat(64),
            reset: true,
            ..Manifest::default()
        };
        (*key.verifying_key(), sign_manifest(&key, &m))
    });
    (pk, jws.clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_bytes_never_panic_and_never_verify(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (pk, _) = valid_manifest();
        prop_assert!(verify_manifest(&bytes, pk, &ManifestPolicy::new(VARIANT)).is_err());
    }

    #[test]
    fn mutated_valid_manifest_never_verifies(pos in any::<proptest::sample::Index>(), byte in any::<u8>()) {
        let (pk, jws) = valid_manifest();
        let policy = ManifestPolicy::new(VARIANT);
        prop_assert!(verify_manifest(jws.as_bytes(), pk, &policy).is_ok());
        let mut b = jws.into_bytes();
        let i = pos.index(b.len());
        prop_assume!(b[i] != byte && !(i == b.len() - 1 && (byte == b'\n' || byte == b'\r')));
        b[i] = byte;
        prop_assert!(verify_manifest(&b, pk, &policy).is_err());
    }
}

#[test]
fn a_manifest_without_lwsys_fields_serializes_as_upstreams_payload() {
    let m = Manifest {
        variant: VARIANT.into(),
        path: "p.img.gz".into(),
        size: 1,
        unixtime: 2,
        sha512: "00".repeat(64),
        reset: false,
        ..Manifest::default()
    };
    let v = serde_json::to_value(&m).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["path", "reset", "sha512", "size", "unixtime", "variant"]);
    // And a payload with lwsys's fields parses back into them.
    let with: Manifest = serde_json::from_value(serde_json::json!({
        "variant": VARIANT, "path": "p.img.gz", "size": 1, "unixtime": 2,
        "sha512": "00".repeat(64), "expires": 9, "urgency": "security",
        "chunks": {"index": "p.idx", "index_sha256": "11".repeat(32), "file": "p.chunks", "chunk_size": 65536}
    }))
    .unwrap();
    assert_eq!(with.expires, Some(9));
    assert_eq!(with.urgency, Some(crate::Urgency::Security));
    assert_eq!(with.chunks.map(|c| c.chunk_size), Some(65536));
}
