//! Supervision of services: how often a dead service may be restarted
//! (OTP style, at most `max` in any `window`, then the system gives up),
//! and the small trait through which the `Supervisor` restarts and stops
//! services without knowing which ones a system runs.
//!
//! Death detection is the services' own: each reports `ServiceDied` to the
//! recipient it was given (`WatchDeath`) when it stops for any reason. No
//! backoff is applied between restarts: a service restarts at once, and one
//! that keeps dying exhausts its window quickly and the system gives up.

use std::collections::VecDeque;
use std::time::Duration;

use actix::Recipient;
use lwsys_messages::lifecycle::ServiceDied;
use lwsys_messages::supervisor::{RegisterNotifier, ServiceKind};
use tokio::time::Instant;

/// How often a dead service may be restarted (OTP style: at most `max` in
/// any `window`); past that the supervisor gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartLimits {
    /// Restarts allowed within `window`.
    pub max: usize,
    /// The sliding window.
    pub window: Duration,
}

impl Default for RestartLimits {
    fn default() -> Self {
        Self { max: 5, window: Duration::from_secs(60) }
    }
}

/// Services the supervisor restarts when one dies.
pub trait Supervised: Send + 'static {
    /// The names of the notifiers among these services (the clock), whose
    /// place in the consent order a restarted one takes over.
    fn notifiers(&self) -> Vec<String>;

    /// Start `kind` afresh in place of the dead one, its own death
    /// reported to `deaths`. When the new service is a notifier, its
    /// registration, to be put in the dead one's place.
    fn restart(
        &mut self,
        kind: ServiceKind,
        deaths: &Recipient<ServiceDied>,
    ) -> Result<Option<RegisterNotifier>, String>;

    /// Stop every service (the system is torn down, or its build failed).
    fn stop_all(&mut self);
}

/// The restarts within the window, against the limits.
#[derive(Debug)]
pub struct Restarts {
    limits: RestartLimits,
    times: VecDeque<Instant>,
}

impl Restarts {
    /// No restarts yet.
    pub fn new(limits: RestartLimits) -> Self {
        Self { limits, times: VecDeque::new() }
    }

    /// `service` died at `now`. `Ok(n)`: restart it, the n-th restart in
    /// the window; `Err(why)`: it died too often, give up.
    pub fn on_death(&mut self, service: &str, now: Instant) -> Result<usize, String> {
        let window = self.limits.window;
        while self.times.front().is_some_and(|t| now.duration_since(*t) >= window) {
            self.times.pop_front();
        }
        if self.times.len() >= self.limits.max {
            return Err(format!(
                "the {service} service died {} times within {} s",
                self.times.len() + 1,
                window.as_secs()
            ));
        }
        self.times.push_back(now);
        Ok(self.times.len())
    }

    /// Restarts in the current window.
    pub fn count(&self) -> usize {
        self.times.len()
    }
}

/// What the supervisor needs to restart services: the services, the
/// restart bookkeeping, and where their notifiers sit in the consent
/// order.
pub struct Supervision {
    services: Box<dyn Supervised>,
    restarts: Restarts,
    /// Each notifier among the services, and its registry id once known.
    notifiers: Vec<(String, Option<u64>)>,
}

impl Supervision {
    /// Supervise `services` within `limits`.
    pub fn new(services: Box<dyn Supervised>, limits: RestartLimits) -> Self {
        let notifiers = services.notifiers().into_iter().map(|n| (n, None)).collect();
        Self { services, restarts: Restarts::new(limits), notifiers }
    }

    /// The restart bookkeeping.
    pub fn restarts(&mut self) -> &mut Restarts {
        &mut self.restarts
    }

    /// The services.
    pub fn services(&mut self) -> &mut dyn Supervised {
        &mut *self.services
    }

    /// Learn the registry ids of the services' notifiers through `find`.
    pub fn locate_notifiers(&mut self, find: impl Fn(&str) -> Option<u64>) {
        for (name, id) in &mut self.notifiers {
            *id = find(name);
        }
    }

    /// The last known registry id of the notifier `name`.
    pub fn notifier_id(&self, name: &str) -> Option<u64> {
        self.notifiers.iter().find(|(n, _)| n == name).and_then(|(_, id)| *id)
    }

    /// Remember that the notifier `name` now has registry id `id`.
    pub fn set_notifier_id(&mut self, name: &str, id: u64) {
        if let Some(slot) = self.notifiers.iter_mut().find(|(n, _)| n == name) {
            slot.1 = Some(id);
        }
    }

    /// Stop the services.
    pub fn stop_all(&mut self) {
        self.services.stop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_may_restart_max_times_per_window_then_the_system_gives_up() {
        let mut r = Restarts::new(RestartLimits { max: 2, window: Duration::from_secs(60) });
        let t0 = Instant::now();
        assert_eq!(r.on_death("clock", t0), Ok(1));
        assert_eq!(r.on_death("clock", t0 + Duration::from_secs(1)), Ok(2));
        assert_eq!(
            r.on_death("clock", t0 + Duration::from_secs(2)),
            Err("the clock service died 3 times within 60 s".to_owned())
        );
        // 60 s after the first restart it has left the window.
        assert_eq!(r.on_death("clock", t0 + Duration::from_secs(60)), Ok(2));
        assert_eq!(r.count(), 2);
    }

    #[test]
    fn no_restarts_allowed_means_the_first_death_gives_up() {
        let mut r = Restarts::new(RestartLimits { max: 0, window: Duration::from_secs(5) });
        assert!(r.on_death("blobs", Instant::now()).is_err());
    }
}
