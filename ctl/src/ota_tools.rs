//! `lwsysctl ota` helpers: `keygen` (a P-521 JWK pair on disk), `publish`
//! (sign and gzip an image into a directory ready to serve) and
//! `render_progress` (one line of `ota watch`'s progress bar).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use lwsys_manifest::publish::PublishOptions;
use lwsys_manifest::Manifest;
use lwsys_messages::ota::{OtaError, OtaEvent, OtaPhase};

/// File name of the private key `keygen` writes.
pub const PRIVATE_JWK: &str = "ota-private.jwk";
/// File name of the public key `keygen` writes (give it to devices as
/// `[ota] public_jwk`).
pub const PUBLIC_JWK: &str = "ota-public.jwk";

/// Where `keygen` put the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// The private JWK (mode 0600): the issuer's secret.
    pub private: PathBuf,
    /// The public JWK.
    pub public: PathBuf,
    /// The key's id (`kid` in both JWKs: its RFC 7638 thumbprint), which
    /// `ota publish --retire` names.
    pub kid: String,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> OtaError {
    OtaError::Io(format!("{what} {}: {e}", path.display()))
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), OtaError> {
    // create_new: never overwrite a key someone may already rely on.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io("create", path, e))?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| io("write", path, e))
}

/// `lwsysctl ota keygen OUT_DIR`: writes a new P-521 key pair as JWKs,
/// [`PRIVATE_JWK`] (mode 0600) and [`PUBLIC_JWK`] (0644), into `out_dir`
/// (created if missing). Refuses to overwrite existing key files.
pub fn keygen(out_dir: &Path) -> Result<KeyPair, OtaError> {
    std::fs::create_dir_all(out_dir).map_err(|e| io("create", out_dir, e))?;
    let (private, public) = lwsys_manifest::keygen();
    let kid = lwsys_manifest::keys::jwk_kid(&public)?.unwrap_or_default();
    let pair =
        KeyPair { private: out_dir.join(PRIVATE_JWK), public: out_dir.join(PUBLIC_JWK), kid };
    write_new(&pair.private, &private, 0o600)?;
    write_new(&pair.public, &public, 0o644)?;
    Ok(pair)
}

/// `lwsysctl ota publish --key KEY --variant V IMAGE DIR`: measures, gzips
/// and signs `image` into `DIR/V/` (`manifest.jws` and the gzip image),
/// stamped with the current time. Returns the manifest.
pub fn publish(key: &Path, variant: &str, image: &Path, dir: &Path) -> Result<Manifest, OtaError> {
    publish_at(key, variant, image, dir, unix_now())
}

/// [`publish`] with an explicit release `unixtime` (releases are ordered
/// by it; a device installs only a newer one).
pub fn publish_at(
    key: &Path,
    variant: &str,
    image: &Path,
    dir: &Path,
    unixtime: u64,
) -> Result<Manifest, OtaError> {
    let jwk = std::fs::read_to_string(key).map_err(|e| io("read", key, e))?;
    lwsys_manifest::publish(&jwk, variant, image, dir, unixtime)
}

/// [`publish_at`] with the freshness and key rotation fields of `opts`.
pub fn publish_at_with(
    key: &Path,
    variant: &str,
    image: &Path,
    dir: &Path,
    unixtime: u64,
    opts: &PublishOptions,
) -> Result<Manifest, OtaError> {
    let jwk = std::fs::read_to_string(key).map_err(|e| io("read", key, e))?;
    lwsys_manifest::publish::publish_with(&jwk, variant, image, dir, unixtime, opts)
}

/// `ota publish`'s freshness and key rotation flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustFlags {
    /// `--expires-in SECS`: the manifest expires this long after now.
    pub expires_in: Option<u64>,
    /// `--min-unixtime N`: devices never install a release older than N.
    pub min_unixtime: Option<u64>,
    /// `--next-key FILE`: a public JWK devices add to their trusted keys.
    pub next_key: Option<PathBuf>,
    /// `--retire KID`: key ids devices stop trusting.
    pub retire: Vec<String>,
}

/// Largest `--next-key` file read, bytes (a P-521 JWK is about 300).
const MAX_JWK_FILE: u64 = 16 * 1024;

impl TrustFlags {
    /// The options these flags sign in, `expires` counted from `now`. The
    /// next key must be a public JWK (a private one is refused rather than
    /// published).
    pub fn options(&self, now: u64) -> Result<PublishOptions, OtaError> {
        let expires = match self.expires_in {
            Some(secs) => Some(
                now.checked_add(secs)
                    .ok_or_else(|| OtaError::Malformed("--expires-in is too large".into()))?,
            ),
            None => None,
        };
        let next_jwk = match &self.next_key {
            Some(path) => {
                let f = std::fs::File::open(path).map_err(|e| io("read", path, e))?;
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::Read::take(f, MAX_JWK_FILE), &mut text)
                    .map_err(|e| io("read", path, e))?;
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| OtaError::BadKey(format!("{}: not JSON: {e}", path.display())))?;
                if v.get("d").is_some() {
                    return Err(OtaError::BadKey(format!(
                        "{} is a private key; give the public JWK",
                        path.display()
                    )));
                }
                Some(v)
            }
            None => None,
        };
        Ok(PublishOptions {
            expires,
            min_unixtime: self.min_unixtime,
            next_jwk,
            retire_kids: self.retire.clone(),
        })
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `lwsysctl ota publish` with its flags: the release at `unixtime`
/// (default now), `flags` signed in.
pub fn publish_flagged(
    key: &Path,
    variant: &str,
    image: &Path,
    dir: &Path,
    unixtime: Option<u64>,
    flags: &TrustFlags,
) -> Result<Manifest, OtaError> {
    let now = unix_now();
    let opts = flags.options(now)?;
    publish_at_with(key, variant, image, dir, unixtime.unwrap_or(now), &opts)
}

/// `lwsysctl ota verify --key PUBLIC --variant V DIR`: checks
/// `DIR/V/manifest.jws` as a device for `variant` with nothing installed
/// would (signature with the public JWK at `public_key`, alg, exact
/// variant, fields, path) and that the image it names is there. Returns
/// the manifest. The image's hash is checked by the device as it installs.
pub fn verify(public_key: &Path, variant: &str, dir: &Path) -> Result<Manifest, OtaError> {
    let jwk = std::fs::read_to_string(public_key).map_err(|e| io("read", public_key, e))?;
    let key = lwsys_manifest::parse_public_jwk(&jwk)?;
    let at = dir.join(variant);
    let path = at.join("manifest.jws");
    let jws = std::fs::read(&path).map_err(|e| io("read", &path, e))?;
    // Judged as a device with a valid clock would, now.
    let policy = lwsys_manifest::ManifestPolicy {
        now: Some(unix_now()),
        ..lwsys_manifest::ManifestPolicy::new(variant)
    };
    let m = lwsys_manifest::verify_manifest(&jws, &key, &policy)?;
    let image = at.join(&m.path);
    std::fs::metadata(&image).map_err(|e| io("stat", &image, e))?;
    Ok(m)
}

/// Bytes as a short human figure (`1.5 MiB`).
fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if unit == "B" {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// Cells in the progress bar.
const BAR: usize = 30;

/// One line of `lwsysctl ota watch`: `[#######-------]  42% downloading
/// 1.5 MiB`. The bar is full only at `done` (100 % comes only once the
/// install is finalized).
pub fn render_progress(event: &OtaEvent) -> String {
    let pct = usize::from(event.percent.min(100));
    let filled = pct * BAR / 100;
    let bar: String = "#".repeat(filled) + &"-".repeat(BAR - filled);
    let mut line = format!("[{bar}] {pct:>3}% {}", event.phase);
    if event.bytes > 0 || matches!(event.phase, OtaPhase::Downloading | OtaPhase::Verifying) {
        line.push(' ');
        line.push_str(&human(event.bytes));
    }
    line
}

/// The [`OtaEvent`] in an `{"event": "ota", ...}` protocol line, if it is
/// one (extra members such as `error` are ignored).
pub fn parse_event(v: &serde_json::Value) -> Option<OtaEvent> {
    match serde_json::from_value::<lwsys_messages::protocol::Event>(v.clone()) {
        Ok(lwsys_messages::protocol::Event::Ota(p)) => Some(p.progress),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn keygen_writes_a_private_key_only_its_owner_reads_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let pair = keygen(dir.path()).unwrap();
        let mode = std::fs::metadata(&pair.private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let public = std::fs::read_to_string(&pair.public).unwrap();
        lwsys_manifest::parse_public_jwk(&public).unwrap();
        assert!(!public.contains("\"d\""));
        assert!(keygen(dir.path()).is_err());
    }

    #[test]
    fn publish_writes_a_manifest_and_image_ready_to_serve() {
        let dir = tempfile::tempdir().unwrap();
        let pair = keygen(&dir.path().join("keys")).unwrap();
        let image = dir.path().join("fw.img");
        std::fs::write(&image, vec![7u8; 100_000]).unwrap();
        let repo = dir.path().join("repo");
        let m = publish_at(&pair.private, "xyz-v1", &image, &repo, 1234).unwrap();
        assert_eq!((m.size, m.unixtime, m.reset), (100_000, 1234, true));
        let jws = std::fs::read(repo.join("xyz-v1/manifest.jws")).unwrap();
        let key = lwsys_manifest::parse_public_jwk(&std::fs::read_to_string(&pair.public).unwrap())
            .unwrap();
        let policy = lwsys_manifest::ManifestPolicy::new("xyz-v1");
        assert_eq!(lwsys_manifest::verify_manifest(&jws, &key, &policy).unwrap(), m);
        assert!(repo.join("xyz-v1").join(&m.path).exists());
        assert_eq!(verify(&pair.public, "xyz-v1", &repo).unwrap(), m);
        assert!(verify(&pair.public, "xyz-v", &repo).is_err());
        assert!(publish(&pair.private, "xyz-v1", &image, &repo).unwrap().unixtime > 1234);
    }

    #[test]
    fn publish_flags_sign_freshness_and_rotation_and_the_header_names_the_kid() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = keygen(&dir.path().join("k1")).unwrap();
        let k2 = keygen(&dir.path().join("k2")).unwrap();
        let image = dir.path().join("fw.img");
        std::fs::write(&image, vec![7u8; 1000]).unwrap();
        let repo = dir.path().join("repo");
        let flags = TrustFlags {
            expires_in: Some(3600),
            min_unixtime: Some(1000),
            next_key: Some(k2.public.clone()),
            retire: vec!["old-key".into()],
        };
        let m = publish_flagged(&k1.private, "xyz-v1", &image, &repo, Some(2000), &flags).unwrap();
        let now = unix_now();
        assert!(m.expires.is_some_and(|e| e >= now + 3590 && e <= now + 3600), "{m:?}");
        assert_eq!((m.min_unixtime, m.retire_kids.clone()), (Some(1000), vec!["old-key".into()]));
        assert_eq!(m.next_jwk.as_ref().and_then(|j| j["kid"].as_str()), Some(k2.kid.as_str()));
        let jws = std::fs::read_to_string(repo.join("xyz-v1/manifest.jws")).unwrap();
        let header = jws.split('.').next().unwrap();
        use base64::Engine as _;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "ES512", "kid": k1.kid}));
        assert_eq!(verify(&k1.public, "xyz-v1", &repo).unwrap(), m);
        // A private key as the next key is refused, and nothing is written.
        let bad = TrustFlags { next_key: Some(k2.private.clone()), ..TrustFlags::default() };
        let e =
            publish_flagged(&k1.private, "xyz-v1", &image, &repo, Some(3000), &bad).unwrap_err();
        assert!(e.to_string().contains("private key"), "{e}");
        // A floor above the release itself is refused.
        let bad = TrustFlags { min_unixtime: Some(3001), ..TrustFlags::default() };
        assert!(publish_flagged(&k1.private, "xyz-v1", &image, &repo, Some(3000), &bad).is_err());
        assert!(!repo.join("xyz-v1/xyz-v1-3000.img.gz").exists());
        // Expired already: `ota verify` judges it as a device would now.
        let past = TrustFlags { expires_in: Some(0), ..TrustFlags::default() };
        publish_flagged(&k1.private, "xyz-v1", &image, &repo, Some(4000), &past).unwrap();
        let opts = PublishOptions { expires: Some(1), ..PublishOptions::default() };
        publish_at_with(&k1.private, "xyz-v1", &image, &repo, 5000, &opts).unwrap();
        assert_eq!(verify(&k1.public, "xyz-v1", &repo).unwrap_err().kind(), "expired");
    }

    #[test]
    fn progress_bar_is_full_only_when_done() {
        let e = OtaEvent {
            phase: OtaPhase::Downloading,
            percent: 50,
            bytes: 3 << 20,
            ..OtaEvent::default()
        };
        let line = render_progress(&e);
        assert_eq!(
            line,
            format!("[{}{}]  50% downloading 3.0 MiB", "#".repeat(15), "-".repeat(15))
        );
        let done = render_progress(&OtaEvent {
            phase: OtaPhase::Done,
            percent: 100,
            bytes: 10,
            ..OtaEvent::default()
        });
        assert!(done.starts_with(&format!("[{}] 100% done", "#".repeat(30))), "{done}");
        let v = serde_json::json!({"event": "ota", "phase": "checking", "percent": 0, "bytes": 0, "error": "x"});
        assert_eq!(parse_event(&v).unwrap().phase, OtaPhase::Checking);
        assert!(parse_event(&serde_json::json!({"event": "state"})).is_none());
    }
}
