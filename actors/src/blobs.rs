//! `BlobService`: the sole owner of the system blobs (the lws blob model of
//! [`model`]) and of their durable copies in the [`Store`].
//!
//! Blobs of the kinds configured durable are loaded from the store when the
//! service is built, and every update to one is committed to the store
//! before the reply is sent, as one transaction holding the blob's whole
//! new value: after a crash each blob is as before or as after an update.
//! If the store write fails, the blob is unchanged and the reply is
//! [`BlobError::Store`].
//!
//! Direct blobs are never persisted: they stand for caller-owned memory,
//! which does not outlive the process. Setting a durable kind direct
//! removes its stored value, so a restart finds it empty rather than stale.
//!
//! Store writes block the actor's thread for a commit (an fsync), so a
//! system should run this actor on a thread of its own, as `lwsys::Builder`
//! does, never on the event loop that answers consent and clients.
//!
//! Contents are never logged, only kind, slot and size: several kinds hold
//! secrets ([`BlobKind::is_secret`]). Refusing secrets to other uids is the
//! control protocol's job.

mod handle;
pub mod model;

use crate::lifecycle::DeathNotice;
use actix::prelude::*;
use lwsys_messages::blobs::{
    AppendBlob, BlobBytes, BlobError, BlobId, BlobKind, BlobSize, DestroyBlob, EmptyBlob, GetBlob,
    GetBlobSize, SetBlob, SetBlobDirect, ViewBlob, DEFAULT_DURABLE, DEFAULT_MAX_BYTES,
};
use lwsys_messages::lifecycle::{Crash, Stop, WatchDeath};
use slog::{debug, warn, Logger};

pub use self::handle::{BlobHandle, BlobServiceLocator};
pub use self::model::BlobModel;
use crate::store::{Store, StoreError};

/// Owns the blobs. See the module docs.
pub struct BlobService {
    model: BlobModel,
    durable: Vec<BlobKind>,
    store: Option<Store>,
    log: Logger,
    death: DeathNotice,
}

fn store_err(e: StoreError) -> BlobError {
    BlobError::Store(e.to_string())
}

impl BlobService {
    /// A service whose blobs hold at most `max_bytes` each, keeping the
    /// `durable` kinds in `store` (with no store nothing is durable), and
    /// starting from what the store holds for those kinds.
    pub fn new(
        log: &Logger,
        max_bytes: usize,
        durable: &[BlobKind],
        store: Option<Store>,
    ) -> Result<Self, BlobError> {
        let log = log.new(slog::o!("service" => "blobs"));
        let mut durable = durable.to_vec();
        durable.sort();
        durable.dedup();
        let mut svc = Self {
            model: BlobModel::new(max_bytes),
            durable,
            store,
            log,
            death: DeathNotice::new(lwsys_messages::supervisor::ServiceKind::Blobs),
        };
        svc.load()?;
        Ok(svc)
    }

    /// A service with the defaults: [`DEFAULT_MAX_BYTES`] and the
    /// [`DEFAULT_DURABLE`] kinds.
    pub fn with_defaults(log: &Logger, store: Option<Store>) -> Result<Self, BlobError> {
        Self::new(log, DEFAULT_MAX_BYTES, &DEFAULT_DURABLE, store)
    }

    fn load(&mut self) -> Result<(), BlobError> {
        let Some(store) = &self.store else {
            if !self.durable.is_empty() {
                debug!(self.log, "no store: durable kinds will not survive a restart");
            }
            return Ok(());
        };
        let stored = store.load_blobs().map_err(store_err)?;
        for key in stored.unknown_keys {
            warn!(self.log, "ignoring a stored blob under an unknown key";
                "key" => %String::from_utf8_lossy(&key));
        }
        for (id, value) in stored.blobs {
            if !self.durable.contains(&id.kind) {
                // Left in place: the kind may be made durable again.
                debug!(self.log, "ignoring a stored blob of a kind not durable now";
                    "kind" => %id.kind, "idx" => id.idx);
                continue;
            }
            if value.len() > self.model.max_bytes() {
                warn!(self.log, "stored blob is over the size limit; kept";
                    "kind" => %id.kind, "idx" => id.idx, "size" => value.len(),
                    "max" => self.model.max_bytes());
            }
            let size = self.model.restore(id, value)?;
            debug!(self.log, "blob loaded"; "kind" => %id.kind, "idx" => id.idx, "size" => size);
        }
        Ok(())
    }

    /// The store, when this kind is durable.
    fn store_for(&self, id: BlobId) -> Option<&Store> {
        self.store.as_ref().filter(|_| self.durable.contains(&id.kind))
    }

    /// Durably records `value` (`None` or empty: nothing) as the blob's
    /// value, if its kind is durable.
    fn persist(&self, id: BlobId, value: Option<&[u8]>) -> Result<(), BlobError> {
        let Some(store) = self.store_for(id) else { return Ok(()) };
        match value {
            Some(v) if !v.is_empty() => store.put_blob(id, v).map_err(store_err),
            _ => store.delete_blob(id).map(|_| ()).map_err(store_err),
        }
    }

    fn changed(&self, what: &'static str, id: BlobId, size: usize) {
        debug!(self.log, "blob changed"; "op" => what, "kind" => %id.kind, "idx" => id.idx,
            "size" => size, "durable" => self.store_for(id).is_some());
    }

    /// Heap set: the blob becomes a copy of `data`, persisted first.
    pub fn set(&mut self, id: BlobId, data: &[u8]) -> Result<usize, BlobError> {
        self.model.check_grow(id, data.len(), true)?;
        self.persist(id, Some(data))?;
        let size = self.model.set(id, data)?;
        self.changed("set", id, size);
        Ok(size)
    }

    /// Heap append of a copy of `data`, persisted first.
    pub fn append(&mut self, id: BlobId, data: &[u8]) -> Result<usize, BlobError> {
        self.model.check_grow(id, data.len(), false)?;
        if self.store_for(id).is_some() && !data.is_empty() {
            let mut value = self.model.raw_contents(id)?;
            value.extend_from_slice(data);
            self.persist(id, Some(&value))?;
        }
        let size = self.model.append(id, data)?;
        self.changed("append", id, size);
        Ok(size)
    }

    /// Heap empty, persisted first.
    pub fn empty(&mut self, id: BlobId) -> Result<usize, BlobError> {
        self.model.size(id)?;
        self.persist(id, None)?;
        let size = self.model.empty(id)?;
        self.changed("empty", id, size);
        Ok(size)
    }

    /// Destroy, persisted first.
    pub fn destroy(&mut self, id: BlobId) -> Result<usize, BlobError> {
        self.model.size(id)?;
        self.persist(id, None)?;
        let size = self.model.destroy(id)?;
        self.changed("destroy", id, size);
        Ok(size)
    }

    /// Direct set: shares `data`; a durable kind's stored value is removed.
    pub fn set_direct(&mut self, id: BlobId, data: bytes::Bytes) -> Result<usize, BlobError> {
        self.model.check_grow(id, data.len(), true)?;
        self.persist(id, None)?;
        let size = self.model.set_direct(id, data)?;
        self.changed("set_direct", id, size);
        Ok(size)
    }

    /// The blobs, for reads.
    pub fn model(&self) -> &BlobModel {
        &self.model
    }
}

impl Actor for BlobService {
    type Context = Context<Self>;
}

impl Handler<SetBlob> for BlobService {
    type Result = Result<BlobSize, BlobError>;

    fn handle(&mut self, msg: SetBlob, _ctx: &mut Self::Context) -> Self::Result {
        self.set(msg.id, &msg.data).map(|size| BlobSize { size })
    }
}

impl Handler<AppendBlob> for BlobService {
    type Result = Result<BlobSize, BlobError>;

    fn handle(&mut self, msg: AppendBlob, _ctx: &mut Self::Context) -> Self::Result {
        self.append(msg.id, &msg.data).map(|size| BlobSize { size })
    }
}

impl Handler<EmptyBlob> for BlobService {
    type Result = Result<BlobSize, BlobError>;

    fn handle(&mut self, msg: EmptyBlob, _ctx: &mut Self::Context) -> Self::Result {
        self.empty(msg.id).map(|size| BlobSize { size })
    }
}

impl Handler<GetBlob> for BlobService {
    type Result = Result<BlobBytes, BlobError>;

    fn handle(&mut self, msg: GetBlob, _ctx: &mut Self::Context) -> Self::Result {
        self.model.get(msg.id, msg.offset, msg.len.unwrap_or(usize::MAX))
    }
}

impl Handler<GetBlobSize> for BlobService {
    type Result = Result<BlobSize, BlobError>;

    fn handle(&mut self, msg: GetBlobSize, _ctx: &mut Self::Context) -> Self::Result {
        self.model.size(msg.id).map(|size| BlobSize { size })
    }
}

impl Handler<DestroyBlob> for BlobService {
    type Result = Result<BlobSize, BlobError>;

    fn handle(&mut self, msg: DestroyBlob, _ctx: &mut Self::Context) -> Self::Result {
        self.destroy(msg.id).map(|size| BlobSize { size })
    }
}

impl Handler<SetBlobDirect> for BlobService {
    type Result = Result<BlobSize, BlobError>;

    fn handle(&mut self, msg: SetBlobDirect, _ctx: &mut Self::Context) -> Self::Result {
        self.set_direct(msg.id, msg.data).map(|size| BlobSize { size })
    }
}

impl Handler<ViewBlob> for BlobService {
    type Result = Result<BlobBytes, BlobError>;

    fn handle(&mut self, msg: ViewBlob, _ctx: &mut Self::Context) -> Self::Result {
        self.model.view(msg.id)
    }
}

impl Handler<WatchDeath> for BlobService {
    type Result = ();

    fn handle(&mut self, msg: WatchDeath, _ctx: &mut Self::Context) {
        self.death.watch(msg.0);
    }
}

impl Handler<Stop> for BlobService {
    type Result = ();

    /// Its system is torn down: stop without asking for a restart.
    fn handle(&mut self, _msg: Stop, ctx: &mut Self::Context) {
        self.death.forget();
        ctx.stop();
    }
}

impl Handler<Crash> for BlobService {
    type Result = ();

    /// The fault hook: fail as a bug in a handler would.
    fn handle(&mut self, _msg: Crash, _ctx: &mut Self::Context) {
        panic!("fault injected into the BlobService (debug.crash)");
    }
}

#[cfg(test)]
mod tests;
