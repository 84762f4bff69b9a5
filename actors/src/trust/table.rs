//! `CertTable`: certificates and their SKIDs kept as one byte buffer plus
//! offsets, with a sorted SKID index. Both backends use it, so the memory a
//! trust store holds is the raw DER and a few bytes per certificate, never
//! a parsed copy of each certificate.

use std::cmp::Ordering;
use std::ops::Range;

use bytes::Bytes;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Where one certificate and its SKID sit in the buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    der_off: u32,
    der_len: u32,
    skid_off: u32,
    skid_len: u32,
}

impl Entry {
    /// An entry for `der` and `skid` ranges of the buffer; `None` when a
    /// range does not fit the 32-bit offsets (a buffer over 4 GiB).
    pub(crate) fn new(der: Range<usize>, skid: Range<usize>) -> Option<Self> {
        Some(Self {
            der_off: u32::try_from(der.start).ok()?,
            der_len: u32::try_from(der.len()).ok()?,
            skid_off: u32::try_from(skid.start).ok()?,
            skid_len: u32::try_from(skid.len()).ok()?,
        })
    }

    fn der(&self) -> Range<usize> {
        let start = self.der_off as usize;
        start..start.saturating_add(self.der_len as usize)
    }

    fn skid(&self) -> Range<usize> {
        let start = self.skid_off as usize;
        start..start.saturating_add(self.skid_len as usize)
    }
}

/// Certificates in one buffer, indexed by SKID (exact match, several
/// certificates per SKID allowed). See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct CertTable {
    bytes: Bytes,
    entries: Vec<Entry>,
    /// Indices into `entries` of those with a SKID, sorted by SKID bytes.
    by_skid: Vec<u32>,
}

impl CertTable {
    /// A table over `bytes`. Entries whose ranges fall outside `bytes` are
    /// the caller's bug; they read as empty rather than panic.
    pub(crate) fn new(bytes: Bytes, entries: Vec<Entry>) -> Self {
        let mut table = Self { bytes, entries, by_skid: Vec::new() };
        let mut by_skid: Vec<u32> = (0..table.entries.len())
            .filter_map(|i| u32::try_from(i).ok())
            .filter(|&i| !table.skid_at(i).is_empty())
            .collect();
        by_skid.sort_by(|&a, &b| table.skid_at(a).cmp(table.skid_at(b)));
        table.by_skid = by_skid;
        table
    }

    fn slice(&self, r: Range<usize>) -> &[u8] {
        self.bytes.get(r).unwrap_or_default()
    }

    fn skid_at(&self, i: u32) -> &[u8] {
        self.entries.get(i as usize).map_or(&[][..], |e| self.slice(e.skid()))
    }

    /// Every certificate whose SKID equals `skid`, as zero-copy slices of
    /// the buffer, in table order.
    pub(crate) fn find(&self, skid: &[u8]) -> Vec<Bytes> {
        if skid.is_empty() {
            return Vec::new();
        }
        let start = self.by_skid.partition_point(|&i| self.skid_at(i) < skid);
        let mut hits: Vec<u32> = self.by_skid[start..]
            .iter()
            .copied()
            .take_while(|&i| self.skid_at(i).cmp(skid) == Ordering::Equal)
            .collect();
        hits.sort_unstable();
        hits.into_iter()
            .filter_map(|i| self.entries.get(i as usize))
            .filter_map(|e| {
                let r = e.der();
                (r.end <= self.bytes.len()).then(|| self.bytes.slice(r))
            })
            .collect()
    }

    /// How many certificates the table holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many of them have no SKID (and so can never be found).
    pub(crate) fn without_skid(&self) -> usize {
        self.entries.len() - self.by_skid.len()
    }

    /// Bytes of buffer held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Each certificate's DER and stored SKID, in table order (for tests
    /// and tools that walk the whole store).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.entries.iter().map(|e| (self.slice(e.der()), self.slice(e.skid())))
    }
}

/// The key identifier of the Subject Key Identifier extension, if `cert`
/// has one.
pub(crate) fn skid_of<'a>(cert: &X509Certificate<'a>) -> Option<&'a [u8]> {
    cert.extensions().iter().find_map(|ext| match ext.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
        _ => None,
    })
}

/// The key identifier of the Authority Key Identifier extension, if `cert`
/// has one with a key identifier.
pub(crate) fn akid_of<'a>(cert: &X509Certificate<'a>) -> Option<&'a [u8]> {
    cert.extensions().iter().find_map(|ext| match ext.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0),
        _ => None,
    })
}

/// Parses `der` as one X.509 certificate with nothing after it.
pub(crate) fn parse_cert(der: &[u8]) -> Option<X509Certificate<'_>> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Some(cert),
        _ => None,
    }
}
