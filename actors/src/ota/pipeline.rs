//! The install pipeline on the OTA worker thread: HTTP body -> gunzip ->
//! SHA-512 -> [`OtaOps::write`], in bounded memory, then verify and
//! finalize.

use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;
use lwsys_messages::ota::{OtaError, OtaEvent, OtaPhase};
use p521::ecdsa::VerifyingKey;
use sha2::{Digest as _, Sha512};

use super::fetch::Fetcher;
use super::manifest::{verify_manifest, Manifest, ManifestPolicy};
use super::OtaOps;

/// Inflated bytes handed to the platform per write.
pub const CHUNK: usize = 256 * 1024;

/// Fetches and verifies the manifest, taking the installed and rolled-back
/// unixtimes from `ops` (the rest of `policy` as given).
pub fn check(
    ops: &dyn OtaOps,
    fetcher: &Fetcher,
    key: &VerifyingKey,
    policy: &ManifestPolicy,
) -> Result<Manifest, OtaError> {
    let mut policy = policy.clone();
    policy.installed_unixtime = ops.last_fw_unixtime();
    policy.rolled_back_unixtime = ops.rolled_back_unixtime();
    let jws = fetcher.manifest(policy.max_manifest_bytes)?;
    verify_manifest(&jws, key, &policy)
}

/// [`check`] then [`install`], for callers that have consent already.
pub fn check_and_install(
    ops: &mut dyn OtaOps,
    fetcher: &Fetcher,
    key: &VerifyingKey,
    policy: &ManifestPolicy,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(OtaEvent),
) -> Result<Manifest, OtaError> {
    let m = check(ops, fetcher, key, policy)?;
    install(ops, fetcher, &m, cancel, progress)?;
    Ok(m)
}

/// Throttles progress to one event per percent or per second.
struct Progress<'a> {
    sink: &'a mut dyn FnMut(OtaEvent),
    last_percent: Option<u8>,
    last_at: Instant,
}

impl Progress<'_> {
    fn report(
        &mut self,
        ops: &mut dyn OtaOps,
        phase: OtaPhase,
        percent: u8,
        bytes: u64,
        force: bool,
    ) {
        let due =
            self.last_percent != Some(percent) || self.last_at.elapsed() >= Duration::from_secs(1);
        if force || due {
            self.last_percent = Some(percent);
            self.last_at = Instant::now();
            ops.progress(phase, percent);
            (self.sink)(OtaEvent { phase, percent, bytes });
        }
    }
}

/// Downloads, verifies and installs `m`'s image through `ops`: start,
/// write in chunks, and finalize only if the inflated image is exactly
/// `size` bytes with the manifest's SHA-512 and a good gzip trailer. On any
/// failure the slot write is aborted (the active slot is never touched).
/// `cancel` is checked per chunk. Progress reaches 100 % only after
/// finalize.
pub fn install(
    ops: &mut dyn OtaOps,
    fetcher: &Fetcher,
    m: &Manifest,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(OtaEvent),
) -> Result<(), OtaError> {
    let mut p = Progress { sink: progress, last_percent: None, last_at: Instant::now() };
    let want = hex::decode(&m.sha512).map_err(|_| OtaError::BadHash)?;
    // Fetch first: a 404 or 500 must not even mark the inactive slot bad.
    let body = fetcher.image(&m.path)?;
    ops.start(m)?;
    let result = stream(ops, body, m, &want, cancel, &mut p).and_then(|bytes| {
        p.report(ops, OtaPhase::Finalizing, 99, bytes, true);
        ops.finalize(m).map(|()| bytes)
    });
    match result {
        Ok(bytes) => {
            p.report(ops, OtaPhase::Done, 100, bytes, true);
            Ok(())
        }
        Err(e) => {
            let _ = ops.abort();
            p.report(ops, OtaPhase::Failed, 0, 0, true);
            Err(e)
        }
    }
}

fn read_error(e: io::Error) -> OtaError {
    if let Some(inner) = e.get_ref().and_then(|r| r.downcast_ref::<OtaError>()) {
        return inner.clone();
    }
    OtaError::Gzip(e.to_string())
}

fn stream(
    ops: &mut dyn OtaOps,
    body: impl Read,
    m: &Manifest,
    want: &[u8],
    cancel: &AtomicBool,
    p: &mut Progress<'_>,
) -> Result<u64, OtaError> {
    let mut gz = MultiGzDecoder::new(BufReader::with_capacity(64 * 1024, body));
    let mut hasher = Sha512::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total: u64 = 0;
    p.report(ops, OtaPhase::Downloading, 0, 0, true);
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(OtaError::Cancelled);
        }
        // Fill the chunk so the platform sees few, large writes.
        let mut filled = 0;
        while filled < buf.len() {
            let Some(rest) = buf.get_mut(filled..) else {
                break;
            };
            match gz.read(rest) {
                Ok(0) => break,
                Ok(n) => {
                    filled += n;
                    // Abort as soon as the image is longer than promised.
                    if total + filled as u64 > m.size {
                        return Err(OtaError::ImageTooLong(m.size));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(e)),
            }
        }
        if filled == 0 {
            break;
        }
        total += filled as u64;
        if total > m.size {
            return Err(OtaError::ImageTooLong(m.size));
        }
        let chunk = buf.get(..filled).unwrap_or_default();
        hasher.update(chunk);
        ops.write(chunk)?;
        let percent =
            u8::try_from((total.saturating_mul(100) / m.size.max(1)).min(99)).unwrap_or(99);
        p.report(ops, OtaPhase::Downloading, percent, total, false);
    }
    if total < m.size {
        return Err(OtaError::ImageTooShort { got: total, want: m.size });
    }
    p.report(ops, OtaPhase::Verifying, 99, total, true);
    if !hasher.finalize().iter().eq(want.iter()) {
        return Err(OtaError::HashMismatch);
    }
    Ok(total)
}
