//! [`AttachCtx`]: what an attached callback can reach from the loop, the
//! Rust form of upstream's `(context, tsi, opaque)` arguments.

use std::any::Any;
use std::future::Future;
use std::panic::Location;
use std::sync::Arc;

use actix::{AsyncContext, Context, SpawnHandle};
use lwsys_messages::state::SystemState;

use super::AttachService;

/// Handed to an attached callback while it runs on the service's loop.
pub struct AttachCtx<'a> {
    pub(super) state: SystemState,
    pub(super) origin: &'static Location<'static>,
    pub(super) ctx: &'a mut Context<AttachService>,
    pub(super) system: Option<&'a Arc<dyn Any + Send + Sync>>,
}

impl AttachCtx<'_> {
    /// The system state now (at or past the state the item asked for).
    pub fn state(&self) -> SystemState {
        self.state
    }

    /// Where `attach` was called for this item.
    pub fn origin(&self) -> &'static Location<'static> {
        self.origin
    }

    /// Starts `fut` on the loop, tied to the attach service: it runs
    /// alongside later callbacks and is dropped when the service stops.
    pub fn spawn<F>(&mut self, fut: F) -> SpawnHandle
    where
        F: Future<Output = ()> + 'static,
    {
        self.ctx.spawn(actix::fut::wrap_future::<_, AttachService>(fut))
    }

    /// The service's actix context, for what [`spawn`](Self::spawn) does
    /// not cover (timers with `run_later`, the service's address). Stopping
    /// it stops the attach service.
    pub fn context(&mut self) -> &mut Context<AttachService> {
        self.ctx
    }

    /// The value the supervisor provided with `SetSystem` (in lwsys the
    /// `SystemHandle`), if it did, it is a `T` and it still exists (in
    /// lwsys: `None` once every `SystemHandle` has been dropped; a callback
    /// that clones it keeps the system alive as any handle does).
    pub fn system<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.system.and_then(|s| s.downcast_ref::<T>())
    }

    /// The value the supervisor provided with `SetSystem`, untyped.
    pub fn system_any(&self) -> Option<&Arc<dyn Any + Send + Sync>> {
        self.system
    }
}
