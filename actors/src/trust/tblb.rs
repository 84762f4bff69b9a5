//! The lws "TBLB" trust blob backend: validates the whole layout once at
//! load, then answers SKID queries from the blob bytes and an offset index.
//!
//! Layout (all big-endian; `../shared/fixtures/README.md`): magic `TBLB`,
//! u16 version (1), u16 count, u32 generation time, u32 offsets of the DER
//! length table (u16 each), the SKID length table (u8 each) and the SKID
//! table, u32 total length; the DER certificates follow the 28-byte header
//! back to back, then the three tables, which end exactly at the total.

use std::path::Path;

use bytes::Bytes;

use super::table::{CertTable, Entry};
use super::TrustBackend;
use lwsys_messages::trust::{BackendInfo, TrustError};

/// The blob's magic bytes.
pub const TBLB_MAGIC: &[u8; 4] = b"TBLB";
/// The only layout version understood.
pub const TBLB_VERSION: u16 = 1;
/// Size of the fixed header; the first certificate starts here.
pub const TBLB_HEADER_LEN: usize = 0x1c;

/// What is wrong with a trust blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TblbError {
    /// Shorter than the header.
    #[error("{len} bytes is shorter than the {TBLB_HEADER_LEN}-byte header")]
    TooShort {
        /// The blob's length.
        len: usize,
    },
    /// The first four bytes are not `TBLB`.
    #[error("bad magic {found:02x?}, expected \"TBLB\"")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// A layout version other than 1.
    #[error("unsupported layout version {0}, expected {TBLB_VERSION}")]
    UnsupportedVersion(u16),
    /// The header says zero certificates.
    #[error("the blob holds no certificates")]
    NoCerts,
    /// The header's total length is not the blob's length (truncated or
    /// trailing bytes).
    #[error("header total length {header} but the blob is {actual} bytes")]
    LengthMismatch {
        /// The total length in the header.
        header: usize,
        /// The blob's real length.
        actual: usize,
    },
    /// A table starts or ends past the end of the blob.
    #[error("{table} at {offset}..{end} lies outside the {total}-byte blob")]
    OutOfBounds {
        /// Which region.
        table: &'static str,
        /// Where it starts.
        offset: usize,
        /// Where it ends (saturated on overflow).
        end: usize,
        /// The blob's length.
        total: usize,
    },
    /// The regions do not follow each other exactly up to the total length.
    #[error("{region} ends at {ends} but the next region starts at {next}")]
    Gap {
        /// The region whose end does not meet the next one.
        region: &'static str,
        /// Where it ends.
        ends: usize,
        /// Where the next region (or the end of the blob) is.
        next: usize,
    },
    /// A certificate's length is zero or its DER header disagrees with the
    /// length table (the tables do not describe these bytes).
    #[error("certificate {index} is not a DER SEQUENCE of the stated length {len}")]
    BadCert {
        /// Its index in the blob.
        index: usize,
        /// Its length in the DER length table.
        len: usize,
    },
}

fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

fn be_u32(b: &[u8], at: usize) -> Option<usize> {
    let s: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(s)).ok()
}

/// The length a DER TLV header at the start of `der` announces for the
/// whole element (header included), or `None` if it is not a definite
/// length SEQUENCE.
fn der_sequence_len(der: &[u8]) -> Option<usize> {
    if *der.first()? != 0x30 {
        return None;
    }
    let first = *der.get(1)?;
    if first < 0x80 {
        return Some(2 + usize::from(first));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let len = der.get(2..2 + n)?.iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b));
    len.checked_add(2 + n)
}

/// A parsed and validated blob: the table plus header facts.
#[derive(Debug, Clone)]
pub struct TblbBackend {
    name: String,
    generated: u32,
    table: CertTable,
}

impl TblbBackend {
    /// Reads and validates the blob at `path`.
    pub fn open(path: &Path) -> Result<Self, TrustError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|e| TrustError::Io { path: name.clone(), message: e.to_string() })?;
        Self::parse(name.clone(), Bytes::from(bytes))
            .map_err(|e| TrustError::Malformed { path: name, reason: e.to_string() })
    }

    /// Validates `blob` (every header field, every table inside the blob,
    /// the regions filling it exactly) and indexes it by stored SKID.
    pub fn parse(name: impl Into<String>, blob: Bytes) -> Result<Self, TblbError> {
        let b = &blob[..];
        let total = b.len();
        if total < TBLB_HEADER_LEN {
            return Err(TblbError::TooShort { len: total });
        }
        let magic: [u8; 4] = b.get(..4).and_then(|m| m.try_into().ok()).unwrap_or_default();
        if &magic != TBLB_MAGIC {
            return Err(TblbError::BadMagic { found: magic });
        }
        let short = || TblbError::TooShort { len: total };
        let version = be_u16(b, 4).ok_or_else(short)?;
        if version != TBLB_VERSION {
            return Err(TblbError::UnsupportedVersion(version));
        }
        let count = usize::from(be_u16(b, 6).ok_or_else(short)?);
        if count == 0 {
            return Err(TblbError::NoCerts);
        }
        let generated = be_u32(b, 8).and_then(|g| u32::try_from(g).ok()).ok_or_else(short)?;
        let der_len_off = be_u32(b, 0x0c).ok_or_else(short)?;
        let skid_len_off = be_u32(b, 0x10).ok_or_else(short)?;
        let skid_off = be_u32(b, 0x14).ok_or_else(short)?;
        let header_total = be_u32(b, 0x18).ok_or_else(short)?;
        if header_total != total {
            return Err(TblbError::LengthMismatch { header: header_total, actual: total });
        }

        let der_lens = region(b, "DER length table", der_len_off, count * 2)?;
        let skid_lens = region(b, "SKID length table", skid_len_off, count)?;
        let der_lens: Vec<usize> = der_lens
            .chunks_exact(2)
            .map(|p| usize::from(u16::from_be_bytes([p[0], p[1]])))
            .collect();
        let der_total: usize = der_lens.iter().sum();
        let skid_total: usize = skid_lens.iter().map(|&l| usize::from(l)).sum();
        region(b, "DER certificates", TBLB_HEADER_LEN, der_total)?;
        region(b, "SKID table", skid_off, skid_total)?;

        // The regions must tile the blob in this order with no gap or
        // overlap: that is what proves the tables describe these bytes.
        let tiles = [
            ("DER certificates", TBLB_HEADER_LEN + der_total, der_len_off),
            ("DER length table", der_len_off + count * 2, skid_len_off),
            ("SKID length table", skid_len_off + count, skid_off),
            ("SKID table", skid_off + skid_total, total),
        ];
        for (region, ends, next) in tiles {
            if ends != next {
                return Err(TblbError::Gap { region, ends, next });
            }
        }

        let mut entries = Vec::with_capacity(count);
        let (mut der_at, mut skid_at) = (TBLB_HEADER_LEN, skid_off);
        for (index, (&len, &skid_len)) in der_lens.iter().zip(skid_lens).enumerate() {
            let der = der_at..der_at + len;
            let ok = len > 0 && b.get(der.clone()).and_then(der_sequence_len) == Some(len);
            if !ok {
                return Err(TblbError::BadCert { index, len });
            }
            let skid = skid_at..skid_at + usize::from(skid_len);
            // Offsets fit in u32: they come from u32 header fields checked
            // against a blob whose total length is itself a u32.
            entries.push(Entry::new(der.clone(), skid.clone()).ok_or_else(short)?);
            der_at = der.end;
            skid_at = skid.end;
        }
        Ok(Self { name: name.into(), generated, table: CertTable::new(blob, entries) })
    }

    /// When the blob was generated, Unix seconds.
    pub fn generated(&self) -> u32 {
        self.generated
    }

    /// Each certificate's DER and stored SKID (empty for none), in blob
    /// order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.table.iter()
    }
}

/// `len` bytes at `offset`, or which region lies outside the blob.
fn region<'a>(
    b: &'a [u8],
    table: &'static str,
    offset: usize,
    len: usize,
) -> Result<&'a [u8], TblbError> {
    let end = offset.saturating_add(len);
    b.get(offset..end).ok_or(TblbError::OutOfBounds { table, offset, end, total: b.len() })
}

impl TrustBackend for TblbBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn lookup(&self, skid: &[u8]) -> Vec<Bytes> {
        self.table.find(skid)
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: self.name.clone(),
            kind: "tblb".into(),
            certs: self.table.len(),
            without_skid: self.table.without_skid(),
            skipped: 0,
            bytes: self.table.bytes(),
        }
    }
}
