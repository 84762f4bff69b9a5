//! The ops of the control protocol: a decoded [`Request`] checked against
//! the client's role, dispatched to the system, its reply made from the
//! protocol's typed reply (DESIGN §5).

use std::time::Duration;

use actix::prelude::*;
use lwsys_messages::protocol::Subscribe;
use lwsys_messages::protocol::{
    Done, ErrorBody, Hello, Op, Registered, Request, RequestError, Resumed, Subscribed, SystemInfo,
    WaitReply, PROTOCOL_VERSION,
};
use lwsys_messages::state::Verdict;
use lwsys_messages::supervisor::{Cycle, RegisterNotifier, WalkError, WalkResult};
use lwsys_messages::ErrorCode;
use serde::Serialize;
use serde_json::{Map, Value};

use super::ControlSession;
use crate::handle::Error;

/// An error reply: a code, a message, and any fields that sit beside
/// `error` at the top level (such as `by` and `state` for `denied`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProtoError {
    code: ErrorCode,
    message: String,
    extra: Map<String, Value>,
}

impl ProtoError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), extra: Map::new() }
    }

    /// Its protocol error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// Add a top-level field.
    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> Self {
        self.extra.insert(key.to_owned(), serde_json::to_value(value).unwrap_or(Value::Null));
        self
    }

    /// The reply object.
    pub fn into_reply(self, id: Value) -> Value {
        let mut m = Map::with_capacity(self.extra.len() + 3);
        m.insert("id".into(), id);
        m.insert("ok".into(), Value::Bool(false));
        let body = ErrorBody { code: self.code, message: self.message };
        m.insert("error".into(), serde_json::to_value(body).unwrap_or(Value::Null));
        for (k, v) in self.extra {
            m.entry(k).or_insert(v);
        }
        Value::Object(m)
    }
}

impl From<RequestError> for ProtoError {
    fn from(e: RequestError) -> Self {
        ProtoError::new(e.code, e.message)
    }
}

/// A failed send to a service goes through the handle's one mapping, so
/// every op reports a stopped service alike (`internal`).
impl From<actix::MailboxError> for ProtoError {
    fn from(e: actix::MailboxError) -> Self {
        Error::from(e).into()
    }
}

impl From<Error> for ProtoError {
    fn from(e: Error) -> Self {
        match e {
            Error::Walk(w) => w.into(),
            Error::WaitTimedOut(t) => {
                ProtoError::new(ErrorCode::Timeout, t.to_string()).with("state", t.current)
            }
            other => ProtoError::new(other.code(), other.to_string()),
        }
    }
}

impl From<WalkError> for ProtoError {
    fn from(e: WalkError) -> Self {
        let code = e.code();
        let msg = e.to_string();
        match e {
            WalkError::Denied { by, state, target, reason } => ProtoError::new(code, msg)
                .with("by", by)
                .with("state", state)
                .with("target", target)
                .with("reason", reason),
            _ => ProtoError::new(code, msg),
        }
    }
}

/// Whether the `debug.crash` fault hook is on: only when the daemon runs
/// with `LWSYS_FAULT_INJECTION=1` (tests of supervision); otherwise the op
/// does not exist.
fn fault_injection() -> bool {
    std::env::var_os("LWSYS_FAULT_INJECTION").is_some_and(|v| v == "1")
}

/// The fields of a successful reply.
pub type OpResult = Result<Map<String, Value>, ProtoError>;

/// How an op answers: at once, or when a future settles on the session.
pub enum Dispatch {
    /// Answered now.
    Now(OpResult),
    /// Answered later.
    Later(ResponseActFuture<ControlSession, OpResult>),
}

/// The reply fields of a typed reply. Every reply type is a struct of
/// plain data, so it always serializes; should one not, the client gets
/// `internal` rather than nothing.
pub(crate) fn reply<T: Serialize>(r: &T) -> OpResult {
    match serde_json::to_value(r) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ProtoError::new(ErrorCode::Internal, "a reply is not an object")),
        Err(e) => {
            Err(ProtoError::new(ErrorCode::Internal, format!("a reply would not serialize: {e}")))
        }
    }
}

pub(crate) fn bad(msg: impl Into<String>) -> ProtoError {
    ProtoError::new(ErrorCode::BadRequest, msg)
}

pub(crate) fn walk_reply(res: Result<WalkResult, Error>) -> OpResult {
    let r = res.map_err(ProtoError::from)?.map_err(ProtoError::from)?;
    reply(&r)
}

pub(crate) fn later<F>(f: F) -> Dispatch
where
    F: std::future::Future<Output = OpResult> + 'static,
{
    Dispatch::Later(Box::pin(actix::fut::wrap_future(f)))
}

impl ControlSession {
    /// Run `req`.
    pub(super) fn dispatch(&mut self, req: Request, ctx: &mut Context<Self>) -> Dispatch {
        match self.dispatch_inner(req, ctx) {
            Ok(d) => d,
            Err(e) => Dispatch::Now(Err(e)),
        }
    }

    /// Whether the peer is an admin: it may change things and read
    /// secrets (see `control::access`).
    pub(crate) fn peer_is_owner(&self) -> bool {
        self.role == super::Role::Admin
    }

    /// Whether this client may run `op` at all: a hidden op does not exist
    /// unless fault injection is on, and a changing op needs an admin. Run
    /// before the op's parameters are looked at, so a client learns
    /// nothing about an op it may not use.
    pub(super) fn check_op(&self, op: Op) -> Result<(), ProtoError> {
        if op.is_hidden() && !fault_injection() {
            return Err(RequestError::unknown_op(op.name()).into());
        }
        if super::needs_admin(op) && !self.peer_is_owner() {
            return Err(ProtoError::new(
                ErrorCode::Forbidden,
                format!("{} needs an admin; uid {} may only read", op.name(), self.peer.uid),
            ));
        }
        Ok(())
    }

    fn dispatch_inner(
        &mut self,
        req: Request,
        ctx: &mut Context<Self>,
    ) -> Result<Dispatch, ProtoError> {
        self.check_op(req.op())?;
        let sys = self.env.sys.clone();
        Ok(match req {
            Request::Hello {} => {
                let hello = Hello {
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    protocol: PROTOCOL_VERSION,
                    state: sys.state_now().state,
                };
                Dispatch::Now(reply(&hello))
            }
            Request::StateGet {} => Dispatch::Now(reply(&sys.state_now())),
            Request::StateSteps { target } => {
                later(async move { walk_reply(sys.steps(target).await) })
            }
            Request::StateJump { target } => {
                later(async move { walk_reply(sys.jump(target).await) })
            }
            Request::StatePolicyInvalidate {} => {
                later(async move { walk_reply(sys.cycle(Cycle::PolicyInvalidate).await) })
            }
            Request::StateEnterModal {} => {
                later(async move { walk_reply(sys.cycle(Cycle::EnterModal).await) })
            }
            Request::StateLeaveModal {} => {
                later(async move { walk_reply(sys.cycle(Cycle::LeaveModal).await) })
            }
            Request::StateWait { state, timeout_ms } => {
                let timeout = timeout_ms.map(Duration::from_millis);
                later(async move {
                    let state = sys.wait_for(state, timeout).await?;
                    reply(&WaitReply { state })
                })
            }
            Request::StateExplain {} => later(async move { reply(&sys.explain().await?) }),
            Request::NotifierRegister { name } => return self.op_register(name, ctx),
            Request::NotifierResume { name } => later(async move {
                let resumed = sys.resume(&name).await?;
                reply(&Resumed { resumed })
            }),
            Request::NotifierUnregister { name } => {
                if self.notifier.as_deref() == Some(name.as_str()) {
                    self.notifier = None;
                }
                later(async move {
                    sys.unregister(&name).await?;
                    reply(&Done {})
                })
            }
            Request::ConsentReply { ticket, verdict } => {
                Dispatch::Now(self.op_consent_reply(ticket, verdict))
            }
            Request::Subscribe { events } => Dispatch::Now(self.op_subscribe(events, ctx)),
            Request::SystemInfo {} => {
                let counts = self.env.counts.clone();
                later(async move {
                    let s = sys.state().await?;
                    let waiters = sys.waiters().await?;
                    let subscribers = sys.subscribers().await?;
                    let notifiers = sys.notifiers().await?;
                    let attach = sys.attach_stats().await?;
                    let trust = super::ops_trust::trust_info(&sys).await?;
                    let ops = sys.ops();
                    reply(&SystemInfo {
                        attach,
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        protocol: PROTOCOL_VERSION,
                        state: s.state,
                        pid: std::process::id(),
                        notifiers,
                        trust,
                        ops: ops.present().into_iter().map(str::to_owned).collect(),
                        wake_latency_us: ops.wake_latency_us(),
                        uptime_s: ops.uptime().as_secs(),
                        waiters,
                        clients: lwsys_messages::protocol::ClientCounts {
                            connected: counts.clients(),
                            attach_pending: counts.attaches(),
                            subscribers,
                        },
                    })
                })
            }
            Request::SystemShutdown {} => later(async move { walk_reply(sys.shutdown().await) }),
            req @ (Request::BlobSet { .. }
            | Request::BlobAppend { .. }
            | Request::BlobEmpty { .. }
            | Request::BlobGet { .. }
            | Request::BlobSize { .. }
            | Request::BlobDestroy { .. }) => return self.dispatch_blob(req),
            Request::ClockGet {} => return self.op_clock_get(),
            Request::ClockSet { unix_us } => return self.op_clock_set(unix_us),
            Request::TrustQuery { skid } => return self.op_trust_query(&skid),
            Request::OtaStatus {} => return self.op_ota_status(),
            Request::OtaCheck {} => return self.op_ota_check(),
            Request::OtaReportCurrent { bad } => return self.op_ota_report_current(bad),
            Request::Attach { state, request } => return self.dispatch_attach(state, *request),
            Request::SystemReboot {} => return self.dispatch_reboot(),
            Request::DebugCrash { service } => return self.dispatch_crash(service),
        })
    }

    fn op_register(
        &mut self,
        name: String,
        ctx: &mut Context<Self>,
    ) -> Result<Dispatch, ProtoError> {
        if let Some(have) = &self.notifier {
            return Err(bad(format!("this connection is already the notifier {have:?}")));
        }
        let me = ctx.address();
        let msg = RegisterNotifier {
            name: name.clone(),
            consent: me.clone().recipient(),
            changed: me.clone().recipient(),
            aborted: me.recipient(),
            kind: lwsys_messages::supervisor::NotifierKind::Connection,
        };
        let fut = self.env.sys.inner.supervisor.send(msg);
        Ok(Dispatch::Later(Box::pin(fut.into_actor(self).map(move |res, act, _ctx| match res {
            Ok(Ok(notifier_id)) => {
                act.notifier = Some(name.clone());
                reply(&Registered { name, notifier_id })
            }
            Ok(Err(e)) => Err(ProtoError::new(e.code(), e.to_string())),
            Err(e) => Err(ProtoError::new(ErrorCode::Internal, e.to_string())),
        }))))
    }

    fn op_consent_reply(&mut self, ticket: u64, verdict: Verdict) -> OpResult {
        let tx = self.tickets.remove(&ticket).ok_or_else(|| {
            ProtoError::new(ErrorCode::NotFound, format!("ticket {ticket} is unknown or stale"))
        })?;
        // The supervisor may have given up between our check and now; the
        // reply was still well-formed, so it is accepted either way.
        let _ = tx.send(verdict);
        reply(&Done {})
    }

    fn op_subscribe(
        &mut self,
        topics: Vec<lwsys_messages::protocol::Topic>,
        ctx: &mut Context<Self>,
    ) -> OpResult {
        self.topics.extend(topics);
        if !self.subscribed {
            self.subscribed = true;
            self.env.sys.inner.supervisor.do_send(Subscribe(ctx.address().recipient()));
        }
        let mut events: Vec<_> = self.topics.iter().copied().collect();
        events.sort_by_key(|t| t.as_str());
        reply(&Subscribed { events })
    }
}
