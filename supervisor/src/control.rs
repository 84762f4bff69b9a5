//! The control server: `ControlSession`, one actor per connection (socket
//! or stdio), turning JSON lines into typed messages and replies and events
//! back into JSON lines (DESIGN §5).
//!
//! A session reads one frame at a time, so a client cannot make it buffer
//! more than one line; it may have at most [`MAX_IN_FLIGHT`] requests
//! waiting for an answer (more are answered `busy`), and its outgoing queue
//! is bounded: a client that does not read is disconnected, with a log
//! line, rather than allowed to grow the daemon's memory or stall it.

mod access;
mod decode;
mod framing;
mod ops;
mod ops_blob;
mod ops_clock;
mod ops_ota;
mod ops_system;
mod ops_trust;
mod server;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use lwsys_messages::state::{Aborted, Changed, Consent, Verdict};
use lwsys_messages::supervisor::{SystemEvent, Unregister};
use lwsys_messages::ErrorCode;
use serde_json::{json, Map, Value};
use slog::{debug, info, warn, Logger};
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::handle::SystemHandle;
pub use access::{needs_admin, AccessPolicy, Role};
pub use decode::{decode_request, Request};
pub use framing::{Frame, LineReader};
pub use ops::ProtoError;
pub use server::{bind_socket, serve, BindError, ClientGuard, ServerHandle};

/// Requests a client may have waiting for an answer at once.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Its user id (SO_PEERCRED; the daemon's own for stdio).
    pub uid: u32,
    /// Its group id.
    pub gid: u32,
    /// Its process id, when known.
    pub pid: Option<i32>,
}

/// What every session shares with the server.
#[derive(Clone)]
pub struct SessionEnv {
    /// The system the session drives.
    pub sys: SystemHandle,
    /// The daemon's logger.
    pub log: Logger,
    /// Who may connect and what each may do.
    pub access: Arc<AccessPolicy>,
    /// The consent deadline, after which a ticket is stale.
    pub consent_timeout: Duration,
    /// Bound on a client's outgoing queue, in lines.
    pub queue: usize,
    /// Lines queued but not yet written, across all sessions (shutdown
    /// waits for this to drain so final replies reach their clients).
    pub unwritten: Arc<AtomicUsize>,
}

/// One connection. See the module docs.
pub struct ControlSession {
    env: SessionEnv,
    log: Logger,
    peer: Peer,
    role: Role,
    out: mpsc::Sender<Vec<u8>>,
    in_flight: usize,
    eof: bool,
    /// For stdio: EOF shuts the daemon down.
    shutdown_on_eof: bool,
    _guard: Option<ClientGuard>,
    notifier: Option<String>,
    tickets: HashMap<u64, oneshot::Sender<Verdict>>,
    next_ticket: u64,
    topics: HashSet<String>,
    subscribed: bool,
}

/// A frame read from the connection, delivered to the session.
#[derive(Message)]
#[rtype(result = "()")]
struct Incoming(std::io::Result<Frame>);

impl ControlSession {
    /// Start a session on `reader`/`writer` for `peer` acting as `role`;
    /// `guard` counts the client while the session lives; a session without
    /// one (stdio) shuts the daemon down at EOF.
    pub fn start<R, W>(
        env: SessionEnv,
        peer: Peer,
        role: Role,
        reader: R,
        writer: W,
        guard: Option<ClientGuard>,
    ) -> Addr<Self>
    where
        R: AsyncBufRead + Unpin + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(env.queue.max(1));
        let log =
            env.log.new(slog::o!("peer_uid" => peer.uid, "peer_pid" => peer.pid.unwrap_or(0)));
        tokio::spawn(write_lines(writer, rx, env.unwritten.clone()));
        ControlSession::create(move |ctx| {
            // One frame at a time: the next is read only after this one was
            // handled, which bounds what a client can make us buffer.
            let frames = futures::stream::unfold(Some(LineReader::new(reader)), |r| async move {
                let mut r = r?;
                let f = r.next_frame().await;
                let done = matches!(f, Ok(Frame::Eof) | Err(_));
                Some((Incoming(f), (!done).then_some(r)))
            });
            ctx.add_stream(frames);
            debug!(log, "client connected");
            ControlSession {
                env,
                log,
                peer,
                role,
                out: tx,
                in_flight: 0,
                eof: false,
                shutdown_on_eof: guard.is_none(),
                _guard: guard,
                notifier: None,
                tickets: HashMap::new(),
                next_ticket: 0,
                topics: HashSet::new(),
                subscribed: false,
            }
        })
    }

    /// Queue a JSON value as a line for the client.
    fn send_line(&mut self, v: &Value, ctx: &mut Context<Self>) {
        let mut line = Vec::with_capacity(128);
        match serde_json::to_writer(&mut line, v) {
            Ok(()) => self.queue_line(line, ctx),
            Err(e) => self.unserializable(&e, ctx),
        }
    }

    /// A value that would not serialize (which a `Value` cannot be, short
    /// of a bug): the client gets an `internal` error rather than nothing.
    fn unserializable(&mut self, e: &serde_json::Error, ctx: &mut Context<Self>) {
        warn!(self.log, "a reply would not serialize"; "error" => %e);
        let line = br#"{"id":null,"ok":false,"error":{"code":"internal","message":"a reply would not serialize"}}"#;
        self.queue_line(line.to_vec(), ctx);
    }

    /// Queue a serialized line (without its newline) for the client; a
    /// client too slow to take it is disconnected.
    fn queue_line(&mut self, mut line: Vec<u8>, ctx: &mut Context<Self>) {
        line.push(b'\n');
        self.env.unwritten.fetch_add(1, Ordering::SeqCst);
        if self.out.try_send(line).is_err() {
            self.env.unwritten.fetch_sub(1, Ordering::SeqCst);
            if ctx.state() == ActorState::Running {
                warn!(self.log, "client not reading its replies; disconnecting";
                      "queue" => self.env.queue, "notifier" => self.notifier.as_deref().unwrap_or(""));
                ctx.stop();
            }
        }
    }

    fn reply(&mut self, id: Value, res: ops::OpResult, ctx: &mut Context<Self>) {
        match res {
            // Written straight out rather than through a new map: this is
            // the hot path of every request.
            Ok(fields) => match ok_line(&id, &fields) {
                Ok(line) => self.queue_line(line, ctx),
                Err(e) => self.unserializable(&e, ctx),
            },
            Err(e) => self.send_line(&e.into_reply(id), ctx),
        }
    }

    fn handle_line(&mut self, line: &[u8], ctx: &mut Context<Self>) {
        let decode::Request { id, op, params: req } = match decode_request(line) {
            Ok(r) => r,
            Err((id, err)) => return self.reply(id, Err(err), ctx),
        };
        if self.in_flight >= MAX_IN_FLIGHT {
            let err = ops::ProtoError::new(ErrorCode::Busy, "too many requests in flight");
            return self.reply(id, Err(err), ctx);
        }
        match self.dispatch(&op, req, ctx) {
            ops::Dispatch::Now(res) => self.reply(id, res, ctx),
            ops::Dispatch::Later(fut) => {
                self.in_flight += 1;
                ctx.spawn(fut.map(move |res, act: &mut Self, ctx| {
                    act.in_flight -= 1;
                    act.reply(id, res, ctx);
                    act.stop_if_drained(ctx);
                }));
            }
        }
    }

    fn stop_if_drained(&mut self, ctx: &mut Context<Self>) {
        if self.eof && self.in_flight == 0 && !self.shutdown_on_eof {
            ctx.stop();
        }
    }

    /// Push an event the client subscribed to.
    fn push_event(&mut self, ev: &SystemEvent, ctx: &mut Context<Self>) {
        if self.topics.contains(ev.topic()) {
            let v = ev.to_json();
            self.send_line(&v, ctx);
        }
    }
}

impl Actor for ControlSession {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(name) = self.notifier.take() {
            // The supervisor also notices the closed mailbox; telling it
            // straight away lets a walk this notifier holds go on at once.
            self.env.sys.supervisor.do_send(Unregister { name });
        }
        debug!(self.log, "client disconnected");
    }
}

impl StreamHandler<Incoming> for ControlSession {
    fn handle(&mut self, item: Incoming, ctx: &mut Self::Context) {
        match item.0 {
            Ok(Frame::Line(line)) => self.handle_line(&line, ctx),
            Ok(Frame::TooLarge) => {
                let err = ops::ProtoError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "line longer than {} bytes; discarded",
                        lwsys_messages::protocol::MAX_LINE
                    ),
                );
                self.reply(Value::Null, Err(err), ctx);
            }
            Ok(Frame::Eof) => self.on_eof(ctx),
            Err(e) => {
                debug!(self.log, "read failed"; "error" => %e);
                self.on_eof(ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        self.on_eof(ctx);
    }
}

impl ControlSession {
    fn on_eof(&mut self, ctx: &mut Context<Self>) {
        if self.eof {
            return;
        }
        self.eof = true;
        if self.shutdown_on_eof {
            info!(self.log, "stdin closed; shutting down");
            let sys = self.env.sys.clone();
            actix::spawn(async move {
                let _ = sys.shutdown().await;
            });
        } else if self.notifier.is_some() {
            // A notifier that hung up cannot answer consent: unregister now.
            ctx.stop();
        } else {
            self.stop_if_drained(ctx);
        }
    }
}

impl Handler<Consent> for ControlSession {
    type Result = ResponseFuture<Verdict>;

    fn handle(&mut self, msg: Consent, ctx: &mut Self::Context) -> Self::Result {
        // The supervisor runs one round at a time, so any older ticket is
        // stale from now on.
        self.tickets.clear();
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let (tx, rx) = oneshot::channel();
        self.tickets.insert(ticket, tx);
        let ev = json!({"event": "consent", "ticket": ticket, "current": msg.current, "target": msg.target});
        self.send_line(&ev, ctx);
        // Forget the ticket once the supervisor has stopped waiting, so a
        // late reply is answered as stale.
        ctx.run_later(self.env.consent_timeout, move |act, _| {
            act.tickets.remove(&ticket);
        });
        Box::pin(async move { rx.await.unwrap_or_else(|_| Verdict::defer("ticket expired")) })
    }
}

impl Handler<Changed> for ControlSession {
    type Result = ();

    fn handle(&mut self, msg: Changed, ctx: &mut Self::Context) {
        self.send_line(&json!({"event": "changed", "from": msg.from, "to": msg.to}), ctx);
    }
}

impl Handler<Aborted> for ControlSession {
    type Result = ();

    fn handle(&mut self, msg: Aborted, ctx: &mut Self::Context) {
        self.send_line(
            &json!({"event": "aborted", "current": msg.current, "target": msg.target}),
            ctx,
        );
    }
}

impl Handler<SystemEvent> for ControlSession {
    type Result = ();

    fn handle(&mut self, msg: SystemEvent, ctx: &mut Self::Context) {
        self.push_event(&msg, ctx);
    }
}

/// A success reply, `{"id":..,"ok":true,..fields}`, without its newline.
/// `id` and `ok` are the protocol's: an op's fields cannot replace them.
fn ok_line(id: &Value, fields: &Map<String, Value>) -> serde_json::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(128);
    line.extend_from_slice(b"{\"id\":");
    serde_json::to_writer(&mut line, id)?;
    line.extend_from_slice(b",\"ok\":true");
    for (k, v) in fields.iter().filter(|(k, _)| *k != "id" && *k != "ok") {
        line.push(b',');
        serde_json::to_writer(&mut line, k)?;
        line.push(b':');
        serde_json::to_writer(&mut line, v)?;
    }
    line.push(b'}');
    Ok(line)
}

/// The writer half: lines out in order, flushed when the queue is empty.
async fn write_lines<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    unwritten: Arc<AtomicUsize>,
) {
    let mut w = tokio::io::BufWriter::new(w);
    while let Some(line) = rx.recv().await {
        let res = w.write_all(&line).await;
        let res = match res {
            Ok(()) if rx.is_empty() => w.flush().await,
            other => other,
        };
        unwritten.fetch_sub(1, Ordering::SeqCst);
        if res.is_err() {
            break;
        }
    }
    // Whatever is left will never be written.
    rx.close();
    while rx.recv().await.is_some() {
        unwritten.fetch_sub(1, Ordering::SeqCst);
    }
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a reply that does not serialize should fail loudly

    use serde_json::{json, Value};

    #[test]
    fn ok_lines_put_id_and_ok_first_and_fields_cannot_replace_them() {
        let fields = super::ops::fields(json!({"ok": false, "id": 9, "state": "OPERATIONAL"}));
        let line = super::ok_line(&json!(7), &fields).unwrap();
        let text = String::from_utf8(line).unwrap();
        assert!(text.starts_with(r#"{"id":7,"ok":true,"#), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v, json!({"id": 7, "ok": true, "state": "OPERATIONAL"}));
    }

    #[test]
    fn ok_lines_escape_what_they_carry() {
        let fields = super::ops::fields(json!({"name": "a\"b\n"}));
        let line = super::ok_line(&json!("x\"y"), &fields).unwrap();
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v, json!({"id": "x\"y", "ok": true, "name": "a\"b\n"}));
    }
}
