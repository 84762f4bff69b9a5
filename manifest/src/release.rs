//! Checks of a published release's files against its signed manifest: the
//! chunk index a manifest commits to ([`check_index`], which a device
//! applies before trusting an index), and whole-file checks of the chunk
//! file and the `.img.gz` for `lwsysctl ota verify`.

use std::io::Read;

use flate2::bufread::GzDecoder;
use lwsys_messages::OtaError;
use sha2::{Digest as _, Sha256, Sha512};

use crate::chunks::{inflate_chunk, max_comp_len, ChunkIndex};
use crate::jws::{check_path, Manifest};

fn bad(msg: impl Into<String>) -> OtaError {
    OtaError::ChunkIndex(msg.into())
}

/// Checks `index_bytes` against the manifest's signed `chunks` reference
/// and parses it: both file names plain, `index_sha256` equal to the
/// bytes' SHA-256, and the index's image size and chunk size equal to
/// the manifest's. Only then is the index trusted.
pub fn check_index(
    m: &Manifest,
    index_bytes: &[u8],
    max_image_bytes: u64,
) -> Result<ChunkIndex, OtaError> {
    let r = m.chunks.as_ref().ok_or_else(|| bad("the manifest has no chunk index"))?;
    check_path(&r.index)?;
    check_path(&r.file)?;
    let got = hex::encode(Sha256::digest(index_bytes));
    if !r.index_sha256.eq_ignore_ascii_case(&got) {
        return Err(bad("index hash does not match the manifest"));
    }
    let ix = ChunkIndex::parse(index_bytes, max_image_bytes)?;
    if ix.size != m.size {
        return Err(bad(format!("index is of {} bytes, the manifest's image {}", ix.size, m.size)));
    }
    if ix.chunk_size != r.chunk_size {
        return Err(bad(format!(
            "index chunk size {} is not the manifest's {}",
            ix.chunk_size, r.chunk_size
        )));
    }
    Ok(ix)
}

fn read_err(e: std::io::Error) -> OtaError {
    OtaError::Io(format!("read: {e}"))
}

fn check_sha512(hasher: Sha512, m: &Manifest) -> Result<(), OtaError> {
    if !hex::encode(hasher.finalize()).eq_ignore_ascii_case(&m.sha512) {
        return Err(OtaError::HashMismatch);
    }
    Ok(())
}

/// Reads a whole chunk file and checks it against `ix` (already checked
/// with [`check_index`]): every chunk inflates to its length and SHA-256,
/// the file ends exactly after the last one, and the chunks together are
/// the manifest's image (SHA-512). Holds one chunk in memory at a time.
pub fn verify_chunk_file(
    ix: &ChunkIndex,
    m: &Manifest,
    mut file: impl Read,
) -> Result<(), OtaError> {
    let mut hasher = Sha512::new();
    let mut comp = Vec::with_capacity(max_comp_len(ix.chunk_size) as usize);
    for (i, c) in ix.chunks.iter().enumerate() {
        let (_, len) = ix.chunk_range(i).ok_or_else(|| bad(format!("chunk {i} past the end")))?;
        comp.clear();
        let got =
            (&mut file).take(u64::from(c.comp_len)).read_to_end(&mut comp).map_err(read_err)?;
        if got != c.comp_len as usize {
            return Err(bad(format!("chunk file ends in chunk {i}")));
        }
        let plain = inflate_chunk(&comp, len, &c.sha256)
            .map_err(|e| bad(format!("chunk {i} at {}: {e}", c.comp_offset)))?;
        hasher.update(&plain);
    }
    let mut extra = [0u8; 1];
    if file.read(&mut extra).map_err(read_err)? != 0 {
        return Err(bad(format!(
            "chunk file is longer than the index's {} bytes",
            ix.comp_total()
        )));
    }
    check_sha512(hasher, m)
}

/// Reads a whole `.img.gz` and checks that it inflates (one gzip stream,
/// as upstream devices read it) to exactly the manifest's `size` bytes
/// with its `sha512`.
pub fn verify_image_gz(m: &Manifest, file: impl std::io::BufRead) -> Result<(), OtaError> {
    let mut dec = GzDecoder::new(file);
    let mut hasher = Sha512::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = dec.read(&mut buf).map_err(|e| OtaError::Gzip(e.to_string()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > m.size {
            return Err(OtaError::ImageTooLong(m.size));
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    if size < m.size {
        return Err(OtaError::ImageTooShort { got: size, want: m.size });
    }
    check_sha512(hasher, m)
}
