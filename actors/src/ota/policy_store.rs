//! Where the update policy keeps what it knows of the release on offer
//! ([`ReleaseRecord`]: first seen, deferrals) across restarts:
//! `<state-dir>/ota/policy.json`, replaced atomically as the slot state
//! is (temp file, fsync, rename, directory fsync), so a crash leaves the
//! old or the new record. One release is tracked at a time, so the file
//! stays a few dozen bytes; a larger or unreadable one is set aside as
//! unknown (the release starts a fresh budget) and replaced on the next
//! save.

use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::policy::ReleaseRecord;

/// The largest `policy.json` read; a real one is under 100 bytes.
const MAX_BYTES: u64 = 4096;

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    #[serde(flatten)]
    record: ReleaseRecord,
}

/// The policy state file, or none (then the record lives in memory only).
#[derive(Debug, Clone, Default)]
pub struct PolicyStore {
    dir: Option<PathBuf>,
}

impl PolicyStore {
    /// Records kept under `dir` (the OTA state dir, which exists).
    pub fn new(dir: &Path) -> Self {
        Self { dir: Some(dir.to_owned()) }
    }

    /// Records kept in memory only (no state dir).
    pub fn memory() -> Self {
        Self { dir: None }
    }

    /// The stored record, or a fresh one if there is none or it cannot be
    /// read (the reason is returned beside it, for the log).
    pub fn load(&self) -> (ReleaseRecord, Option<String>) {
        let Some(dir) = &self.dir else { return (ReleaseRecord::default(), None) };
        let path = dir.join("policy.json");
        match read_bounded(&path) {
            Ok(None) => (ReleaseRecord::default(), None),
            Ok(Some(bytes)) => match serde_json::from_slice::<OnDisk>(&bytes) {
                Ok(d) if d.version == 1 => (d.record, None),
                Ok(d) => (ReleaseRecord::default(), Some(format!("unknown version {}", d.version))),
                Err(e) => (ReleaseRecord::default(), Some(format!("{}: {e}", path.display()))),
            },
            Err(e) => (ReleaseRecord::default(), Some(e)),
        }
    }

    /// Stores `record` durably.
    pub fn save(&self, record: &ReleaseRecord) -> Result<(), String> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let bytes = serde_json::to_vec(&OnDisk { version: 1, record: *record })
            .map_err(|e| format!("encode: {e}"))?;
        let tmp = dir.join("policy.json.tmp");
        let path = dir.join("policy.json");
        let mut f = super::slots::create_private(&tmp)
            .map_err(|e| format!("create {}: {e}", tmp.display()))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("write {}: {e}", tmp.display()))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| format!("rename {}: {e}", tmp.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("fsync {}: {e}", dir.display()))
    }
}

/// The file's bytes (`None` if absent), refusing one over [`MAX_BYTES`].
fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("open {}: {e}", path.display())),
    };
    let mut bytes = Vec::new();
    f.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!("{} is over {MAX_BYTES} bytes", path.display()));
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_a_reopen_and_bad_files_read_as_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let store = PolicyStore::new(dir.path());
        assert_eq!(store.load(), (ReleaseRecord::default(), None));
        let rec = ReleaseRecord { release: 1000, first_seen_unix: 77, deferrals: 3 };
        store.save(&rec).unwrap();
        assert_eq!(PolicyStore::new(dir.path()).load(), (rec, None));
        assert!(!dir.path().join("policy.json.tmp").exists());
        let path = dir.path().join("policy.json");
        for bad in [&b"{not json"[..], br#"{"version":9,"release":1}"#, &[b' '; 5000][..]] {
            fs::write(&path, bad).unwrap();
            let (r, why) = store.load();
            assert_eq!(r, ReleaseRecord::default());
            assert!(why.is_some());
        }
        store.save(&rec).unwrap();
        assert_eq!(store.load().0, rec);
        assert_eq!(PolicyStore::memory().load().0, ReleaseRecord::default());
    }
}
