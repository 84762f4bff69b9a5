//! `BlobHandle`: one blob of a running `BlobService`, as the library hands
//! it out (upstream `lws_system_get_blob(context, type, idx)`).

use std::sync::Arc;

use actix::Addr;
use bytes::Bytes;
use lwsys_messages::blobs::{
    AppendBlob, BlobBytes, BlobError, BlobId, DestroyBlob, EmptyBlob, GetBlob, GetBlobSize,
    SetBlob, SetBlobDirect, ViewBlob,
};

use super::BlobService;

/// Where the blob service is now: asked on every call, so a handle kept
/// across a restart of the service reaches the new one.
pub type BlobServiceLocator = Arc<dyn Fn() -> Option<Addr<BlobService>> + Send + Sync>;

/// One blob of a running [`BlobService`]: cloneable, `Send`, usable from
/// any thread or executor. A closed mailbox (the service is down) is
/// [`BlobError::Unavailable`]; every other error is the service's answer.
#[derive(Clone)]
pub struct BlobHandle {
    service: Service,
    id: BlobId,
}

#[derive(Clone)]
enum Service {
    Fixed(Addr<BlobService>),
    Located(BlobServiceLocator),
}

impl std::fmt::Debug for BlobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobHandle").field("id", &self.id).finish_non_exhaustive()
    }
}

impl BlobHandle {
    /// A handle on blob `id` of the service at `addr`. The slot is checked
    /// on each call, not here, so a bad one fails with
    /// [`BlobError::IdxOutOfRange`] when used.
    pub fn new(addr: Addr<BlobService>, id: BlobId) -> Self {
        Self { service: Service::Fixed(addr), id }
    }

    /// A handle on blob `id` of whichever service `locate` names at each
    /// call: what a supervised system hands out, since the supervisor may
    /// restart the service under a new address.
    pub fn located(locate: BlobServiceLocator, id: BlobId) -> Self {
        Self { service: Service::Located(locate), id }
    }

    /// Which blob this is.
    pub fn id(&self) -> BlobId {
        self.id
    }

    async fn ask<M>(&self, msg: M) -> Result<M::Result, BlobError>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        BlobService: actix::Handler<M>,
    {
        let addr = match &self.service {
            Service::Fixed(a) => a.clone(),
            Service::Located(locate) => locate().ok_or(BlobError::Unavailable)?,
        };
        addr.send(msg).await.map_err(|_| BlobError::Unavailable)
    }

    /// Heap set: the blob becomes a copy of `data`. Returns the new size.
    pub async fn set(&self, data: impl Into<Bytes>) -> Result<usize, BlobError> {
        Ok(self.ask(SetBlob { id: self.id, data: data.into() }).await??.size)
    }

    /// Heap append of a copy of `data`. Returns the new size.
    pub async fn append(&self, data: impl Into<Bytes>) -> Result<usize, BlobError> {
        Ok(self.ask(AppendBlob { id: self.id, data: data.into() }).await??.size)
    }

    /// Heap empty. Returns the new size.
    pub async fn empty(&self) -> Result<usize, BlobError> {
        Ok(self.ask(EmptyBlob { id: self.id }).await??.size)
    }

    /// Points the blob at `data` without copying; never persisted.
    pub async fn set_direct(&self, data: Bytes) -> Result<usize, BlobError> {
        Ok(self.ask(SetBlobDirect { id: self.id, data }).await??.size)
    }

    /// Copies at most `len` bytes from `offset` (`None`: to the end).
    pub async fn get(&self, offset: usize, len: Option<usize>) -> Result<BlobBytes, BlobError> {
        self.ask(GetBlob { id: self.id, offset, len }).await?
    }

    /// The bytes without copying, when the blob is direct or one chunk.
    pub async fn view(&self) -> Result<Bytes, BlobError> {
        Ok(self.ask(ViewBlob { id: self.id }).await??.data)
    }

    /// The total size.
    pub async fn size(&self) -> Result<usize, BlobError> {
        Ok(self.ask(GetBlobSize { id: self.id }).await??.size)
    }

    /// Frees the heap chunks. Returns the new size.
    pub async fn destroy(&self) -> Result<usize, BlobError> {
        Ok(self.ask(DestroyBlob { id: self.id }).await??.size)
    }
}
