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
use lwsys_messages::blobs::{
    AppendBlob, BlobError, BlobId, BlobKind, BlobSize, DestroyBlob, EmptyBlob, GetBlob,
    GetBlobSize, SetBlob,
};
use lwsys_messages::protocol::{BlobRead, BlobSized, Request, RequestError};
use lwsys_messages::ErrorCode;
use serde_json::{Map, Value};
use slog::warn;

use super::ops::{later, reply, Dispatch, ProtoError};
use super::ControlSession;

fn blob_err(e: BlobError) -> ProtoError {
    ProtoError::new(e.code(), e.to_string())
}

/// A non-negative integer as `usize`; a value too large for `usize`
/// saturates, which the service then refuses as out of range.
fn usize_of(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// `idx` (default 0), checked against the kind's own slots.
fn id_param(kind: BlobKind, idx: Option<u64>) -> Result<BlobId, ProtoError> {
    let idx = idx.map_or(0, usize_of);
    let id = BlobId::new(kind, idx);
    if !id.is_valid() {
        return Err(blob_err(BlobError::IdxOutOfRange { kind, idx, slots: kind.slots() }));
    }
    Ok(id)
}

/// The fields of a `blob.get` reply, moved out of it: the same as
/// serializing it (a test checks), without a second copy of the largest
/// reply there is.
fn read_fields(r: BlobRead) -> Map<String, Value> {
    let mut m = Map::with_capacity(3);
    m.insert("data_b64".into(), Value::String(r.data_b64));
    m.insert("size".into(), Value::from(r.size));
    if let Some(text) = r.data {
        m.insert("data".into(), Value::String(text));
    }
    m
}

/// Answer `{size}` once the service has.
fn sized<F>(f: F) -> Dispatch
where
    F: Future<Output = Result<Result<BlobSize, BlobError>, MailboxError>> + 'static,
{
    later(async move {
        let s = f.await?.map_err(blob_err)?;
        reply(&BlobSized { size: s.size })
    })
}

impl ControlSession {
    /// Run a `blob.*` request.
    pub(super) fn dispatch_blob(&mut self, req: Request) -> Result<Dispatch, ProtoError> {
        let (kind, idx) = match &req {
            Request::BlobSet { kind, idx, .. }
            | Request::BlobAppend { kind, idx, .. }
            | Request::BlobEmpty { kind, idx }
            | Request::BlobGet { kind, idx, .. }
            | Request::BlobSize { kind, idx }
            | Request::BlobDestroy { kind, idx } => (*kind, *idx),
            other => return Err(RequestError::unknown_op(other.op().name()).into()),
        };
        if matches!(req, Request::BlobGet { .. }) && kind.is_secret() && !self.peer_is_owner() {
            warn!(self.log, "refused to read a secret blob to a non-admin"; "kind" => %kind);
            return Err(ProtoError::new(
                ErrorCode::Forbidden,
                format!("{kind} is a secret: only an admin may read it"),
            ));
        }
        let id = id_param(kind, idx)?;
        let blobs = match self.env.sys.services() {
            Some(s) => s.blobs.clone(),
            None => return Err(ProtoError::new(ErrorCode::Internal, "no blob service")),
        };
        // `send` queues the message now (see the module docs).
        Ok(match req {
            Request::BlobSet { data, .. } => {
                sized(blobs.send(SetBlob { id, data: data.into_bytes() }))
            }
            Request::BlobAppend { data, .. } => {
                sized(blobs.send(AppendBlob { id, data: data.into_bytes() }))
            }
            Request::BlobEmpty { .. } => sized(blobs.send(EmptyBlob { id })),
            Request::BlobSize { .. } => sized(blobs.send(GetBlobSize { id })),
            Request::BlobDestroy { .. } => sized(blobs.send(DestroyBlob { id })),
            Request::BlobGet { offset, len, .. } => {
                let offset = offset.map_or(0, usize_of);
                let len = len.map(usize_of);
                let f = blobs.send(GetBlob { id, offset, len });
                later(async move {
                    let b = f.await?.map_err(blob_err)?;
                    Ok(read_fields(BlobRead::new(&b.data, b.size)))
                })
            }
            other => return Err(RequestError::unknown_op(other.op().name()).into()),
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

    use lwsys_messages::blobs::BlobBytes;
    use serde_json::json;

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
            let fields = read_fields(BlobRead::new(&b.data, b.size));
            let line = super::super::ok_line(&serde_json::json!(u64::MAX), &fields).unwrap();
            assert!(line.len() < bound, "{byte:#x}: reply {} > bound {bound}", line.len());
        }
        // The default bound holds the default max_bytes (1 MiB).
        let d = crate::control::settings::ControlSettings::default();
        assert_eq!(d.queue_bytes(1 << 20), 8 << 20);
    }

    /// What a `blob.set` line decodes to, or the error code it gets.
    fn decoded(params: Value) -> Result<bytes::Bytes, String> {
        let mut v = json!({"op": "blob.set", "kind": "DEVICE_SERIAL"});
        if let (Value::Object(m), Value::Object(p)) = (&mut v, params) {
            m.extend(p);
        }
        match lwsys_messages::protocol::decode_request(v.to_string().as_bytes()) {
            Ok(e) => match e.request {
                Request::BlobSet { data, .. } => Ok(data.into_bytes()),
                other => Err(format!("{other:?}")),
            },
            Err(r) => Err(r.error.code.to_string()),
        }
    }

    #[test]
    fn a_blob_get_reply_moved_into_fields_is_what_serializing_it_gives() {
        for (data, size) in [(&b"tok"[..], 3), (&[0xff, 0][..], 9), (&b""[..], 0)] {
            let r = BlobRead::new(data, size);
            // As text: a map compares equal whatever its order.
            let moved = serde_json::to_string(&read_fields(r.clone())).unwrap();
            assert_eq!(moved, serde_json::to_string(&r).unwrap());
        }
    }

    #[test]
    fn data_needs_exactly_one_of_text_and_base64() {
        assert_eq!(decoded(json!({"data": "hi"})).unwrap(), &b"hi"[..]);
        assert_eq!(decoded(json!({"data_b64": "aGk="})).unwrap(), &b"hi"[..]);
        assert_eq!(decoded(json!({"data": ""})).unwrap(), &b""[..]);
        for bad_req in [
            json!({}),
            json!({"data": "a", "data_b64": "YQ=="}),
            json!({"data": 1}),
            json!({"data_b64": "not base64!"}),
            json!({"data_b64": "YQ"}),
        ] {
            assert_eq!(decoded(bad_req.clone()).unwrap_err(), "bad_request", "{bad_req}");
        }
    }

    #[test]
    fn idx_is_checked_against_the_kinds_own_slots() {
        assert_eq!(id_param(BlobKind::Auth, Some(1)).unwrap().idx, 1);
        assert_eq!(id_param(BlobKind::Auth, None).unwrap().idx, 0);
        for (kind, idx) in
            [(BlobKind::Auth, 2), (BlobKind::NtpServer, 1), (BlobKind::NtpServer, u64::MAX)]
        {
            let e = id_param(kind, Some(idx)).unwrap_err();
            assert_eq!(e.into_reply(Value::Null)["error"]["code"], "out_of_range");
        }
        let e = decoded(json!({"kind": "NOPE", "data": "x"})).unwrap_err();
        assert_eq!(e, "not_found");
    }
}
