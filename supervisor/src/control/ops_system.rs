//! The `attach` and `system.reboot` ops of the control protocol.

use actix::prelude::*;
use serde_json::{Map, Value};

use super::ops::{unknown, Dispatch, ProtoError};
use super::ControlSession;

impl ControlSession {
    /// Run `attach {state, request}`.
    pub(super) fn dispatch_attach(
        &mut self,
        _req: &Map<String, Value>,
        _ctx: &mut Context<Self>,
    ) -> Result<Dispatch, ProtoError> {
        Err(unknown("attach"))
    }

    /// Run `system.reboot`.
    pub(super) fn dispatch_reboot(
        &mut self,
        _req: &Map<String, Value>,
    ) -> Result<Dispatch, ProtoError> {
        Err(unknown("system.reboot"))
    }
}
