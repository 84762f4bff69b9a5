//! The certificate directory backend: every PEM or DER certificate in one
//! directory (such as Debian's `/etc/ssl/certs`), indexed by its Subject
//! Key Identifier extension. Loaded once into a single buffer like a blob.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::table::{parse_cert, skid_of, CertTable, Entry};
use super::TrustBackend;
use lwsys_messages::trust::{BackendInfo, TrustError};

/// Files bigger than this are skipped: a bundle of every public root is
/// about 250 KiB, so anything this large is not a certificate file.
const MAX_FILE_LEN: u64 = 8 << 20;

/// The certificates of one directory. See the module docs.
#[derive(Debug, Clone)]
pub struct CertDirBackend {
    name: String,
    table: CertTable,
    skipped: usize,
    duplicates: usize,
}

impl CertDirBackend {
    /// Reads every file of `dir` (following symlinks, not descending into
    /// subdirectories). A file may hold one DER certificate or any number
    /// of PEM ones (a bundle). Unreadable files and files that are not
    /// certificates are skipped and counted; the same certificate reached
    /// through several names (Debian's hash links, bundles) is held once.
    /// Fails only if the directory itself cannot be listed.
    pub fn open(dir: &Path) -> Result<Self, TrustError> {
        let name = dir.display().to_string();
        let io = |e: std::io::Error| TrustError::Io { path: name.clone(), message: e.to_string() };
        let mut paths: Vec<PathBuf> =
            fs::read_dir(dir).map_err(io)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        // Sorted so the same directory always gives the same order.
        paths.sort();

        let mut buf = Vec::new();
        let mut entries = Vec::new();
        let mut seen_files = HashSet::new();
        let mut seen_certs = HashSet::new();
        let (mut skipped, mut duplicates) = (0, 0);
        for path in paths {
            // metadata() follows symlinks; a dangling link is unreadable.
            match fs::metadata(&path) {
                Ok(m) if m.is_dir() => continue,
                Ok(m) if m.len() <= MAX_FILE_LEN => {}
                _ => {
                    skipped += 1;
                    continue;
                }
            }
            if let Ok(real) = fs::canonicalize(&path) {
                if !seen_files.insert(real) {
                    continue;
                }
            }
            let Ok(data) = fs::read(&path) else {
                skipped += 1;
                continue;
            };
            let ders = certs_in(&data);
            if ders.is_empty() {
                skipped += 1;
                continue;
            }
            for der in ders {
                let Some(cert) = parse_cert(&der) else {
                    skipped += 1;
                    continue;
                };
                if !seen_certs.insert(Sha256::digest(&der)) {
                    duplicates += 1;
                    continue;
                }
                let skid = skid_of(&cert).unwrap_or_default();
                let der_at = buf.len();
                buf.extend_from_slice(&der);
                let skid_at = buf.len();
                buf.extend_from_slice(skid);
                let Some(entry) = Entry::new(der_at..skid_at, skid_at..buf.len()) else {
                    // Past 4 GiB of certificates: not a trust directory.
                    return Err(TrustError::Io {
                        path: name,
                        message: "too many certificates".into(),
                    });
                };
                entries.push(entry);
            }
        }
        Ok(Self { name, table: CertTable::new(Bytes::from(buf), entries), skipped, duplicates })
    }

    /// Certificates reached more than once and held once.
    pub fn duplicates(&self) -> usize {
        self.duplicates
    }

    /// Each certificate's DER and SKID (empty for none), in load order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.table.iter()
    }
}

/// The certificates in one file's bytes: every PEM `CERTIFICATE` block if
/// it is PEM, else the whole file as one DER certificate.
fn certs_in(data: &[u8]) -> Vec<Vec<u8>> {
    if data.windows(11).any(|w| w == b"-----BEGIN ") {
        rustls_pemfile::certs(&mut &data[..])
            .filter_map(Result::ok)
            .map(|c| c.as_ref().to_vec())
            .collect()
    } else if parse_cert(data).is_some() {
        vec![data.to_vec()]
    } else {
        Vec::new()
    }
}

impl TrustBackend for CertDirBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn lookup(&self, skid: &[u8]) -> Vec<Bytes> {
        self.table.find(skid)
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: self.name.clone(),
            kind: "cert_dir".into(),
            certs: self.table.len(),
            without_skid: self.table.without_skid(),
            skipped: self.skipped,
            bytes: self.table.bytes(),
        }
    }
}
