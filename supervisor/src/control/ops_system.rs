//! The `attach` and `system.reboot` ops of the control protocol.

use actix::prelude::*;
use serde_json::{Map, Value};

use lwsys_messages::ErrorCode;
use tokio::sync::oneshot;

use super::ops::{bad, state_param, unknown, Dispatch, OpResult, ProtoError};
use super::ControlSession;

impl ControlSession {
    /// Run `attach {state, request}`: the nested request goes through the
    /// attach queue like any foreign-thread callback and runs once the
    /// state is at or past `state`; its reply carries the outer id.
    pub(super) fn dispatch_attach(
        &mut self,
        req: &Map<String, Value>,
        _ctx: &mut Context<Self>,
    ) -> Result<Dispatch, ProtoError> {
        let state = state_param(req, "state")?;
        let Some(Value::Object(nested)) = req.get("request") else {
            return Err(bad("\"request\" must be a request object"));
        };
        let mut nested = nested.clone();
        nested.remove("id");
        let op = match nested.remove("op") {
            Some(Value::String(op)) => op,
            _ => return Err(bad("the nested request needs a string \"op\"")),
        };
        let (tx, rx) = oneshot::channel::<()>();
        self.env
            .sys
            .attach(state, move |_ctx| {
                let _ = tx.send(());
            })
            .map_err(|e| ProtoError::new(e.code(), e.to_string()))?;
        let fut = actix::fut::wrap_future::<_, Self>(rx).then(move |ran, act, ctx| {
            let res: ResponseActFuture<Self, OpResult> = match ran {
                Err(_) => Box::pin(actix::fut::ready(Err(ProtoError::new(
                    ErrorCode::Internal,
                    "the attach was dropped (shutting down)",
                )))),
                Ok(()) => match act.dispatch(&op, nested, ctx) {
                    Dispatch::Now(r) => Box::pin(actix::fut::ready(r)),
                    Dispatch::Later(f) => f,
                },
            };
            res
        });
        Ok(Dispatch::Later(Box::pin(fut)))
    }

    /// Run `system.reboot`.
    pub(super) fn dispatch_reboot(
        &mut self,
        _req: &Map<String, Value>,
    ) -> Result<Dispatch, ProtoError> {
        Err(unknown("system.reboot"))
    }
}
