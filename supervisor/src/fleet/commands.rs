//! Broker commands: each `cmd` payload is one control-protocol request
//! line, run through an ordinary [`ControlSession`] whose transport is an
//! in-process pipe, so a broker command is decoded, access-checked and
//! dispatched exactly as a socket client's request and gets the same reply
//! (bad JSON included). Each command gets a fresh session holding a client
//! slot (it counts against `[control] max_clients`); the session ends once
//! the reply is read, which frees whatever the request made it hold.
//!
//! Bounds: commands run one at a time; at most [`MAX_PENDING_COMMANDS`]
//! wait, and more are answered `busy` without being parsed beyond their
//! id; a payload over [`MAX_COMMAND`] bytes is answered `too_large`; a
//! reply is read up to [`MAX_REPLY`] bytes, and a command still unanswered
//! after `[fleet] command_timeout_secs` is answered `timeout`.

use std::time::Duration;

use lwsys_messages::fleet::MAX_COMMAND;
use lwsys_messages::protocol::{decode_request, Request};
use lwsys_messages::ErrorCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::control::{ClientGuard, ControlSession, Peer, ProtoError, Role, SessionEnv};

/// Commands that may wait for the one running.
pub const MAX_PENDING_COMMANDS: usize = 8;

/// Largest reply published, in bytes (the MQTT packet bound the link sets
/// is above it); a larger one is replaced by a `too_large` error.
pub const MAX_REPLY: usize = 1 << 20;

/// Pipe buffer between the link and a command's session.
const PIPE_BYTES: usize = 64 * 1024;

/// What broker commands may do (`[fleet] commands`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandRole {
    /// Nothing: every op is `forbidden`.
    None,
    /// What a read-only socket client may do.
    ReadOnly,
    /// Everything.
    Admin,
}

impl CommandRole {
    /// The control role a session runs with, `None` for no session at all.
    pub fn session_role(self) -> Option<Role> {
        match self {
            Self::None => None,
            Self::ReadOnly => Some(Role::ReadOnly),
            Self::Admin => Some(Role::Admin),
        }
    }

    /// The config word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ReadOnly => "readonly",
            Self::Admin => "admin",
        }
    }
}

/// An error reply line for `id`.
fn error_line(id: Value, code: ErrorCode, message: &str) -> Vec<u8> {
    let v = ProtoError::new(code, message).into_reply(id);
    serde_json::to_vec(&v).unwrap_or_else(|_| {
        br#"{"id":null,"ok":false,"error":{"code":"internal","message":"a reply would not serialize"}}"#.to_vec()
    })
}

/// The request's `id`, as far as it can be read (`null` otherwise): for
/// the replies made without running the request.
pub fn request_id(payload: &[u8]) -> Value {
    if payload.len() > MAX_COMMAND {
        return Value::Null;
    }
    serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|mut v| v.get_mut("id").map(Value::take))
        .unwrap_or(Value::Null)
}

/// The reply to a command refused because too many wait.
pub fn busy_reply(payload: &[u8]) -> Vec<u8> {
    let msg = format!("too many broker commands waiting (at most {MAX_PENDING_COMMANDS})");
    error_line(request_id(payload), ErrorCode::Busy, &msg)
}

/// The reply of a role that may run nothing: the decoding error a socket
/// client would get for a line that is no request, `forbidden` otherwise.
fn forbidden_reply(payload: &[u8]) -> Vec<u8> {
    match decode_request(payload) {
        Err(r) if r.op.is_none() => {
            let e: ProtoError = r.error.into();
            serde_json::to_vec(&e.into_reply(r.id)).unwrap_or_default()
        }
        Err(r) => error_line(r.id, ErrorCode::Forbidden, FORBIDDEN),
        Ok(env) => error_line(env.id, ErrorCode::Forbidden, FORBIDDEN),
    }
}

const SECRET: &str =
    "secret blobs are never published to the broker, whatever [fleet] commands grants";

/// Whether `req` reads a secret blob (itself or as an `attach`'s nested
/// request): its reply would carry the secret onto a broker topic, where
/// every subscriber the broker's ACL lets in would read it, so no role a
/// broker command runs with may make it.
fn reads_secret(req: &Request) -> bool {
    match req {
        Request::BlobGet { kind, .. } => kind.is_secret(),
        Request::Attach { request, .. } => reads_secret(request),
        _ => false,
    }
}

const FORBIDDEN: &str =
    "broker commands may not run ops on this device ([fleet] commands = \"none\")";

/// Run one command line and return its reply line (without newline).
pub async fn run(
    env: &SessionEnv,
    role: CommandRole,
    payload: &[u8],
    timeout: Duration,
) -> Vec<u8> {
    if payload.len() > MAX_COMMAND {
        let msg = format!("command longer than {MAX_COMMAND} bytes; discarded");
        return error_line(Value::Null, ErrorCode::TooLarge, &msg);
    }
    if payload.contains(&b'\n') {
        // A second line would be a second request with its reply lost.
        return error_line(request_id(payload), ErrorCode::BadRequest, "a command is one line");
    }
    let Some(role) = role.session_role() else { return forbidden_reply(payload) };
    if let Ok(env) = decode_request(payload) {
        if reads_secret(&env.request) {
            return error_line(env.id, ErrorCode::Forbidden, SECRET);
        }
    }
    let uid = nix::unistd::getuid().as_raw();
    let guard = match ClientGuard::take(&env.counts, &env.limits, uid, role) {
        Ok(g) => g,
        Err(why) => return error_line(request_id(payload), ErrorCode::Busy, &why),
    };
    let peer = Peer { uid, gid: nix::unistd::getgid().as_raw(), pid: None };
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    let (sr, sw) = tokio::io::split(theirs);
    ControlSession::start(env.clone(), peer, role, BufReader::new(sr), sw, Some(guard));
    let (cr, mut cw) = tokio::io::split(ours);
    let exchange = async move {
        let mut line = payload.to_vec();
        line.push(b'\n');
        cw.write_all(&line).await.ok()?;
        // The writer stays open until the reply is read: closing it is EOF,
        // which stops the session and drops the request.
        let mut reader = BufReader::new(cr);
        loop {
            let mut buf = Vec::new();
            let limit = u64::try_from(MAX_REPLY + 1).unwrap_or(u64::MAX);
            let n = (&mut reader).take(limit).read_until(b'\n', &mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if buf.len() > MAX_REPLY {
                return Some(Err(()));
            }
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            // Events (after a `subscribe`) are not the reply.
            let is_reply = serde_json::from_slice::<Value>(&buf)
                .map(|v| v.get("ok").is_some())
                .unwrap_or(false);
            if is_reply {
                drop(cw);
                return Some(Ok(buf));
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Some(Ok(reply))) => reply,
        Ok(Some(Err(()))) => {
            let msg = format!("reply longer than {MAX_REPLY} bytes, too large to publish");
            error_line(request_id(payload), ErrorCode::TooLarge, &msg)
        }
        Ok(None) => error_line(
            request_id(payload),
            ErrorCode::Internal,
            "the session ended without a reply",
        ),
        Err(_) => {
            let msg =
                format!("no reply within {} s ([fleet] command_timeout_secs)", timeout.as_secs());
            error_line(request_id(payload), ErrorCode::Timeout, &msg)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn v(line: &[u8]) -> Value {
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn roles_map_to_session_roles() {
        assert_eq!(CommandRole::None.session_role(), None);
        assert_eq!(CommandRole::ReadOnly.session_role(), Some(Role::ReadOnly));
        assert_eq!(CommandRole::Admin.session_role(), Some(Role::Admin));
    }

    #[test]
    fn with_commands_off_every_op_is_forbidden_and_bad_json_gets_the_parse_error() {
        let r = v(&forbidden_reply(br#"{"id":4,"op":"state.get"}"#));
        assert_eq!(r["id"], 4);
        assert_eq!(r["error"]["code"], "forbidden");
        let r = v(&forbidden_reply(br#"{"id":5,"op":"state.jump","params":{}}"#));
        assert_eq!(r["error"]["code"], "forbidden");
        let r = v(&forbidden_reply(b"{nope"));
        assert_eq!(r["error"]["code"], "parse_error");
        assert_eq!(r["ok"], false);
    }

    #[test]
    fn secret_blob_reads_are_refused_even_nested_in_attach() {
        let read = |line: &[u8]| reads_secret(&decode_request(line).unwrap().request);
        assert!(read(br#"{"op":"blob.get","kind":"MQTT_PASSWORD"}"#));
        assert!(read(br#"{"op":"blob.get","kind":"CLIENT_KEY_DER"}"#));
        assert!(read(
            br#"{"op":"attach","state":"OPERATIONAL","request":{"op":"blob.get","kind":"MQTT_PASSWORD"}}"#
        ));
        assert!(!read(br#"{"op":"blob.get","kind":"DEVICE_TYPE"}"#));
        assert!(!read(br#"{"op":"blob.size","kind":"MQTT_PASSWORD"}"#));
    }

    #[test]
    fn busy_replies_keep_the_request_id() {
        let r = v(&busy_reply(br#"{"id":"x","op":"state.get"}"#));
        assert_eq!((r["id"].as_str(), r["error"]["code"].as_str()), (Some("x"), Some("busy")));
        assert_eq!(request_id(b"garbage"), Value::Null);
    }
}
