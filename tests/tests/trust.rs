//! The trust store through the real daemon (issue 8): `trust.query` by
//! SKID over the Mozilla TBLB fixture and the machine's `/etc/ssl/certs`,
//! `not_found` and `bad_request` answers, and the backends' counts in
//! `system.info`.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::Engine as _;
use lwsys_tests::{Options, TestDaemon};
use serde_json::{json, Value};

/// The Mozilla TBLB fixture: `../shared/fixtures` beside the workspace, or
/// the nearest `shared/fixtures` above it.
fn fixture_path() -> PathBuf {
    let root = lwsys_tests::workspace_root();
    let beside = root.join("../shared/fixtures/mozilla-trust.tblb");
    if beside.is_file() {
        return beside;
    }
    root.ancestors()
        .map(|a| a.join("shared/fixtures/mozilla-trust.tblb"))
        .find(|p| p.is_file())
        .expect("shared/fixtures/mozilla-trust.tblb beside the workspace")
}

fn be32(b: &[u8], at: usize) -> usize {
    usize::try_from(u32::from_be_bytes(b[at..at + 4].try_into().unwrap())).unwrap()
}

/// The fixture's (SKID, DER) pairs, read by the layout in
/// `shared/fixtures/README.md`, independently of the daemon's reader.
fn fixture_certs(blob: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    assert_eq!(&blob[..4], b"TBLB");
    let count = usize::from(u16::from_be_bytes([blob[6], blob[7]]));
    let (der_lens, skid_lens, skids) = (be32(blob, 0x0c), be32(blob, 0x10), be32(blob, 0x14));
    let (mut der_at, mut skid_at) = (0x1c, skids);
    (0..count)
        .map(|i| {
            let dl = usize::from(u16::from_be_bytes([
                blob[der_lens + 2 * i],
                blob[der_lens + 2 * i + 1],
            ]));
            let sl = usize::from(blob[skid_lens + i]);
            let der = blob[der_at..der_at + dl].to_vec();
            let skid = blob[skid_at..skid_at + sl].to_vec();
            der_at += dl;
            skid_at += sl;
            (skid, der)
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `ab:cd:...` upper case, as `openssl x509 -text` prints a SKID.
fn colon_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect::<Vec<_>>().join(":")
}

fn der_of(cert: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(cert["der_b64"].as_str().unwrap()).unwrap()
}

fn trust_config(blobs: &[&Path], dirs: &[&Path]) -> String {
    let list = |ps: &[&Path]| {
        ps.iter().map(|p| format!("{:?}", p.display().to_string())).collect::<Vec<_>>().join(", ")
    };
    format!("[trust]\nblob_files = [{}]\ncert_dirs = [{}]\n", list(blobs), list(dirs))
}

#[test]
fn fixture_blob_answers_every_skid_and_reports_128_certs() {
    let path = fixture_path();
    let blob = std::fs::read(&path).unwrap();
    let certs = fixture_certs(&blob);
    assert_eq!(certs.len(), 128);
    let d = TestDaemon::with(Options {
        config: Some(trust_config(&[&path], &[])),
        ..Options::default()
    });
    let mut c = d.connect();

    let info = c.ok("system.info", json!({}));
    println!("system.info trust: {}", info["trust"]);
    let backends = info["trust"]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 1, "{info}");
    assert_eq!(backends[0]["kind"], "tblb", "{info}");
    assert_eq!(backends[0]["certs"], 128, "{info}");
    assert_eq!(backends[0]["without_skid"], 2, "{info}");
    assert_eq!(info["wake_latency_us"], 0, "{info}");

    let started = Instant::now();
    let mut asked = 0;
    for (skid, der) in certs.iter().filter(|(s, _)| !s.is_empty()) {
        let r = c.ok("trust.query", json!({"skid": hex(skid)}));
        let got = r["certs"].as_array().unwrap();
        assert_eq!(got.len(), 1, "{}: {r}", hex(skid));
        assert_eq!(&der_of(&got[0]), der);
        assert!(!got[0]["subject"].as_str().unwrap().is_empty(), "{r}");
        assert!(got[0]["not_after"].as_i64().is_some(), "{r}");
        assert!(got[0]["expired"].is_boolean(), "{r}");
        asked += 1;
    }
    assert_eq!(asked, 126);
    println!("{asked} trust.query round trips in {:?}", started.elapsed());

    // Colons and upper case, as openssl prints them.
    let (skid, der) = certs.iter().find(|(s, _)| !s.is_empty()).unwrap();
    let r = c.ok("trust.query", json!({"skid": colon_hex(skid)}));
    assert_eq!(&der_of(&r["certs"][0]), der);
    let r = c.ok("trust.query", json!({"skid": format!("  {}  ", hex(skid))}));
    assert_eq!(&der_of(&r["certs"][0]), der);
}

#[test]
fn unknown_skids_are_not_found_and_malformed_ones_bad_requests() {
    let path = fixture_path();
    let d = TestDaemon::with(Options {
        config: Some(trust_config(&[&path], &[])),
        ..Options::default()
    });
    let mut c = d.connect();
    let known: Vec<Vec<u8>> =
        fixture_certs(&std::fs::read(&path).unwrap()).into_iter().map(|(s, _)| s).collect();
    // A fixed "random" SKID, checked not to be one of the fixture's.
    let random: Vec<u8> = (0u8..20).map(|i| i.wrapping_mul(37).wrapping_add(0x5a)).collect();
    assert!(!known.contains(&random));
    c.err("trust.query", json!({"skid": hex(&random)}), "not_found");
    // A prefix of a real SKID is not a match: lookups are exact.
    let real = known.iter().find(|s| !s.is_empty()).unwrap();
    c.err("trust.query", json!({"skid": hex(&real[..10])}), "not_found");
    for bad in [
        json!({"skid": "zz"}),
        json!({"skid": "abc"}),
        json!({"skid": ""}),
        json!({"skid": "00".repeat(65)}),
        json!({"skid": 12}),
        json!({}),
    ] {
        c.err("trust.query", bad, "bad_request");
    }
    c.err("trust.bogus", json!({}), "unknown_op");
}

/// The Subject Key Identifier extension's value in a DER certificate,
/// found by its OID (2.5.29.14) without a full X.509 parser.
fn skid_of(der: &[u8]) -> Option<Vec<u8>> {
    const OID: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x0e];
    let at = der.windows(OID.len()).position(|w| w == OID)? + OID.len();
    let mut rest = der.get(at..)?;
    // An optional `critical` BOOLEAN.
    if rest.first() == Some(&0x01) {
        rest = rest.get(3..)?;
    }
    // OCTET STRING wrapping OCTET STRING (both short-form lengths here).
    if rest.first() != Some(&0x04) || rest.get(2) != Some(&0x04) {
        return None;
    }
    let len = usize::from(*rest.get(3)?);
    rest.get(4..4 + len).map(<[u8]>::to_vec)
}

/// The DER certificates of a PEM file.
fn pem_certs(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut b64 = None::<String>;
    for line in text.lines() {
        match (line.trim(), &mut b64) {
            ("-----BEGIN CERTIFICATE-----", _) => b64 = Some(String::new()),
            ("-----END CERTIFICATE-----", Some(s)) => {
                if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(s.as_bytes()) {
                    out.push(der);
                }
                b64 = None;
            }
            (l, Some(s)) => s.push_str(l),
            _ => {}
        }
    }
    out
}

#[test]
fn system_cert_dir_answers_by_skid_including_shared_skids() {
    let dir = Path::new("/etc/ssl/certs");
    if !dir.is_dir() {
        println!("skipped: /etc/ssl/certs is absent on this machine");
        return;
    }
    // Distinct certs by SKID, as the daemon should index them.
    let mut by_skid: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        for der in pem_certs(&text) {
            if let Some(skid) = skid_of(&der) {
                let ders = by_skid.entry(skid).or_default();
                if !ders.contains(&der) {
                    ders.push(der);
                }
            }
        }
    }
    if by_skid.is_empty() {
        println!("skipped: /etc/ssl/certs holds no certificates with a SKID");
        return;
    }
    let d =
        TestDaemon::with(Options { config: Some(trust_config(&[], &[dir])), ..Options::default() });
    let mut c = d.connect();
    let info = c.ok("system.info", json!({}));
    println!("system.info trust: {}", info["trust"]);
    let b = &info["trust"]["backends"][0];
    assert_eq!(b["kind"], "cert_dir", "{info}");
    let held = b["certs"].as_u64().unwrap();
    let indexed: usize = by_skid.values().map(Vec::len).sum();
    assert!(held >= indexed as u64, "{held} held, {indexed} with a SKID: {info}");

    let mut shared = 0;
    for (skid, ders) in &by_skid {
        let r = c.ok("trust.query", json!({"skid": hex(skid)}));
        let got: Vec<Vec<u8>> = r["certs"].as_array().unwrap().iter().map(der_of).collect();
        for der in ders {
            assert!(got.contains(der), "{}: a cert with it is missing", hex(skid));
        }
        if ders.len() > 1 {
            shared += 1;
            println!("SKID {} is shared by {} roots; all came back", hex(skid), got.len());
        }
    }
    println!("{} SKIDs queried, {shared} shared by several roots", by_skid.len());
}
