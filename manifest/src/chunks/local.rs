//! [`LocalIndex`]: the chunk hashes of an image a device already has,
//! computed from the plain image or kept from the index it installed,
//! and persisted in the `LWLI` form (the chunk index header, 32-byte
//! entries).

use std::io::Read;

use lwsys_messages::OtaError;
use sha2::{Digest as _, Sha256};

use super::{
    bad, check_chunk_size, parse_header, range_of, write_header, ChunkIndex, Sha256Digest,
    HEADER_LEN, LOCAL_ENTRY_LEN, LOCAL_MAGIC,
};

/// The chunk hashes of an image a device already has (its active slot):
/// which chunks it can copy locally instead of fetching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalIndex {
    /// Bytes per chunk.
    pub chunk_size: u32,
    /// Bytes of the image.
    pub size: u64,
    /// SHA-256 of each chunk, in image order.
    pub sha256s: Vec<Sha256Digest>,
}

impl LocalIndex {
    /// Hashes a plain (not compressed) image in chunks of `chunk_size`,
    /// reading until EOF or `max_bytes`, whichever comes first (a slot
    /// may be larger than the image in it: pass the image's size).
    pub fn of_image(
        mut image: impl Read,
        chunk_size: u32,
        max_bytes: u64,
    ) -> Result<Self, OtaError> {
        check_chunk_size(chunk_size)?;
        let mut buf = vec![0u8; chunk_size as usize];
        let mut sha256s = Vec::new();
        let mut size = 0u64;
        loop {
            let want = (max_bytes - size).min(u64::from(chunk_size)) as usize;
            let mut filled = 0usize;
            while filled < want {
                let slot = buf.get_mut(filled..want).unwrap_or_default();
                match image.read(slot) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(OtaError::Io(format!("read image: {e}"))),
                }
            }
            if filled == 0 {
                break;
            }
            if sha256s.len() >= u32::MAX as usize {
                return Err(bad("image has too many chunks"));
            }
            sha256s.push(Sha256::digest(buf.get(..filled).unwrap_or_default()).into());
            size += filled as u64;
            if filled < chunk_size as usize {
                break;
            }
        }
        Ok(Self { chunk_size, size, sha256s })
    }

    /// Inflated `(offset, len)` of chunk `i`, or `None` past the end.
    pub fn chunk_range(&self, i: usize) -> Option<(u64, u32)> {
        range_of(self.size, self.chunk_size, i)
    }

    /// A map from chunk hash to the first chunk number with it, to find a
    /// wanted chunk anywhere in the image.
    pub fn by_hash(&self) -> std::collections::HashMap<Sha256Digest, usize> {
        let mut m = std::collections::HashMap::with_capacity(self.sha256s.len());
        for (i, h) in self.sha256s.iter().enumerate() {
            m.entry(*h).or_insert(i);
        }
        m
    }

    /// Persisted form: the index header with magic `LWLI`, then the hashes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + LOCAL_ENTRY_LEN * self.sha256s.len());
        let count = u32::try_from(self.sha256s.len()).unwrap_or(u32::MAX);
        write_header(&mut out, LOCAL_MAGIC, self.chunk_size, self.size, count);
        for h in &self.sha256s {
            out.extend_from_slice(h);
        }
        out
    }

    /// Parses and checks what [`to_bytes`](Self::to_bytes) wrote, with the
    /// same header rules as [`ChunkIndex::parse`].
    pub fn parse(bytes: &[u8], max_image_bytes: u64) -> Result<Self, OtaError> {
        let h = parse_header(bytes, LOCAL_MAGIC, LOCAL_ENTRY_LEN, max_image_bytes)?;
        let entries = bytes.get(HEADER_LEN..).unwrap_or_default();
        let mut sha256s = Vec::with_capacity(h.count as usize);
        for e in entries.chunks_exact(LOCAL_ENTRY_LEN) {
            let mut d = [0u8; 32];
            d.copy_from_slice(e);
            sha256s.push(d);
        }
        Ok(Self { chunk_size: h.chunk_size, size: h.size, sha256s })
    }
}

impl From<&ChunkIndex> for LocalIndex {
    /// What a device keeps after installing a chunked image: the hashes of
    /// the index it installed, so the next update costs no re-read.
    fn from(ix: &ChunkIndex) -> Self {
        Self {
            chunk_size: ix.chunk_size,
            size: ix.size,
            sha256s: ix.chunks.iter().map(|c| c.sha256).collect(),
        }
    }
}
