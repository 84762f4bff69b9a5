//! What a chunked install works from: the [`Plan`] (the signed chunk
//! index of `lwsys_manifest::chunks`, checked against the manifest), and
//! the running image's chunk digests ([`LocalIndex`], persisted by the
//! platform beside the running image as `<slot>/image.idx`) so that
//! finding reusable chunks never needs a full re-read.
//!
//! The saved local index is a cache: every chunk copied from the running
//! image is hashed again before it is written, so a stale or forged file
//! only costs fetches, never a bad byte.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};

use lwsys_manifest::chunks::{check_chunk_size, chunk_count, ChunkIndex, ENTRY_LEN, HEADER_LEN};
use lwsys_manifest::{ChunkRef, LocalIndex};
use lwsys_messages::ota::OtaError;

use super::super::{Manifest, OtaOps};

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// The verified chunk index of the image being installed.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The index, which agrees with the manifest's size and chunk size.
    pub index: ChunkIndex,
}

fn bad(why: impl Into<String>) -> OtaError {
    OtaError::ChunkIndex(why.into())
}

/// The exact size of `m`'s index file: it is fetched with this bound, so
/// a server cannot make the device hold more.
pub fn index_len(m: &Manifest, c: &ChunkRef) -> Result<u64, OtaError> {
    check_chunk_size(c.chunk_size)?;
    let count = chunk_count(m.size, c.chunk_size).ok_or_else(|| {
        bad(format!("{} bytes in chunks of {} is too many", m.size, c.chunk_size))
    })?;
    Ok(HEADER_LEN as u64 + u64::from(count) * ENTRY_LEN as u64)
}

impl Plan {
    /// Parses `index` (whose SHA-256 is already checked against the signed
    /// one): it must describe exactly `m`'s size in the manifest's chunk
    /// size (the parser bounds every compressed length).
    pub fn from_index(index: &[u8], m: &Manifest, c: &ChunkRef) -> Result<Self, OtaError> {
        let index = ChunkIndex::parse(index, m.size)?;
        if index.size != m.size {
            return Err(bad(format!("index size {} is not the manifest's {}", index.size, m.size)));
        }
        if index.chunk_size != c.chunk_size {
            return Err(bad(format!(
                "index chunk size {} is not the manifest's {}",
                index.chunk_size, c.chunk_size
            )));
        }
        Ok(Self { index })
    }

    /// Inflated bytes per chunk.
    pub fn chunk_size(&self) -> u64 {
        u64::from(self.index.chunk_size)
    }

    /// Chunks.
    pub fn chunk_count(&self) -> usize {
        self.index.chunks.len()
    }

    /// Where chunk `i` starts in the inflated image (the size past the end).
    pub fn start(&self, i: usize) -> u64 {
        (i as u64).saturating_mul(self.chunk_size()).min(self.index.size)
    }

    /// Inflated length of chunk `i` (0 past the end).
    pub fn inflated_len(&self, i: usize) -> u64 {
        self.start(i + 1) - self.start(i)
    }

    /// SHA-256 of chunk `i`'s inflated bytes.
    pub fn digest(&self, i: usize) -> Option<Digest> {
        self.index.chunks.get(i).map(|c| c.sha256)
    }
}

/// The platform's running image as a reader (until `read_active` says 0).
struct Active<'a> {
    ops: &'a mut dyn OtaOps,
    offset: u64,
    cancel: &'a AtomicBool,
}

impl Read for Active<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other(OtaError::Cancelled));
        }
        let n = self.ops.read_active(self.offset, buf).map_err(io::Error::other)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// The running image's chunks by digest (digest -> where it starts), from
/// its saved index or, once, by hashing it (then saved). Empty on a
/// platform that cannot read it. Chunks past twice the new size are not
/// looked at: the bound ties the work and the map to the signed size.
pub fn active_chunks(
    ops: &mut dyn OtaOps,
    plan: &Plan,
    cancel: &AtomicBool,
) -> Result<HashMap<Digest, u64>, OtaError> {
    let cs = plan.index.chunk_size;
    let cap = plan.index.size.saturating_mul(2).max(u64::from(cs));
    let saved = ops.load_index().and_then(|b| LocalIndex::parse(&b, u64::MAX).ok());
    let local = match saved.filter(|l| l.chunk_size == cs) {
        Some(l) => l,
        None => {
            let l = LocalIndex::of_image(Active { ops: &mut *ops, offset: 0, cancel }, cs, cap)
                .map_err(|e| match e {
                    OtaError::Io(s) if s.contains("cancelled") => OtaError::Cancelled,
                    e => e,
                })?;
            if !l.sha256s.is_empty() {
                let _ = ops.store_index(&l.to_bytes());
            }
            l
        }
    };
    let cs = u64::from(cs);
    Ok(local.by_hash().into_iter().map(|(d, i)| (d, i as u64 * cs)).collect())
}

/// Fills `buf` by calling `read(offset_in_buf, rest)` until it is full or
/// `read` returns 0; returns the bytes filled.
pub fn read_full(
    buf: &mut [u8],
    mut read: impl FnMut(u64, &mut [u8]) -> Result<usize, OtaError>,
) -> Result<usize, OtaError> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        match read(filled as u64, rest)? {
            0 => break,
            n => filled += n.min(rest.len()),
        }
    }
    Ok(filled)
}
