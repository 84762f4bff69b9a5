//! The chunk index (issue 17): the binary file a manifest's `chunks`
//! field commits to, which lets a device fetch an image chunk by chunk,
//! verify each chunk before it writes it, reuse chunks it already has and
//! resume after any interruption.
//!
//! # Format (`.idx`), all integers little-endian
//!
//! | offset | size | field                                        |
//! |-------:|-----:|----------------------------------------------|
//! | 0      | 4    | magic `LWCI`                                 |
//! | 4      | 1    | version, 1                                   |
//! | 5      | 1    | hash algorithm, 1 = SHA-256                  |
//! | 6      | 2    | reserved, 0                                  |
//! | 8      | 4    | `chunk_size`: inflated bytes per chunk       |
//! | 12     | 8    | `image_size`: inflated bytes of the image    |
//! | 20     | 4    | `count` = ceil(`image_size` / `chunk_size`)  |
//! | 24     | 36 × `count` | entries                              |
//!
//! Each entry is `comp_len` (u32, bytes of this chunk in the chunk file,
//! at least 1) then the SHA-256 (32 bytes) of the chunk's *inflated* bytes.
//! Chunk `i` covers inflated bytes `[i*chunk_size, min(size,
//! (i+1)*chunk_size))`; its compressed bytes sit at `sum(comp_len[0..i])`
//! in the chunk file. `chunk_size` is a power of two in
//! [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`]; the file is exactly
//! `24 + 36 * count` bytes.
//!
//! # Chunk file (`.chunks`)
//!
//! Every chunk is one complete gzip member, concatenated, so a device can
//! fetch chunk `i` with one HTTP range and the whole file is also a valid
//! multi-member gzip of the image (`zcat x.chunks` prints the image).
//!
//! # Local index
//!
//! [`LocalIndex`] is what a device knows of an image it already has: the
//! SHA-256 of each chunk, nothing about compression. It is computed from a
//! plain image ([`LocalIndex::of_image`]) or taken from a downloaded
//! [`ChunkIndex`], and persisted as the same header with magic `LWLI` and
//! 32-byte entries (the hash alone).

use std::io::{Read, Write};

use flate2::bufread::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use lwsys_messages::OtaError;
use sha2::{Digest as _, Sha256};

/// Magic of a chunk index file.
pub const MAGIC: [u8; 4] = *b"LWCI";
/// Magic of a persisted [`LocalIndex`].
pub const LOCAL_MAGIC: [u8; 4] = *b"LWLI";
/// The only format version.
pub const VERSION: u8 = 1;
/// Hash algorithm id of SHA-256, the only one.
pub const HASH_SHA256: u8 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 24;
/// Bytes of one [`ChunkIndex`] entry (comp_len u32 + SHA-256).
pub const ENTRY_LEN: usize = 36;
/// Bytes of one [`LocalIndex`] entry (SHA-256).
pub const LOCAL_ENTRY_LEN: usize = 32;
/// The chunk size `lwsysctl ota publish` uses unless told otherwise.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Smallest allowed chunk size.
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
/// Largest allowed chunk size.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];

fn bad(msg: impl Into<String>) -> OtaError {
    OtaError::ChunkIndex(msg.into())
}

/// Checks that `chunk_size` is a power of two within the allowed range.
pub fn check_chunk_size(chunk_size: u32) -> Result<(), OtaError> {
    if !chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(bad(format!(
            "chunk size {chunk_size} is not a power of two in {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
        )));
    }
    Ok(())
}

/// Largest compressed length accepted for one chunk of `chunk_size`
/// inflated bytes: deflate's worst case (stored blocks, 5 bytes per 64 KiB
/// plus framing; bounded here generously by 1/64 of the input) plus 1 KiB
/// for the gzip header and trailer. It keeps a hostile index from making a
/// device buffer more than about one chunk.
pub fn max_comp_len(chunk_size: u32) -> u32 {
    chunk_size.saturating_add(chunk_size / 64).saturating_add(1024)
}

/// Number of chunks of an image of `size` bytes, or `None` if it does not
/// fit a `u32`.
pub fn chunk_count(size: u64, chunk_size: u32) -> Option<u32> {
    if chunk_size == 0 {
        return None;
    }
    u32::try_from(size.div_ceil(u64::from(chunk_size))).ok()
}

/// One chunk of a [`ChunkIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry {
    /// Where its gzip member starts in the chunk file (computed on parse).
    pub comp_offset: u64,
    /// Bytes of its gzip member in the chunk file.
    pub comp_len: u32,
    /// SHA-256 of its inflated bytes.
    pub sha256: Sha256Digest,
}

/// A parsed, checked chunk index (`.idx`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkIndex {
    /// Inflated bytes per chunk (the last may be shorter).
    pub chunk_size: u32,
    /// Inflated bytes of the whole image.
    pub size: u64,
    /// The chunks, in image order.
    pub chunks: Vec<ChunkEntry>,
}

struct Header {
    chunk_size: u32,
    size: u64,
    count: u32,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// Parses and checks a header shared by both index kinds; returns it once
/// `bytes` is exactly as long as its count says, so nothing is allocated
/// from an unchecked count.
fn parse_header(
    bytes: &[u8],
    magic: [u8; 4],
    entry_len: usize,
    max_image_bytes: u64,
) -> Result<Header, OtaError> {
    if bytes.len() < HEADER_LEN {
        return Err(bad(format!("{} bytes is shorter than the header", bytes.len())));
    }
    if bytes.get(..4) != Some(&magic[..]) {
        return Err(bad("bad magic"));
    }
    if bytes.get(4) != Some(&VERSION) {
        return Err(bad(format!("unknown version {:?}", bytes.get(4))));
    }
    if bytes.get(5) != Some(&HASH_SHA256) {
        return Err(bad(format!("unknown hash algorithm {:?}", bytes.get(5))));
    }
    if bytes.get(6..8) != Some(&[0, 0][..]) {
        return Err(bad("reserved bytes are not zero"));
    }
    let h =
        Header { chunk_size: le_u32(bytes, 8), size: le_u64(bytes, 12), count: le_u32(bytes, 20) };
    check_chunk_size(h.chunk_size)?;
    if h.size > max_image_bytes {
        return Err(bad(format!(
            "image of {} bytes is over the {max_image_bytes} byte limit",
            h.size
        )));
    }
    if chunk_count(h.size, h.chunk_size) != Some(h.count) {
        return Err(bad(format!(
            "count {} does not match {} bytes in chunks of {}",
            h.count, h.size, h.chunk_size
        )));
    }
    let want = (HEADER_LEN as u64).saturating_add(u64::from(h.count) * entry_len as u64);
    if bytes.len() as u64 != want {
        return Err(bad(format!("{} bytes, the header says {want}", bytes.len())));
    }
    Ok(h)
}

fn write_header(out: &mut Vec<u8>, magic: [u8; 4], chunk_size: u32, size: u64, count: u32) {
    out.extend_from_slice(&magic);
    out.extend_from_slice(&[VERSION, HASH_SHA256, 0, 0]);
    out.extend_from_slice(&chunk_size.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
}

/// Inflated `(offset, len)` of chunk `i` of an image of `size` bytes.
fn range_of(size: u64, chunk_size: u32, i: usize) -> Option<(u64, u32)> {
    let start = (i as u64).checked_mul(u64::from(chunk_size))?;
    if start >= size {
        return None;
    }
    let len = (size - start).min(u64::from(chunk_size));
    Some((start, u32::try_from(len).ok()?))
}

impl ChunkIndex {
    /// Parses and checks an index file: magic, version, hash id, reserved
    /// bytes, the chunk size rules, `count == ceil(size / chunk_size)`,
    /// the exact length, `size <= max_image_bytes`, every `comp_len` in
    /// `1..=`[`max_comp_len`]`(chunk_size)`.
    pub fn parse(bytes: &[u8], max_image_bytes: u64) -> Result<Self, OtaError> {
        let h = parse_header(bytes, MAGIC, ENTRY_LEN, max_image_bytes)?;
        let max = max_comp_len(h.chunk_size);
        let entries = bytes.get(HEADER_LEN..).unwrap_or_default();
        // The count is checked against the actual length above.
        let mut chunks = Vec::with_capacity(h.count as usize);
        let mut offset = 0u64;
        for (i, e) in entries.chunks_exact(ENTRY_LEN).enumerate() {
            let comp_len = le_u32(e, 0);
            if comp_len == 0 || comp_len > max {
                return Err(bad(format!(
                    "chunk {i}: compressed length {comp_len} not in 1..={max}"
                )));
            }
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(e.get(4..ENTRY_LEN).unwrap_or(&[0; 32]));
            chunks.push(ChunkEntry { comp_offset: offset, comp_len, sha256 });
            offset = offset
                .checked_add(u64::from(comp_len))
                .ok_or_else(|| bad("compressed length overflows"))?;
        }
        Ok(Self { chunk_size: h.chunk_size, size: h.size, chunks })
    }

    /// The index file's bytes (what [`parse`](Self::parse) reads).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + ENTRY_LEN * self.chunks.len());
        let count = u32::try_from(self.chunks.len()).unwrap_or(u32::MAX);
        write_header(&mut out, MAGIC, self.chunk_size, self.size, count);
        for c in &self.chunks {
            out.extend_from_slice(&c.comp_len.to_le_bytes());
            out.extend_from_slice(&c.sha256);
        }
        out
    }

    /// Inflated `(offset, len)` of chunk `i`, or `None` past the end.
    pub fn chunk_range(&self, i: usize) -> Option<(u64, u32)> {
        range_of(self.size, self.chunk_size, i)
    }

    /// Total bytes of the chunk file.
    pub fn comp_total(&self) -> u64 {
        self.chunks.last().map_or(0, |c| c.comp_offset + u64::from(c.comp_len))
    }

    /// Builds the index and writes the chunk file of `image` to `out` in
    /// one pass; see [`ChunkBuilder`] to feed it alongside other
    /// consumers of the same bytes.
    pub fn build<W: Write>(
        mut image: impl Read,
        chunk_size: u32,
        out: W,
    ) -> Result<(Self, W), OtaError> {
        let mut b = ChunkBuilder::new(chunk_size, out)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = image.read(&mut buf).map_err(|e| OtaError::Io(format!("read image: {e}")))?;
            if n == 0 {
                break;
            }
            b.update(buf.get(..n).unwrap_or_default())?;
        }
        b.finish()
    }
}

/// Inflates one chunk's gzip member `comp` (exactly one member, nothing
/// after it) and checks it is `want_len` bytes with SHA-256 `sha256`.
/// Never inflates more than `want_len + 1` bytes, so a hostile member
/// (a "zip bomb") costs at most one chunk of memory.
pub fn inflate_chunk(
    comp: &[u8],
    want_len: u32,
    sha256: &Sha256Digest,
) -> Result<Vec<u8>, OtaError> {
    let mut dec = GzDecoder::new(comp);
    let mut out = Vec::with_capacity(want_len as usize);
    (&mut dec)
        .take(u64::from(want_len) + 1)
        .read_to_end(&mut out)
        .map_err(|e| OtaError::Gzip(format!("chunk: {e}")))?;
    if out.len() as u64 != u64::from(want_len) {
        return Err(bad(format!("chunk inflates to {} bytes, want {want_len}", out.len())));
    }
    if !dec.into_inner().is_empty() {
        return Err(bad("bytes after the chunk's gzip member"));
    }
    let got: Sha256Digest = Sha256::digest(&out).into();
    if &got != sha256 {
        return Err(bad("chunk hash does not match the index"));
    }
    Ok(out)
}

/// Streaming builder of a chunk file and its [`ChunkIndex`]: feed the
/// image's bytes in any slices with [`update`](Self::update); each full
/// chunk is gzipped on its own, hashed and written to the output.
pub struct ChunkBuilder<W: Write> {
    chunk_size: u32,
    out: W,
    pending: Vec<u8>,
    size: u64,
    chunks: Vec<ChunkEntry>,
    offset: u64,
}

impl<W: Write> ChunkBuilder<W> {
    /// A builder for chunks of `chunk_size` inflated bytes writing to `out`.
    pub fn new(chunk_size: u32, out: W) -> Result<Self, OtaError> {
        check_chunk_size(chunk_size)?;
        Ok(Self {
            chunk_size,
            out,
            pending: Vec::with_capacity(chunk_size as usize),
            size: 0,
            chunks: Vec::new(),
            offset: 0,
        })
    }

    /// Feeds the next bytes of the image.
    pub fn update(&mut self, mut data: &[u8]) -> Result<(), OtaError> {
        while !data.is_empty() {
            let room = self.chunk_size as usize - self.pending.len();
            let (head, rest) = data.split_at(room.min(data.len()));
            self.pending.extend_from_slice(head);
            data = rest;
            if self.pending.len() == self.chunk_size as usize {
                self.flush_chunk()?;
            }
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<(), OtaError> {
        let io = |e: std::io::Error| OtaError::Io(format!("write chunk file: {e}"));
        let mut gz =
            GzEncoder::new(Vec::with_capacity(self.pending.len() / 2 + 64), Compression::default());
        gz.write_all(&self.pending).map_err(io)?;
        let member = gz.finish().map_err(io)?;
        let comp_len = u32::try_from(member.len())
            .ok()
            .filter(|&n| n <= max_comp_len(self.chunk_size))
            .ok_or_else(|| bad(format!("chunk compressed to {} bytes", member.len())))?;
        self.out.write_all(&member).map_err(io)?;
        let sha256: Sha256Digest = Sha256::digest(&self.pending).into();
        self.chunks.push(ChunkEntry { comp_offset: self.offset, comp_len, sha256 });
        self.offset += u64::from(comp_len);
        self.size += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Writes the last, short chunk if any, flushes the output and returns
    /// the index with the output.
    pub fn finish(mut self) -> Result<(ChunkIndex, W), OtaError> {
        if !self.pending.is_empty() {
            self.flush_chunk()?;
        }
        self.out.flush().map_err(|e| OtaError::Io(format!("write chunk file: {e}")))?;
        if chunk_count(self.size, self.chunk_size).is_none() {
            return Err(bad(format!("image of {} bytes has too many chunks", self.size)));
        }
        let index =
            ChunkIndex { chunk_size: self.chunk_size, size: self.size, chunks: self.chunks };
        Ok((index, self.out))
    }
}

mod local;
pub use local::LocalIndex;

#[cfg(test)]
#[path = "chunks_tests.rs"]
mod tests;
