//! The `clock.*` ops of the control protocol: `clock.get` reads the clock
//! service, `clock.set {unix_us}` sets the time (owner only).

use lwsys_messages::clock::{ClockError, GetClock, SetClock};
use lwsys_messages::ErrorCode;

use super::ops::{later, reply, Dispatch, ProtoError};
use super::ControlSession;

fn clock_error(e: &ClockError) -> ProtoError {
    ProtoError::new(e.code(), e.to_string())
}

fn no_clock() -> ProtoError {
    ProtoError::new(ErrorCode::Internal, "this system runs no clock service")
}

impl ControlSession {
    /// `clock.get`.
    pub(super) fn op_clock_get(&mut self) -> Result<Dispatch, ProtoError> {
        let clock = self.env.sys.services().ok_or_else(no_clock)?.clock.clone();
        Ok(later(async move { reply(&clock.send(GetClock).await?) }))
    }

    /// `clock.set {unix_us}`.
    pub(super) fn op_clock_set(&mut self, unix_us: u64) -> Result<Dispatch, ProtoError> {
        // Permission first: a client that may not set the clock learns
        // nothing about what it sent (the op table says so too; this is
        // the service's own rule).
        if !self.peer_is_owner() {
            let why = format!("uid {} is not an admin", self.peer.uid);
            return Err(clock_error(&ClockError::Forbidden(why)));
        }
        ClockError::check_range(unix_us).map_err(|e| clock_error(&e))?;
        let clock = self.env.sys.services().ok_or_else(no_clock)?.clock.clone();
        Ok(later(async move {
            let r = clock.send(SetClock { unix_us }).await?;
            reply(&r.map_err(|e| clock_error(&e))?)
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use lwsys_messages::clock::GetClock;
    use serde_json::Value;

    use super::super::{AccessPolicy, Peer, Role, SessionEnv};
    use super::*;
    use crate::services::ServiceConfig;
    use crate::Builder;

    const DAEMON_UID: u32 = 4242;

    /// A session for a peer with `uid` on a system with services (the
    /// clock trusts the host clock), and the client's end of the pipe.
    fn session(uid: u32) -> (tokio::io::DuplexStream, crate::SystemHandle) {
        let sys = Builder::new().services(ServiceConfig::default()).start().unwrap();
        let env = SessionEnv {
            sys: sys.clone(),
            log: slog::Logger::root(slog::Discard, slog::o!()),
            access: Arc::new(AccessPolicy::owner_only(DAEMON_UID)),
            consent_timeout: Duration::from_secs(5),
            limits: crate::control::Limits::default(),
            counts: Default::default(),
            unwritten: Arc::new(AtomicUsize::new(0)),
        };
        let (client, server) = tokio::io::duplex(4096);
        let (r, w) = tokio::io::split(server);
        let peer = Peer { uid, gid: uid, pid: None };
        // A stranger would be refused at connect; here it reads only.
        let role = env.access.role(&peer).unwrap_or(Role::ReadOnly);
        ControlSession::start(env, peer, role, BufReader::new(r), w, None);
        (client, sys)
    }

    async fn call(client: &mut BufReader<tokio::io::DuplexStream>, line: &str) -> Value {
        client.get_mut().write_all(format!("{line}\n").as_bytes()).await.unwrap();
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_line(&mut reply))
            .await
            .unwrap()
            .unwrap();
        serde_json::from_str(&reply).unwrap()
    }

    #[actix_rt::test]
    async fn clock_set_from_another_uid_is_forbidden_and_changes_nothing() {
        let (client, sys) = session(DAEMON_UID + 1);
        let mut client = BufReader::new(client);
        let before = sys.services().unwrap().clock.send(GetClock).await.unwrap();
        let r = call(&mut client, r#"{"id":1,"op":"clock.set","unix_us":1800000000000000}"#).await;
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["error"]["code"], "forbidden", "{r}");
        // Even a malformed request is refused for permission first.
        let r = call(&mut client, r#"{"id":2,"op":"clock.set"}"#).await;
        assert_eq!(r["error"]["code"], "forbidden", "{r}");
        let after = sys.services().unwrap().clock.send(GetClock).await.unwrap();
        assert_eq!(after.source, before.source);
        assert_eq!(after.last_sync_us, None);
        // Reading is open to everyone.
        let r = call(&mut client, r#"{"id":3,"op":"clock.get"}"#).await;
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["source"], "system", "{r}");
    }

    #[actix_rt::test]
    async fn clock_set_from_the_owner_checks_its_parameter() {
        let (client, _sys) = session(DAEMON_UID);
        let mut client = BufReader::new(client);
        for (i, bad) in [
            r#""unix_us":0"#,
            r#""unix_us":7258118400000001"#,
            r#""unix_us":-5"#,
            r#""unix_us":"1800000000000000""#,
            r#""unix_us":1.5"#,
            r#""other":1"#,
        ]
        .iter()
        .enumerate()
        {
            let r = call(&mut client, &format!(r#"{{"id":{i},"op":"clock.set",{bad}}}"#)).await;
            assert_eq!(r["error"]["code"], "bad_request", "{bad}: {r}");
        }
        let r = call(&mut client, r#"{"id":9,"op":"clock.bogus"}"#).await;
        assert_eq!(r["error"]["code"], "unknown_op", "{r}");
    }
}
