//! The `ota.*` ops of the control protocol: `ota.status`, `ota.check` and
//! `ota.report_current {bad}` (the last two owner only). Without an `[ota]
//! repository` every op answers `not_found` "ota not configured".

use actix::Addr;
use lwsys_actors::ota::OtaService;
use lwsys_messages::ota::{CheckOta, GetOtaStatus, OtaError, ReportCurrent};
use lwsys_messages::protocol::Op;
use lwsys_messages::ErrorCode;

use super::ops::{later, reply, Dispatch, ProtoError};
use super::ControlSession;

fn ota_error(e: OtaError) -> ProtoError {
    // The variant (`bad_signature`, `consent_refused`, ...) sits beside
    // the code for clients that tell them apart.
    ProtoError::new(e.code(), e.to_string()).with("kind", e.kind())
}

impl ControlSession {
    fn ota_service(&self) -> Result<Addr<OtaService>, ProtoError> {
        self.env
            .sys
            .services()
            .and_then(|s| s.ota.clone())
            .ok_or_else(|| ProtoError::new(ErrorCode::NotFound, "ota not configured"))
    }

    /// The service's own rule, besides the op table's.
    fn require_owner(&self, op: Op) -> Result<(), ProtoError> {
        if self.peer_is_owner() {
            return Ok(());
        }
        Err(ProtoError::new(
            ErrorCode::Forbidden,
            format!("{} is for the daemon's own user", op.name()),
        ))
    }

    /// `ota.status`.
    pub(super) fn op_ota_status(&mut self) -> Result<Dispatch, ProtoError> {
        let ota = self.ota_service()?;
        Ok(later(async move { reply(&ota.send(GetOtaStatus).await?) }))
    }

    /// `ota.check`.
    pub(super) fn op_ota_check(&mut self) -> Result<Dispatch, ProtoError> {
        self.require_owner(Op::OtaCheck)?;
        let ota = self.ota_service()?;
        Ok(later(async move { reply(&ota.send(CheckOta).await?.map_err(ota_error)?) }))
    }

    /// `ota.report_current {bad}`.
    pub(super) fn op_ota_report_current(&mut self, bad: bool) -> Result<Dispatch, ProtoError> {
        self.require_owner(Op::OtaReportCurrent)?;
        let ota = self.ota_service()?;
        Ok(later(async move {
            let s = ota.send(ReportCurrent { bad }).await?.map_err(ota_error)?;
            reply(&s)
        }))
    }
}
