//! Tests of freshness (expiry, floor), key selection by `kid`, and the
//! durable keyring: every refusal, and every way its file can be bad.

use std::os::unix::fs::PermissionsExt as _;

use p521::ecdsa::SigningKey;
use serde_json::json;

use crate::jwk::{generate_key, public_jwk, thumbprint};
use crate::jws::{sign_manifest, sign_manifest_as};
use crate::keyring::{MAX_KEYRING_BYTES, MAX_RETIRED};
use crate::keys::MAX_TRUSTED_KEYS;
use crate::*;

const VARIANT: &str = "xyz-v1";

fn manifest(unixtime: u64) -> Manifest {
    Manifest {
        variant: VARIANT.into(),
        path: format!("{VARIANT}-{unixtime}.img.gz"),
        size: 5,
        unixtime,
        sha512: "00".repeat(64),
        reset: true,
        ..Manifest::default()
    }
}

fn policy(now: Option<u64>) -> ManifestPolicy {
    ManifestPolicy { now, ..ManifestPolicy::new(VARIANT) }
}

fn announced(key: &SigningKey) -> serde_json::Value {
    serde_json::from_str(&public_jwk(key.verifying_key())).unwrap()
}

fn issuer(key: &SigningKey) -> IssuerKey {
    IssuerKey::from_key(*key.verifying_key())
}

#[test]
fn expired_manifest_is_refused_once_the_clock_is_valid() {
    let k = generate_key();
    let m = Manifest { expires: Some(1_000), ..manifest(10) };
    let jws = sign_manifest(&k, &m);
    let vk = k.verifying_key();
    assert_eq!(verify_manifest(jws.as_bytes(), vk, &policy(Some(1_000))).unwrap(), m);
    let e = verify_manifest(jws.as_bytes(), vk, &policy(Some(1_001))).unwrap_err();
    assert_eq!(e, OtaError::Expired { expires: 1_000, now: 1_001 });
    assert_eq!(e.kind(), "expired");
    // Before TIME_VALID the expiry cannot be judged: refused, not waved on.
    let e = verify_manifest(jws.as_bytes(), vk, &policy(None)).unwrap_err();
    assert_eq!(e, OtaError::ClockNotValid);
    // Without `expires` the clock does not matter (upstream's manifests).
    let plain = sign_manifest(&k, &manifest(10));
    assert!(verify_manifest(plain.as_bytes(), vk, &policy(None)).is_ok());
}

#[test]
fn expiry_is_judged_before_the_release_order_so_a_frozen_current_release_shows() {
    let k = generate_key();
    let jws = sign_manifest(&k, &Manifest { expires: Some(50), ..manifest(10) });
    let p = ManifestPolicy { installed_unixtime: 10, ..policy(Some(60)) };
    let e = verify_manifest(jws.as_bytes(), k.verifying_key(), &p).unwrap_err();
    assert_eq!(e.kind(), "expired");
}

#[test]
fn release_below_the_signed_floor_is_refused_and_not_newer_keeps_its_kind() {
    let k = generate_key();
    let vk = k.verifying_key();
    let p = ManifestPolicy { installed_unixtime: 100, min_unixtime: 500, ..policy(Some(1)) };
    let e = verify_manifest(sign_manifest(&k, &manifest(400)).as_bytes(), vk, &p).unwrap_err();
    assert_eq!(e, OtaError::BelowFloor { manifest: 400, min_unixtime: 500 });
    let e = verify_manifest(sign_manifest(&k, &manifest(90)).as_bytes(), vk, &p).unwrap_err();
    assert_eq!(e.kind(), "not_newer");
    // The floor itself is allowed: it names the oldest release allowed.
    assert!(verify_manifest(sign_manifest(&k, &manifest(500)).as_bytes(), vk, &p).is_ok());
}

#[test]
fn malformed_trust_fields_are_refused() {
    let k = generate_key();
    let vk = k.verifying_key();
    let check = |m: Manifest| verify_manifest(sign_manifest(&k, &m).as_bytes(), vk, &policy(None));
    // A min_unixtime above the release would forbid its own install.
    let e = check(Manifest { min_unixtime: Some(11), ..manifest(10) }).unwrap_err();
    assert_eq!(e.kind(), "malformed");
    // next_jwk: a private key, another curve, not an object.
    let mut private: serde_json::Value =
        serde_json::from_str(&crate::jwk::private_jwk(&generate_key())).unwrap();
    let e = check(Manifest { next_jwk: Some(private.clone()), ..manifest(10) }).unwrap_err();
    assert!(matches!(e, OtaError::BadKey(ref m) if m.contains("private")), "{e}");
    private["crv"] = "P-256".into();
    private.as_object_mut().unwrap().remove("d");
    assert_eq!(
        check(Manifest { next_jwk: Some(private), ..manifest(10) }).unwrap_err().kind(),
        "bad_key"
    );
    let e = check(Manifest { next_jwk: Some(json!("key")), ..manifest(10) }).unwrap_err();
    assert_eq!(e.kind(), "bad_key");
    // retire_kids: too many, or not a sane id.
    let many = (0..17).map(|i| format!("k{i}")).collect();
    assert_eq!(
        check(Manifest { retire_kids: many, ..manifest(10) }).unwrap_err().kind(),
        "malformed"
    );
    let bad = vec!["a\nb".to_owned()];
    assert_eq!(
        check(Manifest { retire_kids: bad, ..manifest(10) }).unwrap_err().kind(),
        "malformed"
    );
}

#[test]
fn header_kid_is_a_hint_and_a_retired_kid_is_named_in_the_refusal() {
    let (k1, k2) = (generate_key(), generate_key());
    let keys = [issuer(&k1), issuer(&k2)];
    let none: [String; 0] = [];
    let m = manifest(10);
    let check = |jws: &str, keys: &[IssuerKey], retired: &[String]| {
        verify_with_keys(jws.as_bytes(), keys, retired, &policy(None))
    };
    let by_kid = sign_manifest_as(&k2, Some(keys[1].kid()), &m);
    let v = check(&by_kid, &keys, &none).unwrap();
    assert_eq!((v.manifest, v.kid.as_str()), (m.clone(), keys[1].kid()));
    // No kid, or a kid the device knows the key by another name (a JWK
    // configured without its kid), or the wrong trusted kid: the key that
    // verifies is the signer.
    for jws in [
        sign_manifest(&k2, &m),
        sign_manifest_as(&k2, Some("fleet-2026"), &m),
        sign_manifest_as(&k2, Some(keys[0].kid()), &m),
    ] {
        assert_eq!(check(&jws, &keys, &none).unwrap().kid, keys[1].kid());
    }
    // Signed by no trusted key: a bad signature, whatever the kid...
    assert_eq!(check(&by_kid, &keys[..1], &none).unwrap_err(), OtaError::BadSignature);
    assert_eq!(
        check(&sign_manifest(&k2, &m), &keys[..1], &none).unwrap_err(),
        OtaError::BadSignature
    );
    // ...unless the header names a key this device retired.
    let retired = [keys[1].kid().to_owned()];
    let e = check(&by_kid, &keys[..1], &retired).unwrap_err();
    assert_eq!((e.kind(), e), ("retired_key", OtaError::RetiredKey(keys[1].kid().to_owned())));
    // A kid that is no sane id is malformed, not looked up.
    let odd = sign_manifest_as(&k1, Some("x\u{7}"), &m);
    assert_eq!(check(&odd, &keys, &none).unwrap_err().kind(), "malformed");
}

#[test]
fn keygen_names_its_keys_by_thumbprint_and_a_jwk_kid_wins() {
    let (private, public) = keygen();
    let pk = parse_public_jwk(&public).unwrap();
    let kid = crate::keys::jwk_kid(&private).unwrap().unwrap();
    assert_eq!(kid, thumbprint(&pk));
    assert_eq!(kid.len(), 43);
    assert_eq!(IssuerKey::from_config_jwk(&public).unwrap().kid(), kid);
    let mut v: serde_json::Value = serde_json::from_str(&public).unwrap();
    v["kid"] = "fleet-2026".into();
    assert_eq!(IssuerKey::from_config_jwk(&v.to_string()).unwrap().kid(), "fleet-2026");
    v["kid"] = json!(7);
    assert!(IssuerKey::from_config_jwk(&v.to_string()).is_err());
    v.as_object_mut().unwrap().remove("kid");
    assert_eq!(IssuerKey::from_config_jwk(&v.to_string()).unwrap().kid(), kid);
}

#[test]
fn rotation_adds_then_retires_durably_never_the_signer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    let (k1, k2) = (generate_key(), generate_key());
    let (id1, id2) = (issuer(&k1), issuer(&k2));
    let mut ring = Keyring::open(id1.clone(), Some(&path)).unwrap();
    assert_eq!(ring.trusted_kids(), [id1.kid()]);
    // Manifest 1, by K1, announces K2 and raises the floor.
    let m1 = Manifest { next_jwk: Some(announced(&k2)), min_unixtime: Some(7), ..manifest(10) };
    let v = ring.verify(sign_manifest(&k1, &m1).as_bytes(), &policy(None)).unwrap();
    let l = ring.learn(&v.manifest, &v.kid).unwrap();
    assert_eq!((l.added.as_deref(), l.min_unixtime), (Some(id2.kid()), Some(7)));
    assert_eq!(ring.trusted_kids(), [id1.kid(), id2.kid()]);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    // Manifest 2, by K2, retires K1 and tries to retire K2 itself.
    let m2 = Manifest { retire_kids: vec![id1.kid().into(), id2.kid().into()], ..manifest(20) };
    let v = ring.verify(sign_manifest(&k2, &m2).as_bytes(), &policy(None)).unwrap();
    let l = ring.learn(&v.manifest, &v.kid).unwrap();
    assert_eq!((l.retired, l.kept), (vec![id1.kid().to_owned()], vec![id2.kid().to_owned()]));
    // Reopened with the config still naming K1: K1 stays retired.
    let ring = Keyring::open(id1.clone(), Some(&path)).unwrap();
    assert_eq!(ring.trusted_kids(), [id2.kid()]);
    assert_eq!(ring.min_unixtime(), 7);
    let m3 = sign_manifest(&k1, &manifest(30));
    assert_eq!(ring.verify(m3.as_bytes(), &policy(None)).unwrap_err(), OtaError::BadSignature);
    let m3 = sign_manifest_as(&k1, Some(id1.kid()), &manifest(30));
    assert_eq!(ring.verify(m3.as_bytes(), &policy(None)).unwrap_err().kind(), "retired_key");
    // The floor applies to verification: release 5 < 7.
    let old = sign_manifest(&k2, &manifest(5));
    assert_eq!(ring.verify(old.as_bytes(), &policy(None)).unwrap_err().kind(), "below_floor");
    // A retired key announced again is not trusted again.
    let mut ring = ring;
    let again = Manifest { next_jwk: Some(announced(&k1)), ..manifest(40) };
    assert_eq!(ring.learn(&again, id2.kid()).unwrap(), Learned::default());
    assert_eq!(ring.trusted_kids(), [id2.kid()]);
}

#[test]
fn a_key_answers_to_its_kid_and_its_thumbprint_when_retired_or_spared() {
    let (k1, k2) = (generate_key(), generate_key());
    // K1 configured under a kid of the operator's choosing.
    let mut jwk: serde_json::Value = serde_json::from_str(&public_jwk(k1.verifying_key())).unwrap();
    jwk["kid"] = "fleet-2025".into();
    let id1 = IssuerKey::from_config_jwk(&jwk.to_string()).unwrap();
    let thumb1 = thumbprint(k1.verifying_key());
    let mut ring = Keyring::open(id1.clone(), None).unwrap();
    let m = Manifest { next_jwk: Some(announced(&k2)), ..manifest(1) };
    ring.learn(&m, "fleet-2025").unwrap();
    // K1 signing a retirement of itself by thumbprint: spared.
    let own = Manifest { retire_kids: vec![thumb1.clone()], ..manifest(2) };
    assert_eq!(ring.learn(&own, "fleet-2025").unwrap().kept, vec![thumb1.clone()]);
    assert_eq!(ring.trusted_kids(), ["fleet-2025", issuer(&k2).kid()]);
    // K2 retiring K1 by thumbprint reaches it, though the device calls it
    // fleet-2025.
    let by_k2 = Manifest { retire_kids: vec![thumb1], ..manifest(3) };
    assert_eq!(ring.learn(&by_k2, issuer(&k2).kid()).unwrap().retired.len(), 1);
    assert_eq!(ring.trusted_kids(), [issuer(&k2).kid()]);
    // The same key announced again under a new kid is not trusted again.
    let mut again = announced(&k1);
    again["kid"] = "fresh-name".into();
    let m = Manifest { next_jwk: Some(again), ..manifest(4) };
    assert!(!ring.learn(&m, issuer(&k2).kid()).unwrap().changed());
    assert_eq!(ring.trusted_kids(), [issuer(&k2).kid()]);
}

#[test]
fn keyring_never_grows_past_its_bound_and_a_refused_learn_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    let k1 = generate_key();
    let mut ring = Keyring::open(issuer(&k1), Some(&path)).unwrap();
    for i in 1..MAX_TRUSTED_KEYS {
        let m = Manifest { next_jwk: Some(announced(&generate_key())), ..manifest(i as u64) };
        ring.learn(&m, issuer(&k1).kid()).unwrap();
    }
    assert_eq!(ring.trusted_kids().len(), MAX_TRUSTED_KEYS);
    let before = std::fs::read(&path).unwrap();
    let m = Manifest { next_jwk: Some(announced(&generate_key())), ..manifest(99) };
    let e = ring.learn(&m, issuer(&k1).kid()).unwrap_err();
    assert!(e.to_string().contains("more than 8"), "{e}");
    assert_eq!(ring.trusted_kids().len(), MAX_TRUSTED_KEYS);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // Retiring one in the same manifest makes room.
    let oldest = ring.trusted_kids()[1].clone();
    let m = Manifest { retire_kids: vec![oldest], ..m };
    assert!(ring.learn(&m, issuer(&k1).kid()).unwrap().added.is_some());
    assert_eq!(ring.trusted_kids().len(), MAX_TRUSTED_KEYS);
}

#[test]
fn retired_list_stays_bounded_and_keeps_the_configured_key_retired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    let (k1, k2) = (generate_key(), generate_key());
    let (id1, signer) = (issuer(&k1), issuer(&k2));
    let mut ring = Keyring::open(id1.clone(), Some(&path)).unwrap();
    ring.learn(&Manifest { next_jwk: Some(announced(&k2)), ..manifest(1) }, id1.kid()).unwrap();
    let m = Manifest { retire_kids: vec![id1.kid().into()], ..manifest(1) };
    ring.learn(&m, signer.kid()).unwrap();
    for batch in 0..10u64 {
        let kids = (0..16).map(|i| format!("gone-{batch}-{i}")).collect();
        ring.learn(&Manifest { retire_kids: kids, ..manifest(2) }, signer.kid()).unwrap();
    }
    let file = KeyringFile::load(&path).unwrap().unwrap();
    assert_eq!(file.retired.len(), MAX_RETIRED);
    assert!(file.retired.iter().any(|k| k == id1.kid()));
    assert_eq!(Keyring::open(id1, Some(&path)).unwrap().trusted_kids(), [signer.kid()]);
    // Retiring the last trusted key is refused outright.
    let m = Manifest { retire_kids: vec![signer.kid().into()], ..manifest(3) };
    assert_eq!(ring.learn(&m, "not-a-trusted-signer").unwrap_err().kind(), "bad_key");
}

#[test]
fn keyring_file_refuses_garbage_oversize_symlinks_and_unknown_members() {
    let dir = tempfile::tempdir().unwrap();
    let id = issuer(&generate_key());
    let p = dir.path().join("keyring.json");
    // Missing: an empty keyring, the configured key alone.
    assert_eq!(KeyringFile::load(&p).unwrap(), None);
    assert_eq!(Keyring::open(id.clone(), Some(&p)).unwrap().trusted_kids(), [id.kid()]);
    let refused = |bytes: &[u8], needle: &str| {
        std::fs::write(&p, bytes).unwrap();
        let e = Keyring::open(id.clone(), Some(&p)).unwrap_err();
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    };
    refused(b"\xff\x00garbage", "keyring");
    refused(b"{}", "missing field");
    refused(br#"{"version":1,"keys":[],"retired":[],"min_unixtime":0,"extra":1}"#, "unknown field");
    refused(br#"{"version":2,"keys":[],"retired":[],"min_unixtime":0}"#, "version 2");
    refused(br#"{"version":1,"keys":[{"kty":"EC"}],"retired":[],"min_unixtime":0}"#, "keyring");
    refused(br#"{"version":1,"keys":[],"retired":[""],"min_unixtime":0}"#, "kid");
    let nine: Vec<_> = (0..9).map(|_| announced(&generate_key())).collect();
    let v = json!({"version": 1, "keys": nine, "retired": [], "min_unixtime": 0});
    refused(v.to_string().as_bytes(), "more keys");
    let mut big = br#"{"version":1,"keys":[],"retired":[],"min_unixtime":0}"#.to_vec();
    big.resize(MAX_KEYRING_BYTES as usize + 1, b' ');
    refused(&big, "over 65536 bytes");
    // A symlink planted at the path is not followed.
    std::fs::remove_file(&p).unwrap();
    let target = dir.path().join("elsewhere.json");
    std::fs::write(&target, br#"{"version":1,"keys":[],"retired":[],"min_unixtime":9}"#).unwrap();
    std::os::unix::fs::symlink(&target, &p).unwrap();
    let e = Keyring::open(id.clone(), Some(&p)).unwrap_err();
    assert!(e.to_string().contains("symlink"), "{e}");
    // A directory is not a keyring.
    std::fs::remove_file(&p).unwrap();
    std::fs::create_dir(&p).unwrap();
    assert!(Keyring::open(id, Some(&p)).is_err());
}
