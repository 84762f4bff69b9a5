//! `TrustService`: just-in-time CA trust. It owns the trust backends (lws
//! TBLB blobs, certificate directories) and the host cache through a
//! [`TrustStore`], and answers [`QueryTrust`] through the trust query
//! platform op ([`TrustQuery`]), which the `Builder` may replace.
//!
//! The pieces: [`TrustStore`] (backends in config order + [`HostCache`]),
//! [`TblbBackend`], [`CertDirBackend`], and [`JitVerifier`], the rustls
//! verifier that looks CAs up by the AKIDs of the chain a server presents.

use crate::lifecycle::DeathNotice;
use lwsys_messages::lifecycle::{Crash, Stop, WatchDeath};
use std::sync::Arc;

use actix::prelude::*;
use futures::future::BoxFuture;
use lwsys_messages::trust::{
    GetTrustInfo, QueryTrust, TrustError, TrustInfo, TrustedCerts, MAX_SKID_LEN,
};
use slog::{debug, Logger};

mod backend;
mod cache;
mod certdir;
mod store;
mod table;
mod tblb;
mod verifier;

#[cfg(test)]
mod testpki;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;

pub use backend::{TrustBackend, TrustConfig, TrustSource};
pub use cache::{HostCache, DEFAULT_CACHE_MAX_BYTES, DEFAULT_CACHE_TTL, ENTRY_OVERHEAD};
pub use certdir::CertDirBackend;
pub use store::{unix_now, TrustStore};
pub use tblb::{TblbBackend, TblbError, TBLB_HEADER_LEN, TBLB_MAGIC, TBLB_VERSION};
pub use verifier::{JitVerifier, MAX_JIT_CAS};

/// Answers [`QueryTrust`] and [`GetTrustInfo`]. See the module docs.
pub struct TrustService {
    query: Arc<dyn TrustQuery>,
    store: Option<Arc<TrustStore>>,
    log: Logger,
    death: DeathNotice,
}

impl TrustService {
    /// A service over the backends of `config`, loaded now.
    pub fn open(log: &Logger, config: &TrustConfig) -> Result<Self, TrustError> {
        Ok(Self::with_store(log, Arc::new(TrustStore::open(log, config)?)))
    }

    /// A service whose trust query is `store` (shared with [`JitVerifier`]s).
    pub fn with_store(log: &Logger, store: Arc<TrustStore>) -> Self {
        Self {
            query: store.clone(),
            store: Some(store),
            log: log.new(slog::o!("service" => "trust")),
            death: DeathNotice::new(lwsys_messages::supervisor::ServiceKind::Trust),
        }
    }

    /// A service whose trust query is a custom op (the `Builder`'s
    /// replacement); it has no store, so no [`JitVerifier`] of its own.
    pub fn with_query(log: &Logger, query: Arc<dyn TrustQuery>) -> Self {
        Self {
            query,
            store: None,
            log: log.new(slog::o!("service" => "trust")),
            death: DeathNotice::new(lwsys_messages::supervisor::ServiceKind::Trust),
        }
    }

    /// The store behind the default query, to build [`JitVerifier`]s.
    pub fn store(&self) -> Option<Arc<TrustStore>> {
        self.store.clone()
    }

    /// A rustls verifier over this service's store, if it has one.
    pub fn verifier(&self) -> Option<Arc<JitVerifier>> {
        self.store.clone().map(|s| Arc::new(JitVerifier::new(&self.log, s)))
    }
}

impl Actor for TrustService {
    type Context = Context<Self>;
}

impl Handler<QueryTrust> for TrustService {
    type Result = ResponseFuture<Result<TrustedCerts, TrustError>>;

    fn handle(&mut self, msg: QueryTrust, _ctx: &mut Self::Context) -> Self::Result {
        if msg.skid.is_empty() || msg.skid.len() > MAX_SKID_LEN {
            let e = TrustError::BadRequest(format!(
                "a SKID is 1 to {MAX_SKID_LEN} bytes, got {}",
                msg.skid.len()
            ));
            return Box::pin(futures::future::ready(Err(e)));
        }
        debug!(self.log, "trust query"; "skid" => %store::HexSkid(&msg.skid));
        self.query.query(&msg.skid)
    }
}

impl Handler<GetTrustInfo> for TrustService {
    type Result = MessageResult<GetTrustInfo>;

    fn handle(&mut self, _msg: GetTrustInfo, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.query.info())
    }
}

impl Handler<WatchDeath> for TrustService {
    type Result = ();

    fn handle(&mut self, msg: WatchDeath, _ctx: &mut Self::Context) {
        self.death.watch(msg.0);
    }
}

impl Handler<Stop> for TrustService {
    type Result = ();

    /// Its system is torn down: stop without asking for a restart.
    fn handle(&mut self, _msg: Stop, ctx: &mut Self::Context) {
        self.death.forget();
        ctx.stop();
    }
}

impl Handler<Crash> for TrustService {
    type Result = ();

    /// The fault hook: fail as a bug in a handler would.
    fn handle(&mut self, _msg: Crash, _ctx: &mut Self::Context) {
        panic!("fault injected into the TrustService (debug.crash)");
    }
}

/// The trust query platform op (upstream's `jit_trust_query`): every
/// trusted CA with a SKID, possibly answered later (a device may fetch it
/// from flash or a web root). The default is the [`TrustStore`] over the
/// configured backends; the `Builder` may install any implementation,
/// including a closure `Fn(&[u8]) -> TrustReply`.
pub trait TrustQuery: Send + Sync {
    /// Every certificate with this SKID, or [`TrustError::NotFound`].
    fn query(&self, skid: &[u8]) -> TrustReply;

    /// What backs this query, for `system.info`; nothing by default.
    fn info(&self) -> TrustInfo {
        TrustInfo::default()
    }
}

/// The answer of a [`TrustQuery`], which may come later.
pub type TrustReply = BoxFuture<'static, Result<TrustedCerts, TrustError>>;

impl TrustQuery for TrustStore {
    fn query(&self, skid: &[u8]) -> TrustReply {
        Box::pin(futures::future::ready(self.lookup(skid)))
    }

    fn info(&self) -> TrustInfo {
        TrustStore::info(self)
    }
}

impl<F> TrustQuery for F
where
    F: Fn(&[u8]) -> TrustReply + Send + Sync,
{
    fn query(&self, skid: &[u8]) -> TrustReply {
        self(skid)
    }
}
