//! The chunked install itself (see the parent module for the flow).

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lwsys_manifest::chunks::inflate_chunk;
use lwsys_manifest::{ChunkRef, LocalIndex};
use lwsys_messages::ota::{OtaError, OtaEvent, OtaPhase};
use sha2::{Digest as _, Sha256, Sha512};

use super::plan::{active_chunks, index_len, read_full, Digest, Plan};
use super::CHUNK_ATTEMPTS;
use crate::ota::journal::Journal;
use crate::ota::pipeline::Progress;
use crate::ota::{Fetcher, Manifest, OtaOps};

/// Where a chunk can be copied from locally.
#[derive(Debug, Clone, Copy)]
enum Local {
    /// The running image, at this offset.
    Active(u64),
    /// The image being written, at this offset (already written).
    Written(u64),
}

/// One install under way.
struct Install<'a, 'p> {
    ops: &'a mut dyn OtaOps,
    fetcher: &'a Fetcher,
    m: &'a Manifest,
    cref: &'a ChunkRef,
    plan: Plan,
    cancel: &'a AtomicBool,
    deadline: Instant,
    p: Progress<'p>,
    sha512: Sha512,
    /// Inflated bytes written (kept ones included).
    written: u64,
    /// Chunks of the running image by digest.
    active: HashMap<Digest, u64>,
    /// Chunks of the new image written so far by digest.
    seen: HashMap<Digest, u64>,
    /// Lost connections taken up again so far.
    resumes: u32,
    /// One inflated chunk.
    out: Vec<u8>,
}

/// Installs `m` (which must have `chunks`) through `ops`; see the parent
/// module. `journal` (if any) is where the release being written is
/// recorded, for a resume after a restart.
pub fn install_chunked(
    ops: &mut dyn OtaOps,
    fetcher: &Fetcher,
    m: &Manifest,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(OtaEvent),
    journal: Option<&Journal>,
) -> Result<(), OtaError> {
    let cref = m.chunks.as_ref().ok_or_else(|| OtaError::ChunkIndex("no chunk index".into()))?;
    let mut p = Progress::new(progress);
    let res = prepare(ops, fetcher, m, cref, cancel);
    let (plan, active) = match res {
        Ok(v) => v,
        Err(e) => {
            p.report(ops, OtaPhase::Failed, 0, 0, true);
            return Err(e);
        }
    };
    let cs = usize::try_from(plan.chunk_size()).unwrap_or(0);
    let mut inst = Install {
        ops,
        fetcher,
        m,
        cref,
        plan,
        cancel,
        deadline: Instant::now() + fetcher.download_timeout(),
        p,
        sha512: Sha512::new(),
        written: 0,
        active,
        seen: HashMap::new(),
        resumes: 0,
        out: vec![0u8; cs],
    };
    let started = inst.begin(journal);
    let result = started.and_then(|()| inst.run());
    match result {
        Ok(()) => {
            // The new image is the active one now: keep its index beside it
            // (best effort: without it the next install hashes it once).
            let local = LocalIndex::from(&inst.plan.index);
            let _ = inst.ops.store_index(&local.to_bytes());
            if let Some(j) = journal {
                let _ = j.clear();
            }
            let total = inst.written;
            inst.p.report(inst.ops, OtaPhase::Done, 100, total, true);
            Ok(())
        }
        Err((e, begun)) => {
            // Transient faults keep what was verified (a resume re-hashes
            // it anyway); bad data or a bad release drops it.
            let keep = matches!(
                e,
                OtaError::Network(_)
                    | OtaError::Deadline { .. }
                    | OtaError::Cancelled
                    | OtaError::Http { status: 429 | 500..=599, .. }
            );
            if begun && keep {
                // Verified chunks stay for the next attempt.
                if inst.ops.suspend().is_err() {
                    let _ = inst.ops.abort();
                }
            } else {
                let _ = inst.ops.abort();
                if let Some(j) = journal.filter(|_| begun) {
                    let _ = j.clear();
                }
            }
            inst.p.report(inst.ops, OtaPhase::Failed, 0, 0, true);
            Err(e)
        }
    }
}

/// Fetches and checks the index, and finds the running image's chunks;
/// nothing is written yet.
fn prepare(
    ops: &mut dyn OtaOps,
    fetcher: &Fetcher,
    m: &Manifest,
    cref: &ChunkRef,
    cancel: &AtomicBool,
) -> Result<(Plan, HashMap<Digest, u64>), OtaError> {
    let want = hex::decode(&cref.index_sha256)
        .ok()
        .filter(|d| d.len() == 32)
        .ok_or_else(|| OtaError::ChunkIndex("index_sha256 is not 64 hex digits".into()))?;
    let max = index_len(m, cref)?;
    let index = fetcher
        .small_file_unless(&cref.index, max, cancel)?
        .map_err(|n| OtaError::ChunkIndex(format!("index of {n}+ bytes, want {max}")))?;
    if sha256(&index).as_slice() != want.as_slice() {
        return Err(OtaError::ChunkIndex("SHA-256 does not match the manifest".into()));
    }
    let plan = Plan::from_index(&index, m, cref)?;
    let active = active_chunks(ops, &plan, cancel)?;
    Ok((plan, active))
}

/// An error, and whether the slot write had begun.
type Failed = (OtaError, bool);

fn sha256(b: &[u8]) -> Digest {
    Sha256::digest(b).into()
}

impl Install<'_, '_> {
    fn percent(&self) -> u8 {
        let p = self.written.saturating_mul(100) / self.m.size.max(1);
        u8::try_from(p.min(99)).unwrap_or(99)
    }

    /// Resumes what the journal says is ours, or records this release;
    /// then opens the slot.
    fn begin(&mut self, journal: Option<&Journal>) -> Result<(), Failed> {
        let mut keep_chunks = 0;
        match journal {
            Some(j) if j.names(self.m) => {
                keep_chunks = self.rehash_partial().map_err(|e| (e, false))?;
            }
            // A journal that cannot be written (a full disk) only costs
            // the resume after a restart, not the update.
            Some(j) => {
                let _ = j.begin(self.m);
            }
            None => {}
        }
        let keep = self.plan.start(keep_chunks);
        let kept = self.ops.start_at(self.m, keep).map_err(|e| (e, false))?;
        if kept != keep {
            if kept != 0 {
                let e =
                    OtaError::Io(format!("asked to keep {keep} bytes, the platform kept {kept}"));
                return Err((e, true));
            }
            // The platform could not keep them: start over.
            self.sha512 = Sha512::new();
            self.seen.clear();
            self.written = 0;
        }
        self.p.counts.bytes_resumed = kept;
        let (percent, written) = (self.percent(), self.written);
        self.p.report(self.ops, OtaPhase::Downloading, percent, written, true);
        Ok(())
    }

    /// Reads the partial image back and counts its leading chunks that
    /// match the index, feeding them to the SHA-512.
    fn rehash_partial(&mut self) -> Result<usize, OtaError> {
        let mut good = 0;
        for i in 0..self.plan.chunk_count() {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(OtaError::Cancelled);
            }
            let (start, len) = (self.plan.start(i), self.plan.inflated_len(i));
            let (m, ops) = (self.m, &mut *self.ops);
            let Some(buf) = self.out.get_mut(..usize::try_from(len).unwrap_or(usize::MAX)) else {
                break;
            };
            let n = read_full(buf, |off, b| ops.read_partial(m, start + off, b))?;
            let want = self.plan.digest(i);
            if n as u64 != len || want != Some(sha256(buf)) {
                break;
            }
            self.sha512.update(&*buf);
            self.seen.entry(sha256(buf)).or_insert(start);
            self.written += len;
            good = i + 1;
        }
        Ok(good)
    }

    fn run(&mut self) -> Result<(), Failed> {
        let n = self.plan.chunk_count();
        let mut i = self.written_chunks();
        while i < n {
            self.check().map_err(|e| (e, true))?;
            if self.copy_local(i).map_err(|e| (e, true))? {
                i += 1;
                continue;
            }
            // The run of chunks to fetch: up to the next one held locally.
            let mut j = i + 1;
            while j < n && self.local(j).is_none() {
                j += 1;
            }
            self.fetch_run(i, j).map_err(|e| (e, true))?;
            i = j;
        }
        self.finish().map_err(|e| (e, true))
    }

    fn written_chunks(&self) -> usize {
        usize::try_from(self.written.div_ceil(self.plan.chunk_size().max(1))).unwrap_or(usize::MAX)
    }

    fn check(&self) -> Result<(), OtaError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(OtaError::Cancelled);
        }
        if Instant::now() >= self.deadline {
            return Err(OtaError::Deadline { secs: self.fetcher.download_timeout().as_secs() });
        }
        Ok(())
    }

    fn local(&self, i: usize) -> Option<Local> {
        let d = self.plan.digest(i)?;
        if let Some(&off) = self.active.get(&d) {
            return Some(Local::Active(off));
        }
        self.seen.get(&d).map(|&off| Local::Written(off))
    }

    /// Copies chunk `i` from where it is held locally, if it is and the
    /// bytes read there still have its digest.
    fn copy_local(&mut self, i: usize) -> Result<bool, OtaError> {
        let Some(from) = self.local(i) else { return Ok(false) };
        let len = usize::try_from(self.plan.inflated_len(i)).unwrap_or(usize::MAX);
        let (m, ops) = (self.m, &mut *self.ops);
        let Some(buf) = self.out.get_mut(..len) else { return Ok(false) };
        let n = match from {
            Local::Active(off) => read_full(buf, |o, b| ops.read_active(off + o, b)),
            Local::Written(off) => read_full(buf, |o, b| ops.read_partial(m, off + o, b)),
        }
        .unwrap_or(0);
        let want = self.plan.digest(i);
        if n != len || want != Some(sha256(buf)) {
            // Changed under us (a stale saved index): fetch it instead.
            if let (Local::Active(_), Some(d)) = (from, want) {
                self.active.remove(&d);
            }
            if let (Local::Written(_), Some(d)) = (from, want) {
                self.seen.remove(&d);
            }
            return Ok(false);
        }
        let buf = std::mem::take(&mut self.out);
        let res = self.commit(i, buf.get(..len).unwrap_or_default());
        self.out = buf;
        res?;
        self.p.counts.bytes_reused += len as u64;
        self.p.counts.chunks_reused += 1;
        Ok(true)
    }

    /// Writes the verified chunk `i`.
    fn commit(&mut self, i: usize, data: &[u8]) -> Result<(), OtaError> {
        self.ops.write(data)?;
        self.ops.checkpoint()?;
        self.sha512.update(data);
        let start = self.plan.start(i);
        self.seen.entry(sha256(data)).or_insert(start);
        self.written += data.len() as u64;
        let (percent, written) = (self.percent(), self.written);
        self.p.report(self.ops, OtaPhase::Downloading, percent, written, false);
        Ok(())
    }

    /// A lost connection: wait a little and go on, a bounded number of
    /// times per install.
    fn resume(&mut self, why: &str) -> Result<(), OtaError> {
        self.check()?;
        if self.resumes >= self.fetcher.max_resumes() {
            let url = self.fetcher.url(&self.cref.file);
            return Err(OtaError::Network(format!("{url}: {why} after {} resumes", self.resumes)));
        }
        self.resumes += 1;
        std::thread::sleep(Duration::from_millis(100 * u64::from(self.resumes)));
        Ok(())
    }

    /// Fetches chunks `i..j` with as few requests as it can, verifying and
    /// writing them one by one.
    fn fetch_run(&mut self, i: usize, j: usize) -> Result<(), OtaError> {
        let chunks = &self.plan.index.chunks;
        let (Some(first), Some(last)) = (chunks.get(i), chunks.get(j - 1)) else {
            return Ok(());
        };
        let end = last.comp_offset + u64::from(last.comp_len);
        let mut start = first.comp_offset;
        let mut c = i;
        let mut comp = Vec::new();
        while c < j {
            let file = self.cref.file.clone();
            let mut body = match self.fetcher.range(&file, start, end, self.deadline) {
                Ok(b) => b,
                Err(OtaError::Network(why)) => {
                    self.resume(&why)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            while c < j {
                self.check()?;
                let Some(chunk) = self.plan.index.chunks.get(c).copied() else { break };
                // comp_len is bounded by the index parser (about a chunk).
                comp.resize(chunk.comp_len as usize, 0);
                let got = read_body(&mut body, &mut comp);
                let n = match &got {
                    Ok(n) | Err((n, _)) => *n,
                };
                self.p.counts.bytes_fetched += n as u64;
                if let Err((n, e)) = got {
                    if let Some(inner) = e.get_ref().and_then(|r| r.downcast_ref::<OtaError>()) {
                        return Err(inner.clone());
                    }
                    if n > 0 {
                        self.p.counts.chunks_refetched += 1;
                    }
                    self.resume(&e.to_string())?;
                    break;
                }
                let len = u32::try_from(self.plan.inflated_len(c)).unwrap_or(u32::MAX);
                match inflate_chunk(&comp, len, &chunk.sha256) {
                    Ok(data) => self.commit(c, &data)?,
                    // Never written: fetched again on its own, while this
                    // run's body (already on its way) goes on after it.
                    Err(_) => self.refetch(c, &mut comp)?,
                }
                self.p.counts.chunks_fetched += 1;
                c += 1;
            }
            start = self.plan.index.chunks.get(c).map_or(end, |ch| ch.comp_offset);
        }
        Ok(())
    }

    /// Chunk `c` arrived bad once: fetches it alone until it is good, at
    /// most [`CHUNK_ATTEMPTS`] fetches in all, then writes it.
    fn refetch(&mut self, c: usize, comp: &mut Vec<u8>) -> Result<(), OtaError> {
        let Some(chunk) = self.plan.index.chunks.get(c).copied() else { return Ok(()) };
        let len = u32::try_from(self.plan.inflated_len(c)).unwrap_or(u32::MAX);
        let end = chunk.comp_offset + u64::from(chunk.comp_len);
        let mut tries = 1;
        while tries < CHUNK_ATTEMPTS {
            self.check()?;
            self.p.counts.chunks_refetched += 1;
            let file = self.cref.file.clone();
            let mut body = match self.fetcher.range(&file, chunk.comp_offset, end, self.deadline) {
                Ok(b) => b,
                Err(OtaError::Network(why)) => {
                    self.resume(&why)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            comp.resize(chunk.comp_len as usize, 0);
            let got = read_body(&mut body, comp);
            let n = match &got {
                Ok(n) | Err((n, _)) => *n,
            };
            self.p.counts.bytes_fetched += n as u64;
            if let Err((_, e)) = got {
                if let Some(inner) = e.get_ref().and_then(|r| r.downcast_ref::<OtaError>()) {
                    return Err(inner.clone());
                }
                self.resume(&e.to_string())?;
                continue;
            }
            tries += 1;
            if let Ok(data) = inflate_chunk(comp, len, &chunk.sha256) {
                return self.commit(c, &data);
            }
        }
        Err(OtaError::ChunkMismatch { chunk: c as u64, attempts: tries })
    }

    fn finish(&mut self) -> Result<(), OtaError> {
        if self.written != self.m.size {
            return Err(OtaError::ImageTooShort { got: self.written, want: self.m.size });
        }
        let written = self.written;
        self.p.report(self.ops, OtaPhase::Verifying, 99, written, true);
        let want = hex::decode(&self.m.sha512).map_err(|_| OtaError::BadHash)?;
        let got = std::mem::replace(&mut self.sha512, Sha512::new()).finalize();
        if !got.iter().eq(want.iter()) {
            return Err(OtaError::HashMismatch);
        }
        self.p.report(self.ops, OtaPhase::Finalizing, 99, written, true);
        self.ops.finalize(self.m)
    }
}

/// Reads exactly `buf.len()` bytes; on failure, how many came first.
fn read_body(body: &mut impl Read, buf: &mut [u8]) -> Result<usize, (usize, io::Error)> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        match body.read(rest) {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed early");
                return Err((filled, e));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((filled, e)),
        }
    }
    Ok(filled)
}
