//! The `trust.*` ops of the control protocol (`trust.query {skid}`), and
//! the trust part of `system.info`.

use lwsys_messages::trust::{GetTrustInfo, QueryTrust, TrustError};
use serde_json::{json, Map, Value};

use super::ops::{fields, later, str_param, unknown, Dispatch, ProtoError};
use super::ControlSession;
use crate::handle::SystemHandle;

fn trust_error(e: &TrustError) -> ProtoError {
    ProtoError::new(e.code(), e.to_string())
}

fn gone(e: actix::MailboxError) -> ProtoError {
    trust_error(&TrustError::Unavailable(e.to_string()))
}

/// The trust service's backends and cache counters for `system.info`, or
/// null when the system runs no services.
pub(super) async fn trust_info(sys: &SystemHandle) -> Result<Value, ProtoError> {
    let Some(s) = sys.services() else { return Ok(Value::Null) };
    let info = s.trust.send(GetTrustInfo).await.map_err(gone)?;
    Ok(serde_json::to_value(info).unwrap_or(Value::Null))
}

impl ControlSession {
    /// Run a `trust.*` op.
    pub(super) fn dispatch_trust(
        &mut self,
        op: &str,
        req: &Map<String, Value>,
    ) -> Result<Dispatch, ProtoError> {
        match op {
            "trust.query" => {
                let q = QueryTrust::from_hex(str_param(req, "skid")?.trim())
                    .map_err(|e| trust_error(&e))?;
                let trust = self
                    .env
                    .sys
                    .services()
                    .ok_or_else(|| {
                        trust_error(&TrustError::Unavailable("no trust service".into()))
                    })?
                    .trust
                    .clone();
                Ok(later(async move {
                    let found = trust.send(q).await.map_err(gone)?.map_err(|e| trust_error(&e))?;
                    Ok(fields(json!({ "certs": found.certs })))
                }))
            }
            other => Err(unknown(other)),
        }
    }
}
