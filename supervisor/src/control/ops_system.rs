//! The `attach` and `system.reboot` ops of the control protocol.
//!
//! `system.reboot` (owner only) answers `ok` at once, before anything goes
//! down, then runs `SystemHandle::reboot` as a task of its own (so a client
//! that hangs up cannot cancel it halfway): CONTEXT_DESTROYING, store
//! flush, the reboot op. If that fails and the client is still connected it
//! is sent `{"event": "reboot_failed", "error": {"code", "message"}}`; the
//! daemon then comes back up (see `daemon`).

use actix::prelude::*;
use lwsys_messages::protocol::{Crashed, ErrorBody, Event, Rebooting, Request};
use lwsys_messages::state::SystemState;
use lwsys_messages::ErrorCode;
use slog::{info, warn};

use tokio::sync::oneshot;

use super::ops::{bad, reply, Dispatch, OpResult, ProtoError};
use super::ControlSession;

impl ControlSession {
    /// Run `attach {state, request}`: the nested request goes through the
    /// attach queue like any foreign-thread callback and runs once the
    /// state is at or past `state`; its reply carries the outer id.
    pub(super) fn dispatch_attach(
        &mut self,
        state: SystemState,
        nested: Request,
    ) -> Result<Dispatch, ProtoError> {
        let large = super::large_reply(nested.op());
        let limits = self.env.limits;
        if self.attach_live >= limits.attach_per_client {
            return Err(ProtoError::new(
                ErrorCode::Busy,
                format!("this connection's attach quota ({}) is full", limits.attach_per_client),
            ));
        }
        let uid = self.peer.uid;
        let Some(slot) = self.env.counts.take_attach(uid, limits.attach_per_uid) else {
            return Err(ProtoError::new(
                ErrorCode::Busy,
                format!("uid {uid}'s attach quota ({}) is full", limits.attach_per_uid),
            ));
        };
        let (tx, rx) = oneshot::channel::<()>();
        let ticket = self
            .env
            .sys
            .attach(state, move |_ctx| {
                let _ = tx.send(());
            })
            .map_err(|e| ProtoError::new(e.code(), e.to_string()))?;
        self.next_attach += 1;
        let key = self.next_attach;
        self.attaches.insert(key, ticket);
        self.attach_live += 1;
        let fut = actix::fut::wrap_future::<_, Self>(rx).then(move |ran, act, ctx| {
            // Run (or dropped): nothing left to cancel.
            act.attaches.remove(&key);
            let res: ResponseActFuture<Self, OpResult> = match ran {
                Err(_) => Box::pin(actix::fut::ready(Err(ProtoError::new(
                    ErrorCode::Internal,
                    "the attach was dropped (shutting down)",
                )))),
                // A large reply waits for one of the connection's
                // large-reply permits, as on the top level: attach items
                // that all become ready at once cannot make 64 of them.
                Ok(()) if large => {
                    let gate = act.gate.clone();
                    Box::pin(actix::fut::wrap_future::<_, Self>(gate.acquire_owned()).then(
                        move |permit, act, ctx| {
                            let fut: ResponseActFuture<Self, OpResult> =
                                match act.dispatch(nested, ctx) {
                                    Dispatch::Now(r) => Box::pin(actix::fut::ready(r)),
                                    Dispatch::Later(f) => f,
                                };
                            fut.map(move |r, _, _| {
                                drop(permit);
                                r
                            })
                        },
                    ))
                }
                Ok(()) => match act.dispatch(nested, ctx) {
                    Dispatch::Now(r) => Box::pin(actix::fut::ready(r)),
                    Dispatch::Later(f) => f,
                },
            };
            res
        });
        // The quota is held until the nested request is answered too; if
        // the session stops first, the future and the slot are dropped.
        let fut = fut.map(move |res, act, _ctx| {
            act.attach_live -= 1;
            drop(slot);
            res
        });
        Ok(Dispatch::Later(Box::pin(fut)))
    }

    /// Run `system.reboot`: see the module docs.
    pub(super) fn dispatch_reboot(&mut self) -> Result<Dispatch, ProtoError> {
        if !self.peer_is_owner() {
            return Err(ProtoError::new(
                ErrorCode::Forbidden,
                "only the daemon's own user may reboot it",
            ));
        }
        let sys = self.env.sys.clone();
        if let Err(e) = sys.ops().system() {
            return Err(ProtoError::new(e.code(), e.to_string()));
        }
        if sys.ops().reboot_status() == lwsys_actors::platform::RebootStatus::Pending {
            return Err(ProtoError::new(ErrorCode::Busy, "a reboot is already in progress"));
        }
        info!(self.log, "reboot requested");
        // The reply is queued by the caller right after this map runs, and
        // so before the spawned reboot has sent its first message.
        let fut = actix::fut::ready(()).map(move |(), _act: &mut Self, ctx: &mut Context<Self>| {
            let task = actix::spawn(async move { sys.reboot().await });
            ctx.spawn(actix::fut::wrap_future(task).map(|res, act: &mut Self, ctx| {
                let (code, message) = match res {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => (e.code(), e.to_string()),
                    Err(e) => (ErrorCode::Internal, format!("reboot task failed: {e}")),
                };
                warn!(act.log, "reboot failed"; "error" => %message);
                let ev = Event::RebootFailed { error: ErrorBody { code, message } };
                act.send_line(&ev, ctx);
            }));
            reply(&Rebooting { rebooting: true })
        });
        Ok(Dispatch::Later(Box::pin(fut)))
    }
}

impl ControlSession {
    /// `debug.crash {service}`: the fault hook (only with
    /// `LWSYS_FAULT_INJECTION=1`). The service panics in a handler; this
    /// request, in flight to it, is answered `internal`, and the supervisor
    /// restarts the service.
    pub(super) fn dispatch_crash(&mut self, service: String) -> Result<Dispatch, ProtoError> {
        use lwsys_messages::lifecycle::Crash;
        let s = self
            .env
            .sys
            .services()
            .ok_or_else(|| ProtoError::new(ErrorCode::Internal, "no services"))?;
        let sent = match service.as_str() {
            "blobs" => futures::FutureExt::boxed_local(s.blobs.send(Crash)),
            "clock" => futures::FutureExt::boxed_local(s.clock.send(Crash)),
            "trust" => futures::FutureExt::boxed_local(s.trust.send(Crash)),
            "ota" => match &s.ota {
                Some(ota) => futures::FutureExt::boxed_local(ota.send(Crash)),
                None => return Err(bad("no service \"ota\": [ota] is not configured".to_owned())),
            },
            other => return Err(bad(format!("no service {other:?}: blobs, clock, trust or ota"))),
        };
        Ok(super::ops::later(async move {
            match sent.await {
                Ok(()) => reply(&Crashed { crashed: false }),
                Err(e) => Err(ProtoError::new(
                    ErrorCode::Internal,
                    format!("the {service} service died: {e}"),
                )),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use lwsys_actors::platform::{OpError, RebootStatus, SetOutcome, SystemOps};
    use lwsys_messages::state::{Aborted, Changed, Consent, SystemState, Verdict};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use super::super::{ControlSession, Peer, SessionEnv};
    use crate::builder::{Builder, NotifierSpec};
    use crate::handle::{Error, SystemHandle};
    use crate::InlineNotifier;

    type Journal = Arc<Mutex<Vec<String>>>;

    /// Reboot ops that write down the state the system is in when called.
    struct Recording {
        journal: Journal,
        fail: bool,
    }

    impl SystemOps for Recording {
        fn reboot(&self) -> Result<(), OpError> {
            self.journal.lock().unwrap().push("op reboot".into());
            if self.fail {
                return Err(OpError::Failed { op: "reboot", message: "no watchdog".into() });
            }
            Ok(())
        }

        fn set_clock(&self, _unix_us: u64) -> Result<SetOutcome, OpError> {
            Err(OpError::NotProvided("set_clock"))
        }

        fn wake_latency_us(&self) -> u64 {
            0
        }
    }

    /// An actor notifier that records the consents it is asked for.
    struct ActorWatch(Journal);

    impl actix::Actor for ActorWatch {
        type Context = actix::Context<Self>;
    }

    impl actix::Handler<Consent> for ActorWatch {
        type Result = Verdict;
        fn handle(&mut self, m: Consent, _: &mut Self::Context) -> Verdict {
            if m.target == SystemState::ContextDestroying {
                self.0.lock().unwrap().push(format!("actor consent {}", m.target));
            }
            Verdict::Allow
        }
    }

    impl actix::Handler<Changed> for ActorWatch {
        type Result = ();
        fn handle(&mut self, _: Changed, _: &mut Self::Context) {}
    }

    impl actix::Handler<Aborted> for ActorWatch {
        type Result = ();
        fn handle(&mut self, _: Aborted, _: &mut Self::Context) {}
    }

    /// An inline notifier, told of changes on the supervisor's thread.
    struct InlineWatch(Journal);

    impl InlineNotifier for InlineWatch {
        fn consent(&mut self, _: SystemState, _: SystemState) -> Verdict {
            Verdict::Allow
        }
        fn changed(&mut self, c: Changed) {
            if c.to == SystemState::ContextDestroying {
                self.0.lock().unwrap().push(format!("changed {} -> {}", c.from, c.to));
            }
        }
    }

    async fn system(journal: &Journal, fail: bool) -> SystemHandle {
        use actix::Actor as _;
        let watch = ActorWatch(journal.clone()).start();
        let ops = Arc::new(Recording { journal: journal.clone(), fail });
        let sys = Builder::new()
            .system_ops(ops)
            .notifiers([
                NotifierSpec::actor("actor", &watch),
                NotifierSpec::inline("inline", InlineWatch(journal.clone())),
            ])
            .start()
            .unwrap();
        sys.wait_for(SystemState::Operational, None).await.unwrap();
        sys
    }

    #[actix_rt::test]
    async fn reboot_passes_through_context_destroying_then_calls_the_custom_op() {
        let journal = Journal::default();
        let sys = system(&journal, false).await;
        assert_eq!(sys.ops().reboot_status(), RebootStatus::Idle);
        sys.reboot().await.unwrap();
        assert_eq!(
            *journal.lock().unwrap(),
            [
                "actor consent CONTEXT_DESTROYING",
                "changed OPERATIONAL -> CONTEXT_DESTROYING",
                "op reboot"
            ]
        );
        assert_eq!(sys.state().await.unwrap().state, SystemState::ContextDestroying);
        assert_eq!(sys.ops().reboot_status(), RebootStatus::Done);
    }

    #[actix_rt::test]
    async fn a_failing_reboot_op_is_an_error_value_and_recorded() {
        let journal = Journal::default();
        let sys = system(&journal, true).await;
        let e = sys.reboot().await.unwrap_err();
        assert!(matches!(&e, Error::Op(OpError::Failed { op: "reboot", .. })), "{e}");
        assert_eq!(e.code(), lwsys_messages::ErrorCode::Io);
        assert!(matches!(sys.ops().reboot_status(), RebootStatus::Failed(_)));
    }

    /// A session on an in-memory pipe for a peer with `uid`.
    fn session(sys: &SystemHandle, uid: u32) -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (r, w) = tokio::io::split(server);
        let env = SessionEnv {
            sys: sys.clone(),
            log: slog::Logger::root(slog::Discard, slog::o!()),
            access: Arc::new(crate::control::AccessPolicy::owner_only(1000)),
            consent_timeout: Duration::from_secs(5),
            limits: crate::control::Limits::default(),
            counts: Default::default(),
            unwritten: Arc::new(AtomicUsize::new(0)),
        };
        let peer = Peer { uid, gid: uid, pid: None };
        // A stranger would be refused at connect; here it reads only.
        let role = env.access.role(&peer).unwrap_or(crate::control::Role::ReadOnly);
        ControlSession::start(env, peer, role, BufReader::new(r), w, None);
        client
    }

    async fn call(
        client: tokio::io::DuplexStream,
        line: &str,
    ) -> (tokio::io::DuplexStream, serde_json::Value) {
        let (r, mut w) = tokio::io::split(client);
        w.write_all(line.as_bytes()).await.unwrap();
        let mut r = BufReader::new(r);
        let mut reply = String::new();
        r.read_line(&mut reply).await.unwrap();
        (r.into_inner().unsplit(w), serde_json::from_str(&reply).unwrap())
    }

    #[actix_rt::test]
    async fn system_reboot_is_for_the_owner_only_and_answers_before_going_down() {
        let journal = Journal::default();
        let sys = system(&journal, false).await;
        let stranger = session(&sys, 1001);
        let (_s, r) = call(stranger, "{\"id\":1,\"op\":\"system.reboot\"}\n").await;
        assert_eq!(r["error"]["code"], "forbidden", "{r}");
        assert_eq!(sys.state().await.unwrap().state, SystemState::Operational);

        let owner = session(&sys, 1000);
        let (_o, r) = call(owner, "{\"id\":2,\"op\":\"system.reboot\"}\n").await;
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["id"], 2);
        // Past this the reboot has begun (it is pending before it shuts down).
        sys.wait_for(SystemState::ContextDestroying, None).await.unwrap();
        assert_eq!(sys.ops().reboot_settled().await, RebootStatus::Done);
        assert_eq!(journal.lock().unwrap().last().map(String::as_str), Some("op reboot"));
    }

    #[actix_rt::test]
    async fn a_client_learns_nothing_of_an_op_it_may_not_run_from_its_parameters() {
        let journal = Journal::default();
        let sys = system(&journal, false).await;
        // A read-only client: a changing op with bad parameters is
        // refused for the role, not for the parameters.
        let reader = session(&sys, 1001);
        let (reader, r) =
            call(reader, "{\"id\":1,\"op\":\"state.jump\",\"target\":\"NOPE\"}\n").await;
        assert_eq!(r["error"]["code"], "forbidden", "{r}");
        assert_eq!(r["id"], 1);
        // Its reads with bad parameters are told what is wrong.
        let (_reader, r) = call(reader, "{\"id\":2,\"op\":\"state.wait\"}\n").await;
        assert_eq!(r["error"]["code"], "bad_request", "{r}");
        assert_eq!(r["error"]["message"], "missing \"state\"", "{r}");
        // The fault hook is off here (the tests of supervision turn it on
        // in a daemon of their own): it does not exist, whatever is sent.
        if std::env::var_os("LWSYS_FAULT_INJECTION").is_none() {
            for uid in [1000, 1001] {
                let (_c, r) = call(session(&sys, uid), "{\"id\":3,\"op\":\"debug.crash\"}\n").await;
                assert_eq!(r["error"]["code"], "unknown_op", "uid {uid}: {r}");
                assert_eq!(r["error"]["message"], "unknown op \"debug.crash\"", "{r}");
            }
        }
    }
}
