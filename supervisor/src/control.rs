//! The control server: `ControlSession`, one actor per connection (socket
//! or stdio), turning JSON lines into typed messages and replies and events
//! back into JSON lines (DESIGN §5).
//!
//! A session reads one frame at a time, so a client cannot make it buffer
//! more than one line; it may have at most [`MAX_IN_FLIGHT`] requests
//! waiting for an answer (more are answered `busy`), and its outgoing queue
//! is bounded in bytes: a client that does not read is disconnected, with a
//! log line, rather than allowed to grow the daemon's memory or stall it.
//!
//! Everything a socket client holds goes when it does: at EOF or a read
//! error the session stops at once, which drops its pending requests
//! (`state.wait` waiters go with their receivers), cancels its queued
//! `attach` items, drops its consent tickets (the round reads them as
//! deferred) and unregisters its notifier. Replies already queued get at
//! most [`LINGER`] to be written; then the file descriptor and the client
//! slot (held by the writer, so lingering connections count against
//! `max_clients`) are freed. A
//! connection that holds nothing and sends nothing for the idle timeout is
//! closed; `attach` items are limited per connection and per uid
//! ([`Limits`]).

mod access;
mod events;
mod framing;
mod limits;
mod ops;
mod ops_blob;
mod ops_clock;
mod ops_ota;
mod ops_system;
mod ops_trust;
mod server;
pub mod settings;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use lwsys_messages::protocol::{Envelope, Op, Topic};
use lwsys_messages::state::Verdict;
use lwsys_messages::supervisor::Unregister;
use lwsys_messages::ErrorCode;
use serde::Serialize;
use serde_json::{Map, Value};
use slog::{debug, info, warn, Logger};
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::handle::SystemHandle;
pub use access::{needs_admin, AccessPolicy, Role};
pub use framing::{Frame, LineReader};
pub use limits::{Counts, Limits};
use lwsys_actors::attach::AttachTicket;
pub use lwsys_messages::protocol::{decode_request, Request};
pub use ops::ProtoError;
pub use server::{bind_socket, serve, BindError, ClientGuard, ServerHandle};
use writer::{write_lines, Writer};

/// Requests a client may have waiting for an answer at once.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Requests with possibly large replies (`blob.get`, `state.explain`) a
/// client may have being made at once; while it has this many, its next
/// line is not read. Bounds the memory of replies made but not yet queued.
pub const MAX_LARGE_IN_FLIGHT: usize = 4;

/// Whether `op`'s reply may be large: it then holds a large-reply permit
/// while it is made.
fn large_reply(op: Op) -> bool {
    matches!(op, Op::BlobGet | Op::StateExplain)
}

/// How long replies already queued for a client that hung up may take to
/// be written before its socket is closed regardless.
pub const LINGER: Duration = Duration::from_secs(5);

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
    /// What one client or uid may hold.
    pub limits: Limits,
    /// Counts shared by all sessions.
    pub counts: Arc<Counts>,
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
    out: mpsc::UnboundedSender<Vec<u8>>,
    /// Permits for large replies being made (see [`MAX_LARGE_IN_FLIGHT`]).
    gate: Arc<Semaphore>,
    /// Bytes queued for the writer and not yet written.
    queued: Arc<AtomicUsize>,
    /// What this client shares with its uid's other connections, for a
    /// read-only client (admins are not bounded per uid).
    uid_share: Option<Arc<limits::UidShare>>,
    /// Tells the writer to drop what is queued and close now.
    abort: Option<oneshot::Sender<()>>,
    in_flight: usize,
    eof: bool,
    /// When the last line came in (or the connection was made).
    last_line: Instant,
    /// Queued `attach` items not yet run, by a per-session key; cancelled
    /// when the session stops.
    attaches: HashMap<u64, AttachTicket>,
    /// `attach` requests not yet answered (queued or running their nested
    /// request).
    attach_live: usize,
    next_attach: u64,
    /// For stdio: EOF shuts the daemon down.
    shutdown_on_eof: bool,
    notifier: Option<String>,
    tickets: HashMap<u64, oneshot::Sender<Verdict>>,
    next_ticket: u64,
    topics: HashSet<Topic>,
    subscribed: bool,
}

/// A frame read from the connection, delivered to the session.
#[derive(Message)]
#[rtype(result = "()")]
struct Incoming(std::io::Result<Frame>, Option<OwnedSemaphorePermit>);

impl ControlSession {
    /// Start a session on `reader`/`writer_half` for `peer` acting as
    /// `role`; `guard` counts the client until its connection is closed
    /// (the writer lets it go last); a session without one (stdio) shuts
    /// the daemon down at EOF.
    pub fn start<R, W>(
        env: SessionEnv,
        peer: Peer,
        role: Role,
        reader: R,
        writer_half: W,
        guard: Option<ClientGuard>,
    ) -> Addr<Self>
    where
        R: AsyncBufRead + Unpin + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let (abort_tx, abort_rx) = oneshot::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let log =
            env.log.new(slog::o!("peer_uid" => peer.uid, "peer_pid" => peer.pid.unwrap_or(0)));
        let shutdown_on_eof = guard.is_none();
        // The writer holds the client's slot: it is the last to let go of
        // the connection (it may linger to write what is queued), so the
        // slot bounds lingering connections too.
        let uid_share = (role == Role::ReadOnly).then(|| env.counts.uid_share(peer.uid));
        let writer = Writer {
            rx,
            abort: abort_rx,
            queued: queued.clone(),
            uid_share: uid_share.clone(),
            guard,
        };
        tokio::spawn(write_lines(writer_half, writer, env.unwritten.clone()));
        ControlSession::create(move |ctx| {
            // One frame at a time: the next is read only after this one was
            // handled, which bounds what a client can make us buffer.
            // And no frame is read while MAX_LARGE_IN_FLIGHT large replies
            // are being made: a client that pipelines `blob.get`s without
            // reading is held back by its socket, not buffered for.
            // A read-only uid's connections share one gate, so more
            // connections do not mean more large replies in the making.
            let gate = match &uid_share {
                Some(share) => share.large.clone(),
                None => Arc::new(Semaphore::new(MAX_LARGE_IN_FLIGHT)),
            };
            let start = Some((LineReader::new(reader), gate.clone()));
            let frames = futures::stream::unfold(start, |st| async move {
                let (mut r, gate) = st?;
                let permit = gate.clone().acquire_owned().await.ok();
                let f = r.next_frame().await;
                let done = matches!(f, Ok(Frame::Eof) | Err(_));
                Some((Incoming(f, permit), (!done).then_some((r, gate))))
            });
            ctx.add_stream(frames);
            debug!(log, "client connected");
            let mut s = ControlSession {
                env,
                log,
                peer,
                role,
                out: tx,
                gate,
                queued,
                uid_share,
                abort: Some(abort_tx),
                in_flight: 0,
                eof: false,
                last_line: Instant::now(),
                attaches: HashMap::new(),
                attach_live: 0,
                next_attach: 0,
                shutdown_on_eof,
                notifier: None,
                tickets: HashMap::new(),
                next_ticket: 0,
                topics: HashSet::new(),
                subscribed: false,
            };
            if let Some(t) = s.env.limits.idle_timeout {
                s.arm_idle(t, ctx);
            }
            s
        })
    }

    /// Arm the idle timer to fire `after`; stdio sessions have none. Each
    /// line only stamps `last_line`: the timer, when it fires, looks at the
    /// stamp and re-arms for the rest, so a busy client costs no timer
    /// churn.
    fn arm_idle(&mut self, after: Duration, ctx: &mut Context<Self>) {
        let Some(t) = self.env.limits.idle_timeout else { return };
        if self.shutdown_on_eof {
            return;
        }
        ctx.run_later(after, move |act, ctx| {
            let quiet = act.last_line.elapsed();
            if act.holds_something() {
                act.arm_idle(t, ctx);
            } else if quiet < t {
                act.arm_idle(t - quiet, ctx);
            } else {
                info!(act.log, "idle connection closed";
                      "idle_timeout_secs" => t.as_secs());
                ctx.stop();
            }
        });
    }

    /// Whether the client waits for something the daemon will send
    /// unasked, so silence is not idleness.
    fn holds_something(&self) -> bool {
        self.subscribed
            || self.notifier.is_some()
            || self.in_flight > 0
            || self.attach_live > 0
            || !self.tickets.is_empty()
    }

    /// Close the connection at once, dropping what is queued for it.
    fn disconnect(&mut self, ctx: &mut Context<Self>) {
        if let Some(a) = self.abort.take() {
            let _ = a.send(());
        }
        ctx.stop();
    }

    /// Queue a JSON value (an event, an error reply) as a line for the
    /// client.
    fn send_line<T: Serialize>(&mut self, v: &T, ctx: &mut Context<Self>) {
        let mut line = Vec::with_capacity(128);
        match serde_json::to_writer(&mut line, v) {
            Ok(()) => self.queue_line(line, ctx),
            Err(e) => self.unserializable(&e, ctx),
        }
    }

    /// A value that would not serialize (which the protocol's plain data
    /// types cannot be, short of a bug): the client gets an `internal`
    /// error rather than nothing.
    fn unserializable(&mut self, e: &serde_json::Error, ctx: &mut Context<Self>) {
        warn!(self.log, "a reply would not serialize"; "error" => %e);
        let line = br#"{"id":null,"ok":false,"error":{"code":"internal","message":"a reply would not serialize"}}"#;
        self.queue_line(line.to_vec(), ctx);
    }

    /// Queue a serialized line (without its newline) for the client; a
    /// client that lets more than its queue bound pile up is disconnected.
    fn queue_line(&mut self, mut line: Vec<u8>, ctx: &mut Context<Self>) {
        if ctx.state() != ActorState::Running {
            return;
        }
        line.push(b'\n');
        let len = line.len();
        let queued = self.queued.load(Ordering::SeqCst);
        if queued.saturating_add(len) > self.env.limits.queue_bytes {
            warn!(self.log, "client not reading its replies; disconnecting";
                  "queued_bytes" => queued, "line_bytes" => len,
                  "queue_bytes" => self.env.limits.queue_bytes,
                  "notifier" => ?self.notifier.as_deref().unwrap_or(""));
            return self.disconnect(ctx);
        }
        if let Some(share) = &self.uid_share {
            let together = share.queued.load(Ordering::SeqCst);
            if together.saturating_add(len) > self.env.limits.uid_queue_bytes {
                warn!(self.log, "a read-only uid's clients are not reading their replies; disconnecting this one";
                      "uid_queued_bytes" => together, "line_bytes" => len,
                      "uid_queue_bytes" => self.env.limits.uid_queue_bytes);
                return self.disconnect(ctx);
            }
            share.queued.fetch_add(len, Ordering::SeqCst);
        }
        self.queued.fetch_add(len, Ordering::SeqCst);
        self.env.unwritten.fetch_add(1, Ordering::SeqCst);
        if self.out.send(line).is_err() {
            // The writer is gone: the client stopped taking bytes.
            self.queued.fetch_sub(len, Ordering::SeqCst);
            if let Some(share) = &self.uid_share {
                share.queued.fetch_sub(len, Ordering::SeqCst);
            }
            self.env.unwritten.fetch_sub(1, Ordering::SeqCst);
            debug!(self.log, "client gone while a reply was queued");
            ctx.stop();
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

    fn handle_line(
        &mut self,
        line: &[u8],
        permit: Option<OwnedSemaphorePermit>,
        ctx: &mut Context<Self>,
    ) {
        let Envelope { id, request } = match decode_request(line) {
            Ok(r) => r,
            Err(r) => {
                // A client that may not run the op learns nothing about
                // what is wrong with its parameters.
                let err = match r.op.map(|op| self.check_op(op)) {
                    Some(Err(refused)) => refused,
                    _ => r.error.into(),
                };
                return self.reply(r.id, Err(err), ctx);
            }
        };
        if self.in_flight >= MAX_IN_FLIGHT {
            let err = ops::ProtoError::new(ErrorCode::Busy, "too many requests in flight");
            return self.reply(id, Err(err), ctx);
        }
        // `state.get` is what polling clients send over and over: its
        // reading is written straight into the reply line, without the
        // map `dispatch` makes (the same bytes; see `ok_line_of`).
        if matches!(request, Request::StateGet {}) && self.check_op(Op::StateGet).is_ok() {
            return match ok_line_of(&id, &self.env.sys.state_now()) {
                Ok(line) => self.queue_line(line, ctx),
                Err(e) => self.unserializable(&e, ctx),
            };
        }
        // Only a large reply keeps the read permit until it is queued.
        let permit = permit.filter(|_| large_reply(request.op()));
        match self.dispatch(request, ctx) {
            ops::Dispatch::Now(res) => self.reply(id, res, ctx),
            ops::Dispatch::Later(fut) => {
                self.in_flight += 1;
                ctx.spawn(fut.map(move |res, act: &mut Self, ctx| {
                    act.in_flight -= 1;
                    act.reply(id, res, ctx);
                    drop(permit);
                }));
            }
        }
    }
}

impl Actor for ControlSession {
    type Context = Context<Self>;

    fn stopped(&mut self, ctx: &mut Self::Context) {
        if self.subscribed {
            let me = ctx.address().recipient();
            self.env.sys.inner.supervisor.do_send(crate::supervisor::Unsubscribe(me));
        }
        // Queued attach items would run for nobody: cancel them now, so
        // the global queue and this uid's quota are freed at once.
        for (_, t) in self.attaches.drain() {
            t.cancel();
        }
        if let Some(name) = self.notifier.take() {
            // The supervisor also notices the closed mailbox; telling it
            // straight away lets a walk this notifier holds go on at once.
            self.env.sys.inner.supervisor.do_send(Unregister { name });
        }
        debug!(self.log, "client disconnected");
    }
}

impl StreamHandler<Incoming> for ControlSession {
    fn handle(&mut self, item: Incoming, ctx: &mut Self::Context) {
        if matches!(item.0, Ok(Frame::Line(_) | Frame::TooLarge)) {
            self.last_line = Instant::now();
        }
        match item.0 {
            Ok(Frame::Line(line)) => self.handle_line(&line, item.1, ctx),
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
        } else {
            // Whatever it still waits for would be answered to nobody:
            // stop now, which cancels it all (see the module docs).
            debug!(self.log, "client closed its side";
                   "in_flight" => self.in_flight, "attaches" => self.attach_live);
            ctx.stop();
        }
    }
}

/// A success reply, `{"id":..,"ok":true,..fields}`, without its newline.
/// `id` and `ok` are the protocol's: an op's fields cannot replace them.
fn ok_line(id: &Value, fields: &Map<String, Value>) -> serde_json::Result<Vec<u8>> {
    let mut line = ok_head(id)?;
    for (k, v) in fields.iter().filter(|(k, _)| *k != "id" && *k != "ok") {
        line.push(b',');
        serde_json::to_writer(&mut line, k)?;
        line.push(b':');
        serde_json::to_writer(&mut line, v)?;
    }
    line.push(b'}');
    Ok(line)
}

/// `{"id":..,"ok":true`, the start of every success reply.
fn ok_head(id: &Value) -> serde_json::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(128);
    line.extend_from_slice(b"{\"id\":");
    serde_json::to_writer(&mut line, id)?;
    line.extend_from_slice(b",\"ok\":true");
    Ok(line)
}

/// A success reply made from a typed reply whose fields are not `id` or
/// `ok`: the same bytes as [`ok_line`] of its map, without making the map
/// (the op's struct serializes its fields in the order the map would
/// keep them).
fn ok_line_of<T: Serialize>(id: &Value, fields: &T) -> serde_json::Result<Vec<u8>> {
    let mut line = ok_head(id)?;
    let at = line.len();
    serde_json::to_writer(&mut line, fields)?;
    match line.get(at..) {
        Some(b"{}") => {
            line.truncate(at);
            line.push(b'}');
        }
        // Its own opening brace becomes the comma after `ok`.
        Some([b'{', ..]) => line[at] = b',',
        _ => return Err(serde::ser::Error::custom("a reply is not an object")),
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a reply that does not serialize should fail loudly

    use serde_json::{json, Map, Value};

    fn fields(v: Value) -> Map<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ok_lines_put_id_and_ok_first_and_fields_cannot_replace_them() {
        let fields = fields(json!({"ok": false, "id": 9, "state": "OPERATIONAL"}));
        let line = super::ok_line(&json!(7), &fields).unwrap();
        let text = String::from_utf8(line).unwrap();
        assert!(text.starts_with(r#"{"id":7,"ok":true,"#), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v, json!({"id": 7, "ok": true, "state": "OPERATIONAL"}));
    }

    #[test]
    fn a_state_reading_is_written_as_its_map_would_be() {
        use lwsys_messages::state::{StateReading, SystemState};
        for (id, state) in [
            (json!(7), SystemState::Operational),
            (json!("x\"y"), SystemState::PolicyValid),
            (Value::Null, SystemState::TimeValid),
        ] {
            let r = StateReading { state, since_us: 1_700_000_000_123_456 };
            let by_map = super::ok_line(&id, &super::ops::reply(&r).unwrap()).unwrap();
            assert_eq!(super::ok_line_of(&id, &r).unwrap(), by_map);
        }
        #[derive(serde::Serialize)]
        struct Empty {}
        assert_eq!(super::ok_line_of(&json!(1), &Empty {}).unwrap(), br#"{"id":1,"ok":true}"#);
        assert!(super::ok_line_of(&json!(1), &3).is_err());
    }

    #[test]
    fn ok_lines_escape_what_they_carry() {
        let fields = fields(json!({"name": "a\"b\n"}));
        let line = super::ok_line(&json!("x\"y"), &fields).unwrap();
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v, json!({"id": "x\"y", "ok": true, "name": "a\"b\n"}));
    }
}
