//! The `blob.*` ops of the control protocol (DESIGN §5): parameters
//! checked, one message to the `BlobService` per request, replies shaped.
//!
//! Each message is handed to the service's mailbox while the request is
//! dispatched, not when its reply future first runs, so the requests of one
//! connection reach the blobs in the order they were sent (a pipelined
//! `set` then `get` reads what was set).
//!
//! Secrets ([`BlobKind::is_secret`]) are not readable by a client of
//! another uid than the daemon's: `get` is `forbidden`, `size` is allowed.
//! Changing a secret is allowed to any client that can reach the socket
//! (issue 5 restricts reads only; admin and read-only uids come later).
//! Contents are never logged.

use std::future::Future;

use actix::MailboxError;
use base64::Engine;
use lwsys_messages::blobs::{
    AppendBlob, BlobBytes, BlobError, BlobId, BlobKind, BlobSize, DestroyBlob, EmptyBlob, GetBlob,
    GetBlobSize, SetBlob,
};
use lwsys_messages::ErrorCode;
use serde_json::{json, Map, Value};
use slog::warn;

use super::ops::{bad, fields, later, opt_u64, str_param, unknown, Dispatch, ProtoError};
use super::ControlSession;

/// The `blob.*` ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobOp {
    Set,
    Append,
    Empty,
    Get,
    Size,
    Destroy,
}

impl BlobOp {
    fn parse(op: &str) -> Option<Self> {
        Some(match op {
            "blob.set" => Self::Set,
            "blob.append" => Self::Append,
            "blob.empty" => Self::Empty,
            "blob.get" => Self::Get,
            "blob.size" => Self::Size,
            "blob.destroy" => Self::Destroy,
            _ => return None,
        })
    }
}

fn blob_err(e: BlobError) -> ProtoError {
    ProtoError::new(e.code(), e.to_string())
}

/// A closed mailbox: the blob service is down, the outcome unknown.
fn mailbox_err(_: MailboxError) -> ProtoError {
    blob_err(BlobError::Unavailable)
}

/// An optional non-negative integer as `usize`; a value too large for
/// `usize` saturates, which the service then refuses as out of range.
fn opt_usize(req: &Map<String, Value>, key: &str) -> Result<Option<usize>, ProtoError> {
    Ok(opt_u64(req, key)?.map(|v| usize::try_from(v).unwrap_or(usize::MAX)))
}

/// `kind` by name; an unknown one is the model's error (`not_found`).
fn kind_param(req: &Map<String, Value>) -> Result<BlobKind, ProtoError> {
    str_param(req, "kind")?.parse::<BlobKind>().map_err(|e| blob_err(e.into()))
}

/// `idx` (default 0), checked against the kind's own slots.
fn id_param(kind: BlobKind, req: &Map<String, Value>) -> Result<BlobId, ProtoError> {
    let idx = opt_usize(req, "idx")?.unwrap_or(0);
    let id = BlobId::new(kind, idx);
    if !id.is_valid() {
        return Err(blob_err(BlobError::IdxOutOfRange { kind, idx, slots: kind.slots() }));
    }
    Ok(id)
}

/// The bytes to write: exactly one of `data` (UTF-8 text) or `data_b64`
/// (standard base64).
fn data_param(req: &Map<String, Value>) -> Result<bytes::Bytes, ProtoError> {
    let text = req.get("data").filter(|v| !v.is_null());
    let b64 = req.get("data_b64").filter(|v| !v.is_null());
    match (text, b64) {
        (Some(Value::String(s)), None) => Ok(bytes::Bytes::copy_from_slice(s.as_bytes())),
        (Some(_), None) => Err(bad("\"data\" must be a string")),
        (None, Some(Value::String(s))) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(bytes::Bytes::from)
            .map_err(|e| bad(format!("\"data_b64\" is not standard base64: {e}"))),
        (None, Some(_)) => Err(bad("\"data_b64\" must be a string")),
        (None, None) => Err(bad("missing \"data\" or \"data_b64\"")),
        (Some(_), Some(_)) => Err(bad("give one of \"data\" and \"data_b64\", not both")),
    }
}

/// Answer `{size}` once the service has.
fn sized<F>(f: F) -> Dispatch
where
    F: Future<Output = Result<Result<BlobSize, BlobError>, MailboxError>> + 'static,
{
    later(async move {
        let s = f.await.map_err(mailbox_err)?.map_err(blob_err)?;
        Ok(fields(json!({"size": s.size})))
    })
}

/// The `blob.get` reply: the bytes read as `data_b64`, also as `data`
/// when they are UTF-8, and the whole blob's `size`.
fn get_reply(b: &BlobBytes) -> Map<String, Value> {
    let mut m = fields(json!({
        "data_b64": base64::engine::general_purpose::STANDARD.encode(&b.data),
        "size": b.size,
    }));
    if let Ok(text) = std::str::from_utf8(&b.data) {
        m.insert("data".into(), Value::String(text.to_owned()));
    }
    m
}

impl ControlSession {
    /// Run a `blob.*` op.
    pub(super) fn dispatch_blob(
        &mut self,
        op: &str,
        req: &Map<String, Value>,
    ) -> Result<Dispatch, ProtoError> {
        let which = BlobOp::parse(op).ok_or_else(|| unknown(op))?;
        let kind = kind_param(req)?;
        if which == BlobOp::Get && kind.is_secret() && !self.peer_is_owner() {
            warn!(self.log, "refused to read a secret blob to a non-admin"; "kind" => %kind);
            return Err(ProtoError::new(
                ErrorCode::Forbidden,
                format!("{kind} is a secret: only an admin may read it"),
            ));
        }
        let id = id_param(kind, req)?;
        let blobs = match self.env.sys.services() {
            Some(s) => s.blobs.clone(),
            None => return Err(ProtoError::new(ErrorCode::Internal, "no blob service")),
        };
        // `send` queues the message now (see the module docs).
        Ok(match which {
            BlobOp::Set => sized(blobs.send(SetBlob { id, data: data_param(req)? })),
            BlobOp::Append => sized(blobs.send(AppendBlob { id, data: data_param(req)? })),
            BlobOp::Empty => sized(blobs.send(EmptyBlob { id })),
            BlobOp::Size => sized(blobs.send(GetBlobSize { id })),
            BlobOp::Destroy => sized(blobs.send(DestroyBlob { id })),
            BlobOp::Get => {
                let offset = opt_usize(req, "offset")?.unwrap_or(0);
                let len = opt_usize(req, "len")?;
                let f = blobs.send(GetBlob { id, offset, len });
                later(async move {
                    let b = f.await.map_err(mailbox_err)?.map_err(blob_err)?;
                    Ok(get_reply(&b))
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines, ReadHalf};
    use tokio::io::{AsyncWrite, WriteHalf};

    use super::*;
    use crate::builder::Builder;
    use crate::control::{AccessPolicy, Peer, Role, SessionEnv};
    use crate::handle::SystemHandle;
    use crate::services::ServiceConfig;

    /// A client end of a session over in-memory pipes.
    struct Pipe {
        w: WriteHalf<DuplexStream>,
        r: Lines<BufReader<ReadHalf<DuplexStream>>>,
    }

    impl Pipe {
        fn open(sys: &SystemHandle, uid: u32) -> Self {
            let daemon_uid = nix::unistd::getuid().as_raw();
            let env = SessionEnv {
                sys: sys.clone(),
                log: slog::Logger::root(slog::Discard, slog::o!()),
                access: Arc::new(AccessPolicy::owner_only(daemon_uid)),
                consent_timeout: Duration::from_secs(5),
                limits: crate::control::Limits::default(),
                counts: Default::default(),
                unwritten: Arc::new(AtomicUsize::new(0)),
            };
            let peer = Peer { uid, gid: 0, pid: None };
            let (client, server) = tokio::io::duplex(64 * 1024);
            let (sr, sw) = tokio::io::split(server);
            // No ClientGuard (its counter is private to the server): EOF
            // would shut the system down, which only happens at test end.
            // A stranger would be refused at connect; here it reads only.
            let role = env.access.role(&peer).unwrap_or(Role::ReadOnly);
            ControlSession::start(env, peer, role, BufReader::new(sr), sw, None);
            let (cr, cw) = tokio::io::split(client);
            Self { w: cw, r: BufReader::new(cr).lines() }
        }

        async fn call(&mut self, req: Value) -> Value {
            let mut line = req.to_string();
            line.push('\n');
            write_all(&mut self.w, line.as_bytes()).await;
            let got = self.r.next_line().await.unwrap().unwrap();
            serde_json::from_str(&got).unwrap()
        }
    }

    async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, b: &[u8]) {
        w.write_all(b).await.unwrap();
        w.flush().await.unwrap();
    }

    fn code(v: &Value) -> &str {
        v["error"]["code"].as_str().unwrap_or("")
    }

    #[actix_rt::test]
    async fn a_read_only_client_cannot_read_secrets_or_change_blobs() {
        let sys = Builder::new().services(ServiceConfig::default()).start().unwrap();
        let me = nix::unistd::getuid().as_raw();
        let mut owner = Pipe::open(&sys, me);
        let mut other = Pipe::open(&sys, me.wrapping_add(1));

        let r = owner.call(json!({"id": 1, "op": "blob.set", "kind": "AUTH", "data": "tok"})).await;
        assert_eq!(r["size"], 3, "{r}");
        owner
            .call(json!({"id": 1, "op": "blob.set", "kind": "DEVICE_SERIAL", "data": "sn-1"}))
            .await;
        for (kind, idx) in [("AUTH", 0), ("AUTH", 1), ("CLIENT_KEY_DER", 0), ("MQTT_PASSWORD", 0)] {
            let r = other.call(json!({"id": 2, "op": "blob.get", "kind": kind, "idx": idx})).await;
            assert_eq!(code(&r), "forbidden", "{kind}: {r}");
            assert!(!r.to_string().contains("tok"), "a refusal must not carry the secret: {r}");
        }
        let r = other.call(json!({"id": 3, "op": "blob.size", "kind": "AUTH"})).await;
        assert_eq!(r["size"], 3, "{r}");
        for op in ["blob.set", "blob.append"] {
            let r =
                other.call(json!({"id": 4, "op": op, "kind": "DEVICE_SERIAL", "data": "x"})).await;
            assert_eq!(code(&r), "forbidden", "{op}: {r}");
        }
        for op in ["blob.empty", "blob.destroy"] {
            let r = other.call(json!({"id": 4, "op": op, "kind": "DEVICE_SERIAL"})).await;
            assert_eq!(code(&r), "forbidden", "{op}: {r}");
        }
        let r = other.call(json!({"id": 5, "op": "blob.get", "kind": "DEVICE_SERIAL"})).await;
        assert_eq!(r["data"], "sn-1", "unchanged: {r}");

        let r = owner.call(json!({"id": 6, "op": "blob.get", "kind": "AUTH"})).await;
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["data_b64"], "dG9r");
        assert_eq!(r["data"], "tok");
    }

    #[test]
    fn the_largest_blob_get_reply_fits_the_smallest_queue_bound() {
        // Control characters are the worst case: 6 bytes each as JSON text.
        let max = 1 << 16;
        let cfg = crate::control::settings::ControlSettings {
            client_queue_bytes: 1,
            ..Default::default()
        };
        let bound = cfg.queue_bytes(max);
        for byte in [0x01u8, b'"', b'a', 0xff] {
            let b = BlobBytes { data: vec![byte; max].into(), size: max };
            let line = super::super::ok_line(&serde_json::json!(u64::MAX), &get_reply(&b)).unwrap();
            assert!(line.len() < bound, "{byte:#x}: reply {} > bound {bound}", line.len());
        }
        // The default bound holds the default max_bytes (1 MiB).
        let d = crate::control::settings::ControlSettings::default();
        assert_eq!(d.queue_bytes(1 << 20), 8 << 20);
    }

    #[test]
    fn data_needs_exactly_one_of_text_and_base64() {
        let m = |v: Value| fields(v);
        assert_eq!(data_param(&m(json!({"data": "hi"}))).unwrap(), &b"hi"[..]);
        assert_eq!(data_param(&m(json!({"data_b64": "aGk="}))).unwrap(), &b"hi"[..]);
        assert_eq!(data_param(&m(json!({"data": ""}))).unwrap(), &b""[..]);
        for bad_req in [
            json!({}),
            json!({"data": "a", "data_b64": "YQ=="}),
            json!({"data": 1}),
            json!({"data_b64": "not base64!"}),
            json!({"data_b64": "YQ"}),
        ] {
            let e = data_param(&m(bad_req.clone())).unwrap_err();
            assert_eq!(e.into_reply(Value::Null)["error"]["code"], "bad_request", "{bad_req}");
        }
    }

    #[test]
    fn idx_is_checked_against_the_kinds_own_slots() {
        let m = |v: Value| fields(v);
        assert_eq!(id_param(BlobKind::Auth, &m(json!({"idx": 1}))).unwrap().idx, 1);
        for (kind, req) in [
            (BlobKind::Auth, json!({"idx": 2})),
            (BlobKind::NtpServer, json!({"idx": 1})),
            (BlobKind::NtpServer, json!({"idx": u64::MAX})),
        ] {
            let e = id_param(kind, &m(req)).unwrap_err();
            assert_eq!(e.into_reply(Value::Null)["error"]["code"], "out_of_range");
        }
        let e = kind_param(&m(json!({"kind": "NOPE"}))).unwrap_err();
        assert_eq!(e.into_reply(Value::Null)["error"]["code"], "not_found");
    }
}
