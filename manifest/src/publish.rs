//! The issuer's side: measure, gzip, chunk and sign an image into a
//! directory ready to serve (`lwsysctl ota publish`), reading the image
//! once.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use lwsys_messages::OtaError;
use sha2::{Digest as _, Sha256, Sha512};

use crate::chunks::{check_chunk_size, ChunkBuilder, DEFAULT_CHUNK_SIZE};
use crate::jwk::parse_private_jwk;
use crate::jws::{check_path, check_trust_fields, sign_manifest_as, ChunkRef, Manifest};
use crate::keys::jwk_kid;

fn io(what: &str, path: &Path, e: std::io::Error) -> OtaError {
    OtaError::Io(format!("{what} {}: {e}", path.display()))
}

/// How [`publish_with`] lays out a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOptions {
    /// Chunk size of the chunk index and chunk file (a power of two from
    /// 4 KiB to 16 MiB); `None` writes an upstream-identical release: the
    /// `.img.gz` and a manifest with upstream's fields only.
    pub chunk_size: Option<u32>,
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

impl Default for PublishOptions {
    /// Chunks of [`DEFAULT_CHUNK_SIZE`] (64 KiB); no freshness or key
    /// rotation fields.
    fn default() -> Self {
        Self {
            chunk_size: Some(DEFAULT_CHUNK_SIZE),
            expires: None,
            min_unixtime: None,
            next_jwk: None,
            retire_kids: Vec::new(),
        }
    }
}

/// Publishes `image` for `variant` into `out_dir` with the default
/// [`PublishOptions`] (64 KiB chunks); see [`publish_with`].
pub fn publish(
    key_jwk: &str,
    variant: &str,
    image: &Path,
    out_dir: &Path,
    unixtime: u64,
) -> Result<Manifest, OtaError> {
    publish_with(key_jwk, variant, image, out_dir, unixtime, &PublishOptions::default())
}

/// Publishes `image` for `variant` into `out_dir/<variant>/`:
/// `<variant>-<unixtime>.img.gz` (upstream's whole-image gzip), with
/// chunks also `<variant>-<unixtime>.chunks` and `.idx` (docs/ota.md),
/// and last `manifest.jws` (signed with the private JWK `key_jwk`,
/// `reset: true`, replaced atomically so a server never serves a manifest
/// whose files are not all there). Returns the manifest. `size` and
/// `sha512` are of the plain image, which is read once.
/// The `opts` freshness and rotation fields are checked as a device
/// would before anything is written; the JWS header names the key's
/// `kid` when its JWK has one.
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
    if let Some(cs) = opts.chunk_size {
        check_chunk_size(cs)?;
    }
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
    let chunk_name = format!("{variant}-{unixtime}.chunks");
    let chunk_path = dir.join(&chunk_name);
    let mut chunker = match opts.chunk_size {
        Some(cs) => {
            let f = File::create(&chunk_path).map_err(|e| io("create", &chunk_path, e))?;
            Some(ChunkBuilder::new(cs, BufWriter::new(f))?)
        }
        None => None,
    };
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
        if let Some(c) = chunker.as_mut() {
            c.update(chunk)?;
        }
        size += n as u64;
    }
    gz.finish().and_then(|mut w| w.flush()).map_err(|e| io("write", &gz_path, e))?;
    let chunks = match chunker {
        Some(c) => {
            let (index, _) = c.finish()?;
            let bytes = index.to_bytes();
            let index_name = format!("{variant}-{unixtime}.idx");
            let index_path = dir.join(&index_name);
            fs::write(&index_path, &bytes).map_err(|e| io("write", &index_path, e))?;
            Some(ChunkRef {
                index: index_name,
                index_sha256: hex::encode(Sha256::digest(&bytes)),
                file: chunk_name,
                chunk_size: index.chunk_size,
            })
        }
        None => None,
    };
    let m = Manifest {
        variant: variant.to_owned(),
        path: name,
        size,
        unixtime,
        sha512: hex::encode(hasher.finalize()),
        reset: true,
        chunks,
        ..trust
    };
    let jws_path = dir.join("manifest.jws");
    let tmp = dir.join(".manifest.jws.tmp");
    let jws = sign_manifest_as(&key, kid.as_deref(), &m);
    fs::write(&tmp, jws).map_err(|e| io("write", &tmp, e))?;
    fs::rename(&tmp, &jws_path).map_err(|e| io("rename", &jws_path, e))?;
    Ok(m)
}
