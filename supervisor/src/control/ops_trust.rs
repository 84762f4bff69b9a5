//! The `trust.*` ops of the control protocol (`trust.query {skid}`), and
//! the trust part of `system.info`.

use lwsys_messages::trust::{GetTrustInfo, QueryTrust, TrustError, TrustInfo};

use super::ops::{later, reply, Dispatch, ProtoError};
use super::ControlSession;
use crate::handle::SystemHandle;

fn trust_error(e: &TrustError) -> ProtoError {
    ProtoError::new(e.code(), e.to_string())
}

/// The trust service's backends and cache counters for `system.info`, or
/// `None` (null) when the system runs no services.
pub(super) async fn trust_info(sys: &SystemHandle) -> Result<Option<TrustInfo>, ProtoError> {
    let Some(s) = sys.services() else { return Ok(None) };
    Ok(Some(s.trust.send(GetTrustInfo).await?))
}

impl ControlSession {
    /// `trust.query {skid}`.
    pub(super) fn op_trust_query(&mut self, skid: &str) -> Result<Dispatch, ProtoError> {
        let q = QueryTrust::from_hex(skid.trim()).map_err(|e| trust_error(&e))?;
        let trust = self
            .env
            .sys
            .services()
            .ok_or_else(|| trust_error(&TrustError::Unavailable("no trust service".into())))?
            .trust
            .clone();
        Ok(later(async move {
            let found = trust.send(q).await?.map_err(|e| trust_error(&e))?;
            reply(&found)
        }))
    }
}
