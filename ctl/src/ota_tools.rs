//! `lwsysctl ota` helpers: `keygen` (a P-521 JWK pair on disk), `publish`
//! (sign, gzip and chunk an image into a directory ready to serve),
//! `verify` (check such a directory end to end) and
//! `render_progress` (one line of `ota watch`'s progress bar).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use lwsys_manifest::chunks::MIN_CHUNK_SIZE;
use lwsys_manifest::{ChunkIndex, Manifest, PublishOptions};
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

/// `lwsysctl ota publish --key KEY --variant V IMAGE DIR`: measures, gzips,
/// chunks (64 KiB) and signs `image` into `DIR/V/` (`manifest.jws`, the
/// gzip image, the chunk index and chunk file), stamped with the current
/// time. Returns the manifest.
pub fn publish(key: &Path, variant: &str, image: &Path, dir: &Path) -> Result<Manifest, OtaError> {
    publish_with(key, variant, image, dir, None, &PublishOptions::default())
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
    publish_with(key, variant, image, dir, Some(unixtime), &PublishOptions::default())
}

/// [`publish`] with every choice: the release `unixtime` (`None`: now)
/// and the chunk layout (`opts.chunk_size: None` for an
/// upstream-identical release without a chunk index).
pub fn publish_with(
    key: &Path,
    variant: &str,
    image: &Path,
    dir: &Path,
    unixtime: Option<u64>,
    opts: &PublishOptions,
) -> Result<Manifest, OtaError> {
    let unixtime = unixtime.unwrap_or_else(unix_now);
    let jwk = std::fs::read_to_string(key).map_err(|e| io("read", key, e))?;
    lwsys_manifest::publish_with(&jwk, variant, image, dir, unixtime, opts)
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
    /// Sets the fields these flags sign into `opts`, `expires` counted
    /// from now. The next key must be a public JWK (a private one is
    /// refused rather than published).
    pub fn apply(&self, opts: &mut PublishOptions) -> Result<(), OtaError> {
        let now = unix_now();
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
        opts.expires = expires;
        opts.min_unixtime = self.min_unixtime;
        opts.next_jwk = next_jwk;
        opts.retire_kids = self.retire.clone();
        Ok(())
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `lwsysctl ota verify --key PUBLIC --variant V DIR`: checks
/// `DIR/V/manifest.jws` as a device for `variant` with nothing installed
/// would (signature with the public JWK at `public_key`, alg, exact
/// variant, fields, path), that the `.img.gz` it names inflates to its
/// `size` and `sha512`, and with a chunk index, that the index is the one
/// signed and every chunk in the chunk file inflates to its hash and the
/// chunks add up to the image. Returns the manifest and, if chunked, the
/// index.
pub fn verify(
    public_key: &Path,
    variant: &str,
    dir: &Path,
) -> Result<(Manifest, Option<ChunkIndex>), OtaError> {
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
    let f = File::open(&image).map_err(|e| io("open", &image, e))?;
    lwsys_manifest::verify_image_gz(&m, BufReader::with_capacity(256 * 1024, f))?;
    let Some(r) = &m.chunks else { return Ok((m, None)) };
    let index_path = at.join(&r.index);
    // Bounded read: a valid index is 24 + 36 per chunk of the limit.
    let limit = policy.max_image_bytes / u64::from(MIN_CHUNK_SIZE) * 36 + 24;
    let index = read_bounded(&index_path, limit)?;
    let ix = lwsys_manifest::check_index(&m, &index, policy.max_image_bytes)?;
    let chunk_path = at.join(&r.file);
    let f = File::open(&chunk_path).map_err(|e| io("open", &chunk_path, e))?;
    lwsys_manifest::verify_chunk_file(&ix, &m, BufReader::with_capacity(256 * 1024, f))?;
    Ok((m, Some(ix)))
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, OtaError> {
    let f = File::open(path).map_err(|e| io("open", path, e))?;
    let mut bytes = Vec::new();
    f.take(limit + 1).read_to_end(&mut bytes).map_err(|e| io("read", path, e))?;
    if bytes.len() as u64 > limit {
        return Err(OtaError::ChunkIndex(format!("{} is over {limit} bytes", path.display())));
    }
    Ok(bytes)
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
/// 1.5 MiB`, then `, fetched 96.0 KiB, reused 1.4 MiB` (and `, resumed
/// N`) once an install has counted any. The bar is full only at `done` (100 % comes only once the
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
    // Where the bytes came from (issue 17): the network or the device.
    if event.counts.bytes_fetched > 0
        || event.counts.bytes_reused > 0
        || event.counts.bytes_resumed > 0
    {
        line.push_str(&format!(
            ", fetched {}, reused {}",
            human(event.counts.bytes_fetched),
            human(event.counts.bytes_reused)
        ));
        if event.counts.bytes_resumed > 0 {
            line.push_str(&format!(", resumed {}", human(event.counts.bytes_resumed)));
        }
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
    use lwsys_messages::ota::InstallCounts;
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
        let (v, ix) = verify(&pair.public, "xyz-v1", &repo).unwrap();
        assert_eq!((v, ix.map(|i| i.chunks.len())), (m.clone(), Some(2)));
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
        let publish_flagged = |t: u64, flags: &TrustFlags| {
            let mut opts = PublishOptions::default();
            flags.apply(&mut opts)?;
            publish_with(&k1.private, "xyz-v1", &image, &repo, Some(t), &opts)
        };
        let m = publish_flagged(2000, &flags).unwrap();
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
        assert_eq!(verify(&k1.public, "xyz-v1", &repo).unwrap().0, m);
        // A private key as the next key is refused, and nothing is written.
        let bad = TrustFlags { next_key: Some(k2.private.clone()), ..TrustFlags::default() };
        let e = publish_flagged(3000, &bad).unwrap_err();
        assert!(e.to_string().contains("private key"), "{e}");
        // A floor above the release itself is refused.
        let bad = TrustFlags { min_unixtime: Some(3001), ..TrustFlags::default() };
        assert!(publish_flagged(3000, &bad).is_err());
        assert!(!repo.join("xyz-v1/xyz-v1-3000.img.gz").exists());
        // Expired already: `ota verify` judges it as a device would now.
        let past = TrustFlags { expires_in: Some(0), ..TrustFlags::default() };
        publish_flagged(4000, &past).unwrap();
        let opts = PublishOptions { expires: Some(1), ..PublishOptions::default() };
        publish_with(&k1.private, "xyz-v1", &image, &repo, Some(5000), &opts).unwrap();
        assert_eq!(verify(&k1.public, "xyz-v1", &repo).unwrap_err().kind(), "expired");
    }

    #[test]
    fn verify_checks_the_image_index_and_every_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let pair = keygen(&dir.path().join("keys")).unwrap();
        let image = dir.path().join("fw.img");
        let bytes: Vec<u8> = (0..50_000u32).map(|i| (i * 31 % 247) as u8).collect();
        std::fs::write(&image, &bytes).unwrap();
        let repo = dir.path().join("repo");
        let opts = PublishOptions { chunk_size: Some(4096), ..PublishOptions::default() };
        let m = publish_with(&pair.private, "v", &image, &repo, Some(9), &opts).unwrap();
        let (_, ix) = verify(&pair.public, "v", &repo).unwrap();
        assert_eq!(ix.map(|i| i.chunks.len()), Some(13), "ceil(50000 / 4096)");
        let chunks = repo.join("v/v-9.chunks");
        let good = std::fs::read(&chunks).unwrap();
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 12] ^= 0x40;
        std::fs::write(&chunks, &bad).unwrap();
        let e = verify(&pair.public, "v", &repo).unwrap_err();
        assert!(matches!(e, OtaError::ChunkIndex(ref s) if s.contains("chunk 12")), "{e:?}");
        std::fs::write(&chunks, &good).unwrap();
        let idx = repo.join("v/v-9.idx");
        let mut i = std::fs::read(&idx).unwrap();
        i.push(0);
        std::fs::write(&idx, &i).unwrap();
        assert!(matches!(verify(&pair.public, "v", &repo), Err(OtaError::ChunkIndex(_))));
        // The .img.gz is checked too, not just present.
        let gz = repo.join("v").join(&m.path);
        let mut g = std::fs::read(&gz).unwrap();
        let n = g.len();
        g[n - 8] ^= 1; // the CRC32 in the trailer
        std::fs::write(&gz, &g).unwrap();
        assert!(verify(&pair.public, "v", &repo).is_err());
        // Without chunks: upstream's release, no index to check.
        let opts = PublishOptions { chunk_size: None, ..PublishOptions::default() };
        let m = publish_with(&pair.private, "v", &image, &repo, Some(10), &opts).unwrap();
        assert!(m.chunks.is_none());
        let (v, ix) = verify(&pair.public, "v", &repo).unwrap();
        assert_eq!((v, ix), (m, None));
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
        let chunked = render_progress(&OtaEvent {
            phase: OtaPhase::Downloading,
            percent: 50,
            bytes: 2 << 20,
            counts: InstallCounts {
                bytes_fetched: 96 << 10,
                bytes_reused: 1 << 20,
                ..InstallCounts::default()
            },
            ..OtaEvent::default()
        });
        assert!(chunked.ends_with("2.0 MiB, fetched 96.0 KiB, reused 1.0 MiB"), "{chunked}");
        let v = serde_json::json!({"event": "ota", "phase": "checking", "percent": 0, "bytes": 0, "error": "x"});
        assert_eq!(parse_event(&v).unwrap().phase, OtaPhase::Checking);
        assert!(parse_event(&serde_json::json!({"event": "state"})).is_none());
    }
}
