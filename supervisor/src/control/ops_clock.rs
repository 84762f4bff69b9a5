//! The `clock.*` ops of the control protocol.

use serde_json::{Map, Value};

use super::ops::{unknown, Dispatch, ProtoError};
use super::ControlSession;

impl ControlSession {
    /// Run a `clock.*` op.
    pub(super) fn dispatch_clock(
        &mut self,
        op: &str,
        _req: &Map<String, Value>,
    ) -> Result<Dispatch, ProtoError> {
        Err(unknown(op))
    }
}
