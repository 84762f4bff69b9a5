//! The pure lws blob model (no actor, no I/O): per (kind, idx) a direct
//! blob (a shared `Bytes`, no copy) or a heap blob (a chain of copied
//! chunks), with upstream's operations and their edge cases.
//!
//! Where upstream leaves a case undefined (it asserts), this model picks the
//! answer a plain byte vector would give:
//! - appending to a direct blob turns it into a heap blob holding a copy of
//!   what it pointed at, then the chunk;
//! - destroy also drops a direct pointer (upstream leaves it set);
//! - a single view of an empty heap blob is the empty bytes (upstream has
//!   no pointer to give and fails).
//!
//! Slots are checked against the kind's own slot count; upstream checks the
//! index against the whole table, which lets `DEVICE_SERIAL` idx 3 reach
//! another kind's blob.

use bytes::Bytes;
use lwsys_messages::blobs::{
    BlobBytes, BlobError, BlobId, BlobKind, DEFAULT_MAX_BYTES, DEFAULT_NTP_SERVER, TOTAL_SLOTS,
};

/// One blob's contents.
#[derive(Debug, Clone)]
enum Blob {
    /// Points at shared bytes; nothing copied.
    Direct(Bytes),
    /// A chain of non-empty chunks, each a private copy; `starts[i]` is
    /// where chunk `i` begins (so a read at an offset finds its chunk by
    /// binary search, not by walking the chain); `len` is their total.
    Heap { chunks: Vec<Bytes>, starts: Vec<usize>, len: usize },
}

impl Blob {
    const EMPTY: Blob = Blob::Heap { chunks: Vec::new(), starts: Vec::new(), len: 0 };

    /// A heap blob of one chunk (none if `data` is empty).
    fn one_chunk(data: Bytes) -> Blob {
        let len = data.len();
        if len == 0 {
            Self::EMPTY
        } else {
            Blob::Heap { chunks: vec![data], starts: vec![0], len }
        }
    }

    fn size(&self) -> usize {
        match self {
            Blob::Direct(b) => b.len(),
            Blob::Heap { len, .. } => *len,
        }
    }
}

/// What `NTP_SERVER` reads while it is empty.
static NTP_DEFAULT: Blob = Blob::Direct(Bytes::from_static(DEFAULT_NTP_SERVER.as_bytes()));

/// Every slot of every kind. See the module docs.
#[derive(Debug, Clone)]
pub struct BlobModel {
    slots: [Blob; TOTAL_SLOTS],
    max_bytes: usize,
}

impl Default for BlobModel {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BYTES)
    }
}

impl BlobModel {
    /// Empty blobs, each at most `max_bytes` long.
    pub fn new(max_bytes: usize) -> Self {
        Self { slots: [Blob::EMPTY; TOTAL_SLOTS], max_bytes }
    }

    /// The size limit per blob.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    fn index(id: BlobId) -> Result<usize, BlobError> {
        if id.is_valid() {
            Ok(id.kind.first_slot() + id.idx)
        } else {
            Err(BlobError::IdxOutOfRange { kind: id.kind, idx: id.idx, slots: id.kind.slots() })
        }
    }

    fn slot(&self, id: BlobId) -> Result<&Blob, BlobError> {
        let i = Self::index(id)?;
        self.slots.get(i).ok_or(BlobError::IdxOutOfRange {
            kind: id.kind,
            idx: id.idx,
            slots: id.kind.slots(),
        })
    }

    fn slot_mut(&mut self, id: BlobId) -> Result<&mut Blob, BlobError> {
        let i = Self::index(id)?;
        self.slots.get_mut(i).ok_or(BlobError::IdxOutOfRange {
            kind: id.kind,
            idx: id.idx,
            slots: id.kind.slots(),
        })
    }

    /// The blob as read: `NTP_SERVER` falls back to its default when empty.
    fn readable(&self, id: BlobId) -> Result<&Blob, BlobError> {
        let b = self.slot(id)?;
        if id.kind == BlobKind::NtpServer && b.size() == 0 {
            Ok(&NTP_DEFAULT)
        } else {
            Ok(b)
        }
    }

    fn check_size(&self, id: BlobId, size: usize) -> Result<(), BlobError> {
        if size > self.max_bytes {
            Err(BlobError::TooLarge { id, size, max: self.max_bytes })
        } else {
            Ok(())
        }
    }

    /// Checks that `extra` more bytes fit (or, with `replace`, that a blob
    /// of `extra` bytes fits), without changing anything; returns the size
    /// the blob would have. Lets a caller persist first and apply after.
    pub fn check_grow(&self, id: BlobId, extra: usize, replace: bool) -> Result<usize, BlobError> {
        let now = if replace { 0 } else { self.slot(id)?.size() };
        Self::index(id)?;
        let size = now.saturating_add(extra);
        self.check_size(id, size)?;
        Ok(size)
    }

    /// Points the blob at `data` without copying (upstream
    /// `lws_system_blob_direct_set`). Returns the new size.
    pub fn set_direct(&mut self, id: BlobId, data: Bytes) -> Result<usize, BlobError> {
        self.check_grow(id, data.len(), true)?;
        let size = data.len();
        *self.slot_mut(id)? = Blob::Direct(data);
        Ok(size)
    }

    /// Copies `data` onto the end of the chain (upstream
    /// `lws_system_blob_heap_append`); an empty chunk adds nothing. Past
    /// the limit the blob is unchanged. Returns the new size.
    pub fn append(&mut self, id: BlobId, data: &[u8]) -> Result<usize, BlobError> {
        let size = self.check_grow(id, data.len(), false)?;
        let slot = self.slot_mut(id)?;
        if let Blob::Direct(b) = slot {
            *slot = Blob::one_chunk(Bytes::copy_from_slice(b));
        }
        if let Blob::Heap { chunks, starts, len } = slot {
            if !data.is_empty() {
                chunks.push(Bytes::copy_from_slice(data));
                starts.push(*len);
                *len = size;
            }
        }
        Ok(size)
    }

    /// Heap empty then append, as one step: past the limit the blob is
    /// unchanged. Returns the new size.
    pub fn set(&mut self, id: BlobId, data: &[u8]) -> Result<usize, BlobError> {
        self.check_grow(id, data.len(), true)?;
        *self.slot_mut(id)? = Blob::EMPTY;
        self.append(id, data)
    }

    /// Removes the contents (upstream `lws_system_blob_heap_empty`).
    /// Returns the size now read (the default's for `NTP_SERVER`).
    pub fn empty(&mut self, id: BlobId) -> Result<usize, BlobError> {
        *self.slot_mut(id)? = Blob::EMPTY;
        self.size(id)
    }

    /// Frees the chunks (upstream `lws_system_blob_destroy`); the blob
    /// stays usable, empty. Returns the size now read.
    pub fn destroy(&mut self, id: BlobId) -> Result<usize, BlobError> {
        self.empty(id)
    }

    /// The total size: the direct length or the sum of the chunks
    /// (upstream `lws_system_blob_get_size`).
    pub fn size(&self, id: BlobId) -> Result<usize, BlobError> {
        Ok(self.readable(id)?.size())
    }

    /// How many heap chunks the blob has (0 when direct or empty).
    pub fn chunks(&self, id: BlobId) -> Result<usize, BlobError> {
        Ok(match self.slot(id)? {
            Blob::Direct(_) => 0,
            Blob::Heap { chunks, .. } => chunks.len(),
        })
    }

    /// Whether the blob is direct.
    pub fn is_direct(&self, id: BlobId) -> Result<bool, BlobError> {
        Ok(matches!(self.slot(id)?, Blob::Direct(_)))
    }

    /// Copies at most `len` bytes from `offset` (upstream
    /// `lws_system_blob_get`). An offset at or past the end is an error,
    /// except offset 0 of an empty blob, which reads nothing.
    pub fn get(&self, id: BlobId, offset: usize, len: usize) -> Result<BlobBytes, BlobError> {
        let blob = self.readable(id)?;
        let size = blob.size();
        if offset > size || (offset == size && size != 0) {
            return Err(BlobError::OffsetPastEnd { id, offset, size });
        }
        let want = len.min(size - offset);
        let mut out = Vec::with_capacity(want);
        match blob {
            Blob::Direct(b) => {
                out.extend_from_slice(b.get(offset..offset + want).unwrap_or_default());
            }
            Blob::Heap { chunks, starts, .. } => {
                // The last chunk starting at or before `offset` holds it.
                let first = starts.partition_point(|s| *s <= offset).saturating_sub(1);
                let mut skip = offset - starts.get(first).copied().unwrap_or(0);
                for c in chunks.get(first..).unwrap_or_default() {
                    if out.len() == want {
                        break;
                    }
                    let take = (c.len() - skip).min(want - out.len());
                    out.extend_from_slice(c.get(skip..skip + take).unwrap_or_default());
                    skip = 0;
                }
            }
        }
        Ok(BlobBytes { data: Bytes::from(out), size })
    }

    /// The bytes without copying (upstream
    /// `lws_system_blob_get_single_ptr`): fine for a direct blob or a heap
    /// blob of at most one chunk, an error for several chunks.
    pub fn view(&self, id: BlobId) -> Result<BlobBytes, BlobError> {
        let data = match self.readable(id)? {
            Blob::Direct(b) => b.clone(),
            Blob::Heap { chunks, .. } => match chunks.as_slice() {
                [] => Bytes::new(),
                [one] => one.clone(),
                many => return Err(BlobError::NotSingle { id, chunks: many.len() }),
            },
        };
        let size = data.len();
        Ok(BlobBytes { data, size })
    }

    /// The blob's own bytes as one buffer (direct or heap, ignoring the
    /// `NTP_SERVER` default): what an update persists once it is applied.
    pub fn raw_contents(&self, id: BlobId) -> Result<Vec<u8>, BlobError> {
        Ok(match self.slot(id)? {
            Blob::Direct(b) => b.to_vec(),
            Blob::Heap { chunks, len, .. } => {
                let mut v = Vec::with_capacity(*len);
                for c in chunks {
                    v.extend_from_slice(c);
                }
                v
            }
        })
    }

    /// Puts back a value read from the durable store as a one-chunk heap
    /// blob, without the size check: a value stored under a larger limit
    /// is kept rather than lost.
    pub fn restore(&mut self, id: BlobId, value: Vec<u8>) -> Result<usize, BlobError> {
        let len = value.len();
        *self.slot_mut(id)? = Blob::one_chunk(Bytes::from(value));
        Ok(len)
    }
}

#[cfg(test)]
mod tests;
