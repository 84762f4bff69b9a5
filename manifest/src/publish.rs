//! The issuer's side: measure, gzip and sign an image into a directory
//! ready to serve (`lwsysctl ota publish`).

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use lwsys_messages::OtaError;
use sha2::{Digest as _, Sha512};

use crate::jwk::parse_private_jwk;
use crate::jws::{check_path, check_trust_fields, sign_manifest_as, Manifest};
use crate::keys::jwk_kid;

/// What `lwsysctl ota publish` signs into a manifest besides the release
/// itself (all optional; none set gives upstream's payload exactly).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// `expires`: the unixtime after which devices with a valid clock
    /// refuse the manifest.
    pub expires: Option<u64>,
    /// `min_unixtime`: devices never install a release older than this
    /// again (at most the release's own unixtime).
    pub min_unixtime: Option<u64>,
    /// `next_jwk`: a public JWK devices add to their trusted keys.
    pub next_jwk: Option<serde_json::Value>,
    /// `retire_kids`: key ids devices stop trusting.
    pub retire_kids: Vec<String>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> OtaError {
    OtaError::Io(format!("{what} {}: {e}", path.display()))
}

/// Publishes `image` for `variant` into `out_dir`: writes
/// `<out_dir>/<variant>/<variant>-<unixtime>.img.gz` and
/// `<out_dir>/<variant>/manifest.jws` (signed with the private JWK
/// `key_jwk`, `reset: true`), and returns the manifest. `size` and
/// `sha512` are of the plain image.
pub fn publish(
    key_jwk: &str,
    variant: &str,
    image: &Path,
    out_dir: &Path,
    unixtime: u64,
) -> Result<Manifest, OtaError> {
    publish_with(key_jwk, variant, image, out_dir, unixtime, &PublishOptions::default())
}

/// [`publish`] with `opts` signed into the manifest, which is checked as
/// a device would before anything is written. The JWS header names the
/// key's `kid` when its JWK has one.
pub fn publish_with(
    key_jwk: &str,
    variant: &str,
    image: &Path,
    out_dir: &Path,
    unixtime: u64,
    opts: &PublishOptions,
) -> Result<Manifest, OtaError> {
    let key = parse_private_jwk(key_jwk)?;
    let kid = jwk_kid(key_jwk)?;
    check_path(variant)?;
    let trust = Manifest {
        unixtime,
        expires: opts.expires,
        min_unixtime: opts.min_unixtime,
        next_jwk: opts.next_jwk.clone(),
        retire_kids: opts.retire_kids.clone(),
        ..Manifest::default()
    };
    check_trust_fields(&trust)?;
    let dir: PathBuf = out_dir.join(variant);
    fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
    let name = format!("{variant}-{unixtime}.img.gz");
    let gz_path = dir.join(&name);
    let src = File::open(image).map_err(|e| io("open", image, e))?;
    let mut src = BufReader::with_capacity(256 * 1024, src);
    let out = File::create(&gz_path).map_err(|e| io("create", &gz_path, e))?;
    let mut gz = GzEncoder::new(BufWriter::new(out), Compression::default());
    let mut hasher = Sha512::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = src.read(&mut buf).map_err(|e| io("read", image, e))?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        gz.write_all(chunk).map_err(|e| io("write", &gz_path, e))?;
        size += n as u64;
    }
    gz.finish().and_then(|mut w| w.flush()).map_err(|e| io("write", &gz_path, e))?;
    let m = Manifest {
        variant: variant.to_owned(),
        path: name,
        size,
        unixtime,
        sha512: hex::encode(hasher.finalize()),
        reset: true,
        ..trust
    };
    let jws_path = dir.join("manifest.jws");
    let jws = sign_manifest_as(&key, kid.as_deref(), &m);
    fs::write(&jws_path, jws).map_err(|e| io("write", &jws_path, e))?;
    Ok(m)
}
