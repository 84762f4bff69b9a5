//! One durable key as one file: its name (the table and key, hex-encoded,
//! so no byte of a caller's key ever reaches the filesystem as a path) and
//! its contents (a magic, a SHA-256 over table, key and value, then the
//! value), checked in full on every read.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::StoreError;

/// The first bytes of every record file; a new format gets a new one.
pub const MAGIC: &[u8; 8] = b"lwsysKV1";

/// Magic and digest.
pub const HEADER_BYTES: usize = MAGIC.len() + 32;

/// The largest value the store holds: the largest blob `blobs.max_bytes`
/// allows. A file longer than a header and this is damage, refused before
/// anything is allocated for it.
pub const MAX_VALUE_BYTES: usize = 256 * 1024 * 1024;

/// The longest file name a record gets: Linux allows 255 bytes, and the
/// temporary name adds [`TMP_SUFFIX`].
const MAX_NAME_BYTES: usize = 250;

/// Appended to a record's name while it is being written; such a file is
/// never read, and a leftover one (a crash mid-write) is removed at open.
pub const TMP_SUFFIX: &str = ".tmp";

/// The file name of `key` in `table`: `<hex table>.<hex key>`.
pub fn name(op: &'static str, table: &str, key: &[u8]) -> Result<String, StoreError> {
    let refused = |detail: String| StoreError::Refused { op, table: table.to_owned(), detail };
    if table.is_empty() {
        return Err(refused("the table name is empty".into()));
    }
    if 2 * (table.len() + key.len()) + 1 > MAX_NAME_BYTES {
        return Err(refused(format!(
            "table and key are {} bytes; at most {} fit one file name",
            table.len() + key.len(),
            (MAX_NAME_BYTES - 1) / 2
        )));
    }
    Ok(format!("{}.{}", hex::encode(table), hex::encode(key)))
}

/// The table and key a file name stands for; `None` for every other name
/// (temporary files, anything an admin left there).
pub fn parse_name(name: &str) -> Option<(String, Vec<u8>)> {
    let (t, k) = name.split_once('.')?;
    let table = String::from_utf8(hex::decode(t).ok()?).ok()?;
    (!table.is_empty()).then_some(())?;
    Some((table, hex::decode(k).ok()?))
}

fn digest(table: &str, key: &[u8], value: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    // Lengths first, so that no two (table, key, value) hash alike; the
    // table and key are in it so that a file renamed to another key is
    // damage, not a value for that key.
    h.update((table.len() as u64).to_le_bytes());
    h.update(table.as_bytes());
    h.update((key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(value);
    h.finalize().into()
}

/// A record file's header for `value` (written before the value).
pub fn header(table: &str, key: &[u8], value: &[u8]) -> [u8; HEADER_BYTES] {
    let mut out = [0u8; HEADER_BYTES];
    out[..MAGIC.len()].copy_from_slice(MAGIC);
    out[MAGIC.len()..].copy_from_slice(&digest(table, key, value));
    out
}

/// Reads and checks the record of `key` in `table` from `file` (opened
/// from `path`): its length bounded before allocating, its magic and its
/// digest. Any mismatch is [`StoreError::Damaged`] naming `path`.
pub fn read(mut file: File, path: &Path, table: &str, key: &[u8]) -> Result<Vec<u8>, StoreError> {
    let damaged = |detail: String| StoreError::Damaged { path: path.to_owned(), detail };
    let io_err = |source: io::Error| StoreError::File { path: path.to_owned(), source };
    let len = file.metadata().map_err(io_err)?.len();
    let max = (HEADER_BYTES + MAX_VALUE_BYTES) as u64;
    if len < HEADER_BYTES as u64 {
        return Err(damaged(format!("{len} bytes, shorter than a record header")));
    }
    if len > max {
        return Err(damaged(format!("{len} bytes, longer than any record ({max})")));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // `take`: a file growing under us cannot make this read unbounded.
    (&mut file).take(max + 1).read_to_end(&mut bytes).map_err(io_err)?;
    if bytes.len() as u64 > max || bytes.len() < HEADER_BYTES {
        return Err(damaged("the file changed length while read".into()));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(damaged("not a store record (wrong magic)".into()));
    }
    let value = &bytes[HEADER_BYTES..];
    if bytes[MAGIC.len()..HEADER_BYTES] != digest(table, key, value) {
        return Err(damaged("checksum mismatch: the contents are not what was written".into()));
    }
    bytes.drain(..HEADER_BYTES);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_never_hold_a_path() {
        for (t, k) in [("blobs", &b"AUTH/1"[..]), ("x", b"../../etc/passwd"), ("t", b"")] {
            let n = name("put", t, k).unwrap();
            assert!(n.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.'), "{n}");
            assert_eq!(parse_name(&n), Some((t.to_owned(), k.to_vec())));
        }
        assert!(parse_name("blobs.tmp").is_none());
        assert!(parse_name(&format!("{}{TMP_SUFFIX}", name("put", "t", b"k").unwrap())).is_none());
        assert!(parse_name(".626c").is_none(), "an empty table is no record");
    }

    #[test]
    fn a_name_too_long_or_an_empty_table_is_refused() {
        assert!(name("put", "", b"k").is_err());
        let long = vec![b'k'; 124];
        assert!(name("put", "t", &long[..123]).is_ok());
        let e = name("put", "t", &long).unwrap_err();
        assert!(e.to_string().contains("at most 124"), "{e}");
        assert!(name("put", "t", &long).unwrap_err().to_string().contains("refused"));
    }
}
