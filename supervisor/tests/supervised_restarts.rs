//! The Supervisor restarts services it knows only through the
//! `Supervised` trait: any set of services a library user supervises, by
//! kind, within the restart limits, and gives up past them.
// Unwrap is fine in tests, but clippy's allow-unwrap-in-tests only covers
// `#[test]` functions, not this file's helpers.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;

/// Services the supervisor knows only through `Supervised`: records the
/// kinds it is asked to restart.
struct FakeServices(Arc<Mutex<Vec<lwsys::messages::supervisor::ServiceKind>>>);

impl lwsys::supervision::Supervised for FakeServices {
    fn notifiers(&self) -> Vec<String> {
        Vec::new()
    }

    fn restart(
        &mut self,
        kind: lwsys::messages::supervisor::ServiceKind,
        _deaths: &Recipient<lwsys::messages::lifecycle::ServiceDied>,
    ) -> Result<Option<lwsys::messages::supervisor::RegisterNotifier>, String> {
        self.0.lock().unwrap().push(kind);
        Ok(None)
    }

    fn stop_all(&mut self) {}
}

#[actix_rt::test]
async fn the_supervisor_restarts_any_supervised_services_by_kind_within_the_limits() {
    use lwsys::messages::lifecycle::ServiceDied;
    use lwsys::messages::supervisor::ServiceKind;
    use lwsys::supervision::{RestartLimits, Supervision};
    use lwsys::supervisor::{RunState, Supervisor, SupervisorConfig};

    let log = slog::Logger::root(slog::Discard, slog::o!());
    let state = lwsys_actors::StateService::new(&log).start();
    let mut sup = Supervisor::new(&log, SupervisorConfig::default(), state, Vec::new()).unwrap();
    let restarted = Arc::new(Mutex::new(Vec::new()));
    let limits = RestartLimits { max: 2, window: Duration::from_secs(60) };
    sup.supervise(Supervision::new(Box::new(FakeServices(restarted.clone())), limits));
    let mut run = sup.shutdown_watch();
    let addr = sup.start();
    addr.send(ServiceDied { service: ServiceKind::Trust }).await.unwrap();
    addr.send(ServiceDied { service: ServiceKind::Ota }).await.unwrap();
    assert_eq!(*restarted.lock().unwrap(), [ServiceKind::Trust, ServiceKind::Ota]);
    assert_eq!(*run.borrow(), RunState::Running);
    // A third death within the 60 s window is one too many (max 2).
    addr.send(ServiceDied { service: ServiceKind::Trust }).await.unwrap();
    run.wait_for(|s| *s != RunState::Running).await.unwrap();
    assert_eq!(
        *run.borrow(),
        RunState::Failed("the trust service died 3 times within 60 s".into())
    );
    assert_eq!(restarted.lock().unwrap().len(), 2, "no restart past the limit");
}
