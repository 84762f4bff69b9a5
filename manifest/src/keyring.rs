//! The device's durable issuer trust: the keys signed manifests announced
//! (`next_jwk`), the keys retired (`retire_kids`) and the anti-rollback
//! floor a signed `min_unixtime` raised, kept in one small JSON file
//! (`<state-dir>/ota/keyring.json` in `lwsysd`) written crash-safely.
//!
//! Rules: the trusted set is the configured key unless retired, then the
//! announced keys not retired, at most [`MAX_TRUSTED_KEYS`]. Retiring is
//! final: a retired `kid` is recorded, so the configured key stays retired
//! whatever the config says, and an announced key with a retired `kid` is
//! not trusted again. A manifest never retires the key that signed it (so
//! the last key is never retired either).

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use lwsys_messages::OtaError;
use serde::{Deserialize, Serialize};

use crate::jws::{verify_with_keys, Manifest, ManifestPolicy, Verified};
use crate::keys::{check_kid, IssuerKey, MAX_TRUSTED_KEYS};

/// Largest keyring file read, in bytes (eight keys take about 2 KiB).
pub const MAX_KEYRING_BYTES: u64 = 64 * 1024;

/// Most retired `kid`s remembered; past it the oldest retirement of an
/// announced key is forgotten (the configured key's never is).
pub const MAX_RETIRED: usize = 64;

/// The keyring file's format version.
const VERSION: u32 = 1;

/// The keyring file as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringFile {
    /// Format version, 1.
    pub version: u32,
    /// Announced public JWKs (each with its `kid`), oldest first.
    pub keys: Vec<serde_json::Value>,
    /// Retired `kid`s, oldest first.
    pub retired: Vec<String>,
    /// The highest signed `min_unixtime` accepted.
    pub min_unixtime: u64,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> OtaError {
    OtaError::Io(format!("{what} {}: {e}", path.display()))
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> OtaError {
    OtaError::BadKey(format!("keyring {}: {msg}", path.display()))
}

impl KeyringFile {
    /// Reads the keyring at `path`: `Ok(None)` when there is none; a
    /// symlink, a non-regular file, more than [`MAX_KEYRING_BYTES`], bad
    /// JSON, an unknown member or version, or more keys than trusted are
    /// errors.
    pub fn load(path: &Path) -> Result<Option<Self>, OtaError> {
        let f = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(bad(path, "is a symlink"));
            }
            Err(e) => return Err(io("open", path, e)),
        };
        let meta = f.metadata().map_err(|e| io("stat", path, e))?;
        if !meta.is_file() {
            return Err(bad(path, "is not a regular file"));
        }
        let mut bytes = Vec::new();
        f.take(MAX_KEYRING_BYTES + 1).read_to_end(&mut bytes).map_err(|e| io("read", path, e))?;
        if bytes.len() as u64 > MAX_KEYRING_BYTES {
            return Err(bad(path, format!("over {MAX_KEYRING_BYTES} bytes")));
        }
        let file: Self = serde_json::from_slice(&bytes).map_err(|e| bad(path, e))?;
        if file.version != VERSION {
            return Err(bad(path, format!("version {} is not {VERSION}", file.version)));
        }
        if file.keys.len() > MAX_TRUSTED_KEYS || file.retired.len() > MAX_RETIRED {
            return Err(bad(path, "more keys or retirements than allowed"));
        }
        Ok(Some(file))
    }

    /// Writes the keyring to `path` crash-safely: a temp file (0600,
    /// never through a symlink), fsync, rename over `path`, fsync of the
    /// directory.
    pub fn save(&self, path: &Path) -> Result<(), OtaError> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| OtaError::Io(format!("encode keyring: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        // A stale temp file (a crash mid-write) is dropped, not reused.
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| io("create", &tmp, e))?;
        f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(|e| io("chmod", &tmp, e))?;
        f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(|e| io("write", &tmp, e))?;
        drop(f);
        fs::rename(&tmp, path).map_err(|e| io("rename", &tmp, e))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("fsync", dir, e))
    }
}

/// What accepting a manifest changed in the keyring.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Learned {
    /// The `kid` of the key `next_jwk` added, if it was new.
    pub added: Option<String>,
    /// The `kid`s retired now.
    pub retired: Vec<String>,
    /// `retire_kids` entries not applied: the manifest's own signer.
    pub kept: Vec<String>,
    /// The new floor, if `min_unixtime` raised it.
    pub min_unixtime: Option<u64>,
}

impl Learned {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        self.added.is_some() || !self.retired.is_empty() || self.min_unixtime.is_some()
    }
}

/// The keys a device trusts and its signed floor, backed by a
/// [`KeyringFile`] (or only in memory, without a path).
#[derive(Debug, Clone)]
pub struct Keyring {
    configured: IssuerKey,
    added: Vec<IssuerKey>,
    retired: Vec<String>,
    min_unixtime: u64,
    path: Option<PathBuf>,
}

impl Keyring {
    /// The keyring over the `configured` key, with what the file at `path`
    /// holds (nothing if it does not exist). A bad file is an error: the
    /// caller must not fall back to the configured key alone, which may be
    /// retired.
    pub fn open(configured: IssuerKey, path: Option<&Path>) -> Result<Self, OtaError> {
        let mut ring = Self {
            configured,
            added: Vec::new(),
            retired: Vec::new(),
            min_unixtime: 0,
            path: path.map(Path::to_owned),
        };
        let Some(p) = path else { return Ok(ring) };
        let Some(file) = KeyringFile::load(p)? else { return Ok(ring) };
        for v in &file.keys {
            let k = IssuerKey::from_announced(v).map_err(|e| bad(p, e))?;
            ring.added.push(k);
        }
        for kid in &file.retired {
            check_kid(kid).map_err(|e| bad(p, e))?;
        }
        ring.retired = file.retired;
        ring.min_unixtime = file.min_unixtime;
        Ok(ring)
    }

    /// The trusted keys: the configured one unless retired, then the
    /// announced ones, oldest first.
    pub fn trusted(&self) -> Vec<IssuerKey> {
        let mut keys: Vec<IssuerKey> = Vec::with_capacity(1 + self.added.len());
        if !self.is_retired(&self.configured) {
            keys.push(self.configured.clone());
        }
        for k in &self.added {
            let dup = keys.iter().any(|t| t.kid() == k.kid() || t.key() == k.key());
            if !dup && !self.is_retired(k) {
                keys.push(k.clone());
            }
        }
        keys
    }

    /// The trusted keys' `kid`s (for `ota.status`).
    pub fn trusted_kids(&self) -> Vec<String> {
        self.trusted().iter().map(|k| k.kid().to_owned()).collect()
    }

    /// The durable signed floor.
    pub fn min_unixtime(&self) -> u64 {
        self.min_unixtime
    }

    fn is_retired(&self, key: &IssuerKey) -> bool {
        self.retired.iter().any(|r| key.answers_to(r))
    }

    /// Verifies `jws` against the trusted keys and `policy` raised to this
    /// keyring's floor (see [`verify_with_keys`]).
    pub fn verify(&self, jws: &[u8], policy: &ManifestPolicy) -> Result<Verified, OtaError> {
        let mut policy = policy.clone();
        policy.min_unixtime = policy.min_unixtime.max(self.min_unixtime);
        verify_with_keys(jws, &self.trusted(), &self.retired, &policy)
    }

    /// Takes in what a verified manifest (signature and every policy check
    /// passed) signed by `signer` announces: its `next_jwk`, its
    /// `retire_kids` (never `signer`) and its `min_unixtime`, written to
    /// the file before they take effect. All or nothing: a result over
    /// [`MAX_TRUSTED_KEYS`] or a failed write changes nothing.
    pub fn learn(&mut self, m: &Manifest, signer: &str) -> Result<Learned, OtaError> {
        let mut next = self.clone();
        let mut learned = Learned::default();
        let signer_key = self.trusted().into_iter().find(|k| k.kid() == signer);
        for kid in &m.retire_kids {
            if kid == signer || signer_key.as_ref().is_some_and(|k| k.answers_to(kid)) {
                learned.kept.push(kid.clone());
            } else if !next.retired.contains(kid) {
                next.retired.push(kid.clone());
                next.added.retain(|k| !k.answers_to(kid));
                learned.retired.push(kid.clone());
            }
        }
        if let Some(v) = &m.next_jwk {
            let k = IssuerKey::from_announced(v)?;
            let known = [&next.configured]
                .into_iter()
                .chain(&next.added)
                .any(|a| a.kid() == k.kid() || a.key() == k.key());
            if !known && !next.is_retired(&k) {
                learned.added = Some(k.kid().to_owned());
                next.added.push(k);
            }
        }
        if next.trusted().is_empty() {
            return Err(OtaError::BadKey("retire_kids would leave no trusted key".into()));
        }
        if next.trusted().len() > MAX_TRUSTED_KEYS || next.added.len() > MAX_TRUSTED_KEYS {
            return Err(OtaError::BadKey(format!(
                "next_jwk would make more than {MAX_TRUSTED_KEYS} trusted keys; retire one first"
            )));
        }
        next.forget_old_retirements();
        if let Some(min) = m.min_unixtime.filter(|&min| min > next.min_unixtime) {
            next.min_unixtime = min;
            learned.min_unixtime = Some(min);
        }
        if learned.changed() {
            if let Some(p) = &next.path {
                next.file().save(p)?;
            }
            *self = next;
        }
        Ok(learned)
    }

    /// Keeps the retired list bounded: the oldest retirements of keys
    /// other than the configured one go first (those keys are gone from
    /// the set already; only a new announcement could bring one back).
    fn forget_old_retirements(&mut self) {
        while self.retired.len() > MAX_RETIRED {
            let configured = &self.configured;
            match self.retired.iter().position(|r| !configured.answers_to(r)) {
                Some(i) => {
                    self.retired.remove(i);
                }
                None => break,
            }
        }
    }

    fn file(&self) -> KeyringFile {
        KeyringFile {
            version: VERSION,
            keys: self.added.iter().map(IssuerKey::to_jwk).collect(),
            retired: self.retired.clone(),
            min_unixtime: self.min_unixtime,
        }
    }
}
