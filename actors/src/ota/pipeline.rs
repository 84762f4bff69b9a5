//! The install pipeline on the OTA worker thread: HTTP body -> gunzip ->
//! SHA-512 -> [`OtaOps::write`], in bounded memory, then verify and
//! finalize; with a [`DownloadCache`], the compressed body is also saved
//! as it arrives so that a later run resumes it.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufReader, Read, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;
use lwsys_messages::ota::{InstallCounts, OtaError, OtaEvent, OtaPhase};
use p521::ecdsa::VerifyingKey;
use sha2::{Digest as _, Sha512};

use super::fetch::{Fetcher, ResumingBody};
use super::manifest::{verify_manifest, Manifest, ManifestPolicy};
use super::resume::DownloadCache;
use super::OtaOps;

/// Inflated bytes handed to the platform per write.
pub const CHUNK: usize = 256 * 1024;

/// The most compressed bytes accepted for an image of `size` inflated
/// bytes: deflate's worst case (stored blocks) adds 5 bytes per 64 KiB,
/// so this is generous for any real gzip file, yet it bounds the saved
/// copy and stops a stream of empty gzip members that never ends.
pub fn max_compressed(size: u64) -> u64 {
    size.saturating_add(size / 64).saturating_add(64 * 1024)
}

/// Fetches and verifies the manifest, taking the installed and rolled-back
/// unixtimes from `ops` (the rest of `policy` as given).
pub fn check(
    ops: &dyn OtaOps,
    fetcher: &Fetcher,
    key: &VerifyingKey,
    policy: &ManifestPolicy,
) -> Result<Manifest, OtaError> {
    check_unless(ops, fetcher, key, policy, &AtomicBool::new(false))
}

/// As [`check`], giving up with [`OtaError::Cancelled`] once `cancel` is
/// set (the service died: its replacement waits for this worker).
pub fn check_unless(
    ops: &dyn OtaOps,
    fetcher: &Fetcher,
    key: &VerifyingKey,
    policy: &ManifestPolicy,
    cancel: &AtomicBool,
) -> Result<Manifest, OtaError> {
    let mut policy = policy.clone();
    policy.installed_unixtime = ops.last_fw_unixtime();
    policy.rolled_back_unixtime = ops.rolled_back_unixtime();
    let jws = fetcher.manifest_unless(policy.max_manifest_bytes, cancel)?;
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
pub(super) struct Progress<'a> {
    sink: &'a mut dyn FnMut(OtaEvent),
    last_percent: Option<u8>,
    last_at: Instant,
    resumed_from: u64,
    /// The install's counters (`bytes_fetched`, ...) sent with each event.
    pub(super) counts: InstallCounts,
}

impl<'a> Progress<'a> {
    /// Progress told to `sink`, no counters yet.
    pub(super) fn new(sink: &'a mut dyn FnMut(OtaEvent)) -> Self {
        Self {
            sink,
            last_percent: None,
            last_at: Instant::now(),
            resumed_from: 0,
            counts: InstallCounts::default(),
        }
    }

    /// Tells `ops` and the sink, at most once per percent or second
    /// unless `force`.
    pub(super) fn report(
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
            let resumed_from = self.resumed_from;
            (self.sink)(OtaEvent { phase, percent, bytes, resumed_from, counts: self.counts });
        }
    }
}

/// Downloads, verifies and installs `m`'s image through `ops`: start,
/// write in chunks, and finalize only if the inflated image is exactly
/// `size` bytes with the manifest's SHA-512 and a good gzip trailer. On any
/// failure the slot write is aborted (the active slot is never touched).
/// `cancel` is checked per read from the network and per chunk; the whole
/// download must end within the fetcher's `download_timeout`. Progress
/// reaches 100 % only after finalize.
pub fn install(
    ops: &mut dyn OtaOps,
    fetcher: &Fetcher,
    m: &Manifest,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(OtaEvent),
) -> Result<(), OtaError> {
    install_resumable(ops, fetcher, m, cancel, progress, None)
}

/// As [`install`], saving the compressed download in `cache` as it arrives
/// and, when `cache` already holds a prefix of `m`'s image that the server
/// agrees to continue (206), replaying that prefix instead of fetching it
/// again. Any doubt (another manifest, no record, a server that ignores
/// Range) starts from zero. The saved copy is dropped once the image is
/// installed or found bad; a network failure or the deadline keeps it for
/// the next attempt.
pub fn install_resumable(
    ops: &mut dyn OtaOps,
    fetcher: &Fetcher,
    m: &Manifest,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(OtaEvent),
    cache: Option<&DownloadCache>,
) -> Result<(), OtaError> {
    let deadline = Instant::now() + fetcher.download_timeout();
    let mut p = Progress::new(progress);
    let want = hex::decode(&m.sha512).map_err(|_| OtaError::BadHash)?;
    // Fetch first: a 404 or 500 must not even mark the inactive slot bad.
    let (prefix, body, save) = open_body(fetcher, m, deadline, cache)?;
    p.resumed_from = prefix.as_ref().map_or(0, |(_, n)| *n);
    ops.start(m)?;
    let replay: Box<dyn Read> = match prefix {
        Some((f, n)) => Box::new(f.take(n)),
        None => Box::new(io::empty()),
    };
    let seen = p.resumed_from;
    let fetched = Cell::new(0);
    let max = max_compressed(m.size);
    let source = replay.chain(Tee { body, save, cancel, seen, max, fetched: &fetched });
    let result = stream(ops, source, m, &want, cancel, &mut p, &fetched).and_then(|bytes| {
        p.report(ops, OtaPhase::Finalizing, 99, bytes, true);
        ops.finalize(m).map(|()| bytes)
    });
    match result {
        Ok(bytes) => {
            if let Some(c) = cache {
                // Installed: the copy is no longer needed (a failure here
                // only leaves a stale copy the next install replaces).
                let _ = c.clear();
            }
            p.report(ops, OtaPhase::Done, 100, bytes, true);
            Ok(())
        }
        Err(e) => {
            let _ = ops.abort();
            let worth_keeping =
                matches!(e, OtaError::Network(_) | OtaError::Deadline { .. } | OtaError::Cancelled);
            if let Some(c) = cache.filter(|_| !worth_keeping) {
                // The bytes themselves may be what is wrong: never replay them.
                let _ = c.clear();
            }
            p.report(ops, OtaPhase::Failed, 0, 0, true);
            Err(e)
        }
    }
}

/// The saved prefix to replay (file, length), the network body that
/// continues it, and the file that body's bytes are appended to.
type Opened<'a> = (Option<(File, u64)>, ResumingBody<'a>, Option<File>);

fn open_body<'a>(
    fetcher: &'a Fetcher,
    m: &Manifest,
    deadline: Instant,
    cache: Option<&DownloadCache>,
) -> Result<Opened<'a>, OtaError> {
    let Some(cache) = cache else {
        return Ok((None, fetcher.image_from(&m.path, 0, deadline)?, None));
    };
    if let Some((f, n)) = cache.prefix(m) {
        match fetcher.image_from(&m.path, n, deadline) {
            Ok(body) if body.start() == n => {
                let save = cache.append(n)?;
                return Ok((Some((f, n)), body, Some(save)));
            }
            // The server sent the whole file: start from zero with it.
            Ok(body) => return Ok((None, body, cache.begin(m).ok())),
            // 416: the saved prefix is not a prefix of this file.
            Err(OtaError::Http { status: 416, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let body = fetcher.image_from(&m.path, 0, deadline)?;
    // A copy that cannot be started (say, a full disk) only costs the
    // resume, not the update.
    Ok((None, body, cache.begin(m).ok()))
}

/// The network body, copied to the saved prefix as it is read, checking
/// for cancellation and the deadline at every read.
struct Tee<'a, 'b> {
    body: ResumingBody<'a>,
    save: Option<File>,
    cancel: &'b AtomicBool,
    /// Compressed bytes so far (saved prefix included), at most `max`.
    seen: u64,
    max: u64,
    /// Compressed bytes read from the network (for `bytes_fetched`).
    fetched: &'b Cell<u64>,
}

impl Read for Tee<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other(OtaError::Cancelled));
        }
        if self.body.past_deadline() {
            return Err(self.body.deadline_error());
        }
        let n = self.body.read(buf)?;
        self.seen += n as u64;
        self.fetched.set(self.fetched.get() + n as u64);
        if self.seen > self.max {
            let why = format!("compressed image longer than {} bytes", self.max);
            return Err(io::Error::other(OtaError::Gzip(why)));
        }
        if let (Some(f), Some(got)) = (self.save.as_mut(), buf.get(..n)) {
            // Written straight away (no buffer): bytes the process has
            // read are in the file even if it is killed right after. If
            // the copy cannot grow (a full disk), what it holds is still a
            // prefix of the file: stop saving, go on installing.
            if f.write_all(got).is_err() {
                self.save = None;
            }
        }
        Ok(n)
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
    fetched: &Cell<u64>,
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
        p.counts.bytes_fetched = fetched.get();
        p.report(ops, OtaPhase::Downloading, percent, total, false);
    }
    p.counts.bytes_fetched = fetched.get();
    if total < m.size {
        return Err(OtaError::ImageTooShort { got: total, want: m.size });
    }
    p.report(ops, OtaPhase::Verifying, 99, total, true);
    if !hasher.finalize().iter().eq(want.iter()) {
        return Err(OtaError::HashMismatch);
    }
    Ok(total)
}
