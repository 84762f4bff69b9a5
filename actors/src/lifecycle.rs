//! What a supervised service carries so that its supervisor learns when it
//! stops: a [`DeathNotice`] whose drop (when the actor is dropped, after a
//! normal stop or a panic in a handler) sends `ServiceDied`.

use actix::Recipient;
use lwsys_messages::lifecycle::ServiceDied;
use lwsys_messages::supervisor::ServiceKind;

/// Tells a supervisor, once, that the service holding it is gone.
pub struct DeathNotice {
    service: ServiceKind,
    to: Option<Recipient<ServiceDied>>,
}

impl DeathNotice {
    /// A notice for `service` that nobody watches yet.
    pub fn new(service: ServiceKind) -> Self {
        Self { service, to: None }
    }

    /// Tell `to` when the service is gone.
    pub fn watch(&mut self, to: Recipient<ServiceDied>) {
        self.to = Some(to);
    }

    /// Tell nobody: the service is being stopped on purpose (its system is
    /// torn down), and a death report would only ask for a restart.
    pub fn forget(&mut self) {
        self.to = None;
    }
}

impl Drop for DeathNotice {
    fn drop(&mut self) {
        // Runs while a panicking handler unwinds too; do_send neither
        // blocks nor panics.
        if let Some(to) = self.to.take() {
            to.do_send(ServiceDied { service: self.service });
        }
    }
}
