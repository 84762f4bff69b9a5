//! Synchronous wrappers of [`SystemHandle`] calls, for plain threads.

use std::time::Duration;

use lwsys_messages::state::{StateReading, SystemState};
use lwsys_messages::supervisor::WalkResult;

use super::{Error, SystemHandle};

/// [`SystemHandle`] calls that block the calling thread.
pub struct Blocking<'a>(pub(super) &'a SystemHandle);

impl Blocking<'_> {
    /// See [`SystemHandle::state`].
    pub fn state(&self) -> Result<StateReading, Error> {
        futures::executor::block_on(self.0.state())
    }

    /// See [`SystemHandle::steps`].
    pub fn steps(&self, target: SystemState) -> Result<WalkResult, Error> {
        futures::executor::block_on(self.0.steps(target))
    }

    /// See [`SystemHandle::jump`].
    pub fn jump(&self, target: SystemState) -> Result<WalkResult, Error> {
        futures::executor::block_on(self.0.jump(target))
    }

    /// See [`SystemHandle::wait_for`].
    pub fn wait_for(
        &self,
        state: SystemState,
        timeout: Option<Duration>,
    ) -> Result<SystemState, Error> {
        futures::executor::block_on(self.0.wait_for(state, timeout))
    }

    /// See [`SystemHandle::resume`].
    pub fn resume(&self, name: &str) -> Result<bool, Error> {
        futures::executor::block_on(self.0.resume(name))
    }

    /// See [`SystemHandle::shutdown`].
    pub fn shutdown(&self) -> Result<WalkResult, Error> {
        futures::executor::block_on(self.0.shutdown())
    }
}
