//! The ops of the control protocol: parameters checked, typed messages
//! sent, replies shaped as DESIGN §5 says.

use std::time::Duration;

use actix::prelude::*;
use lwsys_messages::protocol::{PROTOCOL_VERSION, TOPICS};
use lwsys_messages::state::{SystemState, Verdict};
use lwsys_messages::supervisor::{
    Cycle, Pending, RegisterNotifier, Subscribe, WalkError, WalkReport, WalkResult,
};
use lwsys_messages::ErrorCode;
use serde_json::{json, Map, Value};

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
        m.insert("error".into(), json!({"code": self.code, "message": self.message}));
        for (k, v) in self.extra {
            m.entry(k).or_insert(v);
        }
        Value::Object(m)
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

/// An `unknown_op` error for `op`.
pub(crate) fn unknown(op: &str) -> ProtoError {
    ProtoError::new(ErrorCode::UnknownOp, format!("unknown op {op:?}"))
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

pub(crate) fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

pub(crate) fn bad(msg: impl Into<String>) -> ProtoError {
    ProtoError::new(ErrorCode::BadRequest, msg)
}

/// A required string parameter.
pub(crate) fn str_param<'a>(req: &'a Map<String, Value>, key: &str) -> Result<&'a str, ProtoError> {
    match req.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!("\"{key}\" must be a string"))),
        None => Err(bad(format!("missing \"{key}\""))),
    }
}

/// An optional unsigned integer parameter.
pub(crate) fn opt_u64(req: &Map<String, Value>, key: &str) -> Result<Option<u64>, ProtoError> {
    match req.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(format!("\"{key}\" must be a non-negative integer"))),
    }
}

/// A required state parameter, by name.
pub(crate) fn state_param(req: &Map<String, Value>, key: &str) -> Result<SystemState, ProtoError> {
    str_param(req, key)?
        .parse()
        .map_err(|e: lwsys_messages::state::UnknownState| bad(e.to_string()))
}

fn pending_json(p: &Option<Pending>) -> Value {
    match p {
        Some(p) => {
            json!({"by": p.by, "reason": p.reason, "target": p.target, "since_us": p.since_us})
        }
        None => Value::Null,
    }
}

pub(crate) fn walk_reply(res: Result<WalkResult, Error>) -> OpResult {
    let r: WalkReport = res.map_err(ProtoError::from)?.map_err(ProtoError::from)?;
    Ok(fields(json!({"state": r.state, "reached": r.reached, "pending": pending_json(&r.pending)})))
}

pub(crate) fn later<F>(f: F) -> Dispatch
where
    F: std::future::Future<Output = OpResult> + 'static,
{
    Dispatch::Later(Box::pin(actix::fut::wrap_future(f)))
}

impl ControlSession {
    /// Run `op` with its parameters.
    pub(super) fn dispatch(
        &mut self,
        op: &str,
        req: Map<String, Value>,
        ctx: &mut Context<Self>,
    ) -> Dispatch {
        match self.dispatch_inner(op, &req, ctx) {
            Ok(d) => d,
            Err(e) => Dispatch::Now(Err(e)),
        }
    }

    /// Whether the peer is an admin: it may change things and read
    /// secrets (see `control::access`).
    pub(crate) fn peer_is_owner(&self) -> bool {
        self.role == super::Role::Admin
    }

    fn dispatch_inner(
        &mut self,
        op: &str,
        req: &Map<String, Value>,
        ctx: &mut Context<Self>,
    ) -> Result<Dispatch, ProtoError> {
        if super::needs_admin(op) && !self.peer_is_owner() {
            return Err(ProtoError::new(
                ErrorCode::Forbidden,
                format!("{op} needs an admin; uid {} may only read", self.peer.uid),
            ));
        }
        // The cheapest and most frequent reads are answered here, before
        // the handle is cloned for the ops that need it in a future.
        match op {
            "hello" => {
                let s = self.env.sys.state_now();
                return Ok(Dispatch::Now(Ok(fields(json!({
                    "version": env!("CARGO_PKG_VERSION"),
                    "protocol": PROTOCOL_VERSION,
                    "state": s.state,
                })))));
            }
            "state.get" => {
                let s = self.env.sys.state_now();
                let reply = json!({"state": s.state, "since_us": s.since_us});
                return Ok(Dispatch::Now(Ok(fields(reply))));
            }
            _ => {}
        }
        let sys = self.env.sys.clone();
        Ok(match op {
            "state.steps" => {
                let target = state_param(req, "target")?;
                later(async move { walk_reply(sys.steps(target).await) })
            }
            "state.jump" => {
                let target = state_param(req, "target")?;
                later(async move { walk_reply(sys.jump(target).await) })
            }
            "state.policy_invalidate" => {
                later(async move { walk_reply(sys.cycle(Cycle::PolicyInvalidate).await) })
            }
            "state.enter_modal" => {
                later(async move { walk_reply(sys.cycle(Cycle::EnterModal).await) })
            }
            "state.leave_modal" => {
                later(async move { walk_reply(sys.cycle(Cycle::LeaveModal).await) })
            }
            "state.wait" => {
                let state = state_param(req, "state")?;
                let timeout = opt_u64(req, "timeout_ms")?.map(Duration::from_millis);
                later(async move {
                    let s = sys.wait_for(state, timeout).await?;
                    Ok(fields(json!({"state": s})))
                })
            }
            "state.explain" => later(async move {
                let e = sys.explain().await?;
                Ok(fields(json!({
                    "state": e.state,
                    "since_us": e.since_us,
                    "pending": pending_json(&e.pending),
                    "parked": e.parked,
                    "journal": e.journal,
                })))
            }),
            "notifier.register" => return self.op_register(req, ctx),
            "notifier.resume" => {
                let name = str_param(req, "name")?.to_owned();
                later(async move {
                    let resumed = sys.resume(&name).await?;
                    Ok(fields(json!({"resumed": resumed})))
                })
            }
            "notifier.unregister" => {
                let name = str_param(req, "name")?.to_owned();
                if self.notifier.as_deref() == Some(name.as_str()) {
                    self.notifier = None;
                }
                later(async move {
                    sys.unregister(&name).await?;
                    Ok(Map::new())
                })
            }
            "consent.reply" => Dispatch::Now(self.op_consent_reply(req)),
            "subscribe" => Dispatch::Now(self.op_subscribe(req, ctx)),
            "system.info" => {
                let counts = self.env.counts.clone();
                later(async move {
                    let s = sys.state().await?;
                    let waiters = sys.waiters().await?;
                    let subscribers = sys.subscribers().await?;
                    let notifiers = sys.notifiers().await?;
                    let attach = sys.attach_stats().await?;
                    let trust = super::ops_trust::trust_info(&sys).await?;
                    let ops = sys.ops();
                    Ok(fields(json!({
                        "attach": attach,
                        "version": env!("CARGO_PKG_VERSION"),
                        "protocol": PROTOCOL_VERSION,
                        "state": s.state,
                        "pid": std::process::id(),
                        "notifiers": notifiers,
                        "trust": trust,
                        "ops": ops.present(),
                        "wake_latency_us": ops.wake_latency_us(),
                        "uptime_s": ops.uptime().as_secs(),
                        "waiters": waiters,
                        "clients": {
                            "connected": counts.clients(),
                            "attach_pending": counts.attaches(),
                        "subscribers": subscribers,
                        },
                    })))
                })
            }
            "system.shutdown" => later(async move { walk_reply(sys.shutdown().await) }),
            op if op.starts_with("blob.") => return self.dispatch_blob(op, req),
            op if op.starts_with("clock.") => return self.dispatch_clock(op, req),
            op if op.starts_with("trust.") => return self.dispatch_trust(op, req),
            op if op.starts_with("ota.") => return self.dispatch_ota(op, req),
            "attach" => return self.dispatch_attach(req, ctx),
            "system.reboot" => return self.dispatch_reboot(req),
            "debug.crash" if fault_injection() => return self.dispatch_crash(req),
            other => {
                return Err(ProtoError::new(ErrorCode::UnknownOp, format!("unknown op {other:?}")))
            }
        })
    }

    fn op_register(
        &mut self,
        req: &Map<String, Value>,
        ctx: &mut Context<Self>,
    ) -> Result<Dispatch, ProtoError> {
        let name = str_param(req, "name")?.to_owned();
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
            Ok(Ok(id)) => {
                act.notifier = Some(name.clone());
                Ok(fields(json!({"name": name, "notifier_id": id})))
            }
            Ok(Err(e)) => Err(ProtoError::new(e.code(), e.to_string())),
            Err(e) => Err(ProtoError::new(ErrorCode::Internal, e.to_string())),
        }))))
    }

    fn op_consent_reply(&mut self, req: &Map<String, Value>) -> OpResult {
        let ticket = opt_u64(req, "ticket")?.ok_or_else(|| bad("missing \"ticket\""))?;
        let reason = match req.get("reason") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) if lwsys_messages::supervisor::is_valid_reason(s) => s.clone(),
            Some(Value::String(_)) => {
                return Err(bad(format!(
                    "\"reason\" must be at most {} bytes without control characters",
                    lwsys_messages::supervisor::MAX_REASON
                )))
            }
            Some(_) => return Err(bad("\"reason\" must be a string")),
        };
        let verdict = match str_param(req, "verdict")? {
            "allow" => Verdict::Allow,
            "defer" => Verdict::Defer { reason },
            "deny" => Verdict::Deny { reason },
            other => {
                let other = lwsys_messages::supervisor::preview(other);
                return Err(bad(format!("verdict {other:?} is not allow, defer or deny")));
            }
        };
        let tx = self.tickets.remove(&ticket).ok_or_else(|| {
            ProtoError::new(ErrorCode::NotFound, format!("ticket {ticket} is unknown or stale"))
        })?;
        // The supervisor may have given up between our check and now; the
        // reply was still well-formed, so it is accepted either way.
        let _ = tx.send(verdict);
        Ok(Map::new())
    }

    fn op_subscribe(&mut self, req: &Map<String, Value>, ctx: &mut Context<Self>) -> OpResult {
        let Some(Value::Array(list)) = req.get("events") else {
            return Err(bad("\"events\" must be an array of topic names"));
        };
        let mut topics = Vec::with_capacity(list.len());
        for t in list {
            match t.as_str() {
                Some(t) if TOPICS.contains(&t) => topics.push(t.to_owned()),
                Some(t) => return Err(bad(format!("unknown topic {t:?}; topics are {TOPICS:?}"))),
                None => return Err(bad("topics must be strings")),
            }
        }
        self.topics.extend(topics);
        if !self.subscribed {
            self.subscribed = true;
            self.env.sys.inner.supervisor.do_send(Subscribe(ctx.address().recipient()));
        }
        let mut all: Vec<&String> = self.topics.iter().collect();
        all.sort();
        Ok(fields(json!({"events": all})))
    }
}
