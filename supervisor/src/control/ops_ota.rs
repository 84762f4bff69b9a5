//! The `ota.*` ops of the control protocol: `ota.status`, `ota.check` and
//! `ota.report_current {bad}` (the last two owner only). Without an `[ota]
//! repository` every op answers `not_found` "ota not configured".

use actix::Addr;
use lwsys_actors::ota::OtaService;
use lwsys_messages::ota::{CheckOta, GetOtaStatus, OtaError, ReportCurrent};
use lwsys_messages::ErrorCode;
use serde_json::{json, Map, Value};

use super::ops::{bad, fields, later, unknown, Dispatch, ProtoError};
use super::ControlSession;

fn ota_error(e: OtaError) -> ProtoError {
    // The variant (`bad_signature`, `consent_refused`, ...) sits beside
    // the code for clients that tell them apart.
    ProtoError::new(e.code(), e.to_string()).with("kind", e.kind())
}

fn gone(e: actix::MailboxError) -> ProtoError {
    ProtoError::new(ErrorCode::Internal, format!("ota service unavailable: {e}"))
}

impl ControlSession {
    fn ota_service(&self) -> Result<Addr<OtaService>, ProtoError> {
        self.env
            .sys
            .services()
            .and_then(|s| s.ota.clone())
            .ok_or_else(|| ProtoError::new(ErrorCode::NotFound, "ota not configured"))
    }

    fn require_owner(&self, op: &str) -> Result<(), ProtoError> {
        if self.peer_is_owner() {
            return Ok(());
        }
        Err(ProtoError::new(ErrorCode::Forbidden, format!("{op} is for the daemon's own user")))
    }

    /// Run a `ota.*` op.
    pub(super) fn dispatch_ota(
        &mut self,
        op: &str,
        req: &Map<String, Value>,
    ) -> Result<Dispatch, ProtoError> {
        match op {
            "ota.status" => {
                let ota = self.ota_service()?;
                Ok(later(async move {
                    let s = ota.send(GetOtaStatus).await.map_err(gone)?;
                    Ok(fields(serde_json::to_value(s).unwrap_or(Value::Null)))
                }))
            }
            "ota.check" => {
                self.require_owner(op)?;
                let ota = self.ota_service()?;
                Ok(later(async move {
                    let o = ota.send(CheckOta).await.map_err(gone)?.map_err(ota_error)?;
                    Ok(fields(json!({
                        "updated": o.updated,
                        "unixtime": o.unixtime,
                        "reboot": o.reboot,
                        "reason": o.reason,
                    })))
                }))
            }
            "ota.report_current" => {
                self.require_owner(op)?;
                let bad_boot = match req.get("bad") {
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(bad("\"bad\" must be a boolean")),
                    None => return Err(bad("missing \"bad\"")),
                };
                let ota = self.ota_service()?;
                Ok(later(async move {
                    let s = ota
                        .send(ReportCurrent { bad: bad_boot })
                        .await
                        .map_err(gone)?
                        .map_err(ota_error)?;
                    Ok(fields(serde_json::to_value(s).unwrap_or(Value::Null)))
                }))
            }
            _ => Err(unknown(op)),
        }
    }
}
