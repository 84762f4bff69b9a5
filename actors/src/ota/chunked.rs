//! Chunked installs (a manifest with a signed `chunks` index): every chunk
//! is verified before the platform's `write` sees it, chunks the device
//! already has are copied locally instead of fetched, and an interrupted
//! install resumes where it stopped.
//!
//! The flow on the worker thread ([`install_auto`] picks it when the
//! verified manifest has `chunks`; otherwise [`pipeline`] as before):
//! 1. fetch the index (bounded by the signed size and chunk size), check
//!    its SHA-256 against the signed `index_sha256` before parsing, and
//!    check it agrees with the manifest ([`plan::Plan`]). A bad index is
//!    refused before anything is written.
//! 2. the running image's chunk digests: the platform's saved
//!    `image.idx` ([`OtaOps::load_index`]) or, once, by hashing the
//!    running image ([`OtaOps::read_active`]) and saving the result.
//! 3. resume: if the journal ([`journal`](super::journal)) names this exact release, the
//!    partial image is read back ([`OtaOps::read_partial`]) and re-hashed
//!    chunk by chunk against the index; the prefix of good chunks is kept
//!    ([`OtaOps::start_at`]) and everything after it dropped. Otherwise
//!    the journal is rewritten for this release and the slot starts empty.
//! 4. each remaining chunk, in order: copied from the running image (or
//!    from earlier in the new one) if a chunk with its SHA-256 is there,
//!    hashed again after the read; else fetched with an HTTP Range request
//!    (adjacent missing chunks in one request), inflated (bounded to its
//!    length) and hashed. A chunk that fails is fetched again, at most
//!    [`CHUNK_ATTEMPTS`] times in all, and is never written. A good chunk
//!    is written and [`OtaOps::checkpoint`]ed, so after a SIGKILL at most
//!    the chunk in flight is fetched again.
//! 5. the whole image's size and SHA-512 are checked before
//!    [`OtaOps::finalize`], exactly as the whole-image pipeline does; then
//!    the index is saved as the new image's and the journal cleared.
//!
//! A server that ignores Range (answers 200) cannot serve chunks: the
//! release's `.img.gz` is installed instead, through [`pipeline`].
//!
//! A lost connection, a server error (5xx, 429), the deadline or a cancel
//! keeps the partial image ([`OtaOps::suspend`]) for the next attempt;
//! bad bytes (a chunk bad on every attempt, a final hash mismatch) drop
//! it and the journal.
//!
//! # Index-less images
//! A manifest without `chunks` (an upstream-made repository) goes through
//! [`pipeline`] unchanged. It resumes too, by keeping the compressed bytes
//! received ([`DownloadCache`]) and replaying them through gunzip and
//! SHA-512 after a restart, then asking the server only for the rest with
//! a Range request. flate2 cannot serialise its inflate state (nor sha2
//! its state portably), so the replay is local CPU, not network: no byte
//! is fetched twice, which is what "resume anywhere" asks of the link.

mod install;
pub mod plan;

use std::sync::atomic::AtomicBool;

use lwsys_messages::ota::{OtaError, OtaEvent};

use super::journal::Journal;
use super::{pipeline, DownloadCache, Fetcher, Manifest, OtaOps};

pub use install::install_chunked;

/// Fetches of one chunk before the install gives up with
/// [`OtaError::ChunkMismatch`].
pub const CHUNK_ATTEMPTS: u32 = 3;

/// Installs `m` the best way it allows: chunked when it has a signed
/// chunk index (journal in `cache`'s directory, so it resumes after a
/// restart), else the whole-image pipeline (resuming from `cache`). Each
/// path drops the other's leftovers first.
pub fn install_auto(
    ops: &mut dyn OtaOps,
    fetcher: &Fetcher,
    m: &Manifest,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(OtaEvent),
    cache: Option<&DownloadCache>,
) -> Result<(), OtaError> {
    let journal = cache.map(|c| Journal::new(c.dir()));
    if m.chunks.is_some() {
        if let Some(c) = cache {
            // A compressed copy of a whole-image download is of no use here.
            let _ = c.clear();
        }
        match install_chunked(ops, fetcher, m, cancel, progress, journal.as_ref()) {
            // A server that ignores Range cannot serve chunks: the same
            // release's whole image instead (the slot starts over).
            Err(OtaError::Http { status: 200, .. }) => {
                if let Some(j) = &journal {
                    let _ = j.clear();
                }
                pipeline::install_resumable(ops, fetcher, m, cancel, progress, cache)
            }
            r => r,
        }
    } else {
        if let Some(j) = &journal {
            let _ = j.clear();
        }
        pipeline::install_resumable(ops, fetcher, m, cancel, progress, cache)
    }
}
