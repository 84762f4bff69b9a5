//! The built-in `fleet` notifier: with `[fleet] gate_state` set, it defers
//! that state until the broker has accepted the device (CONNACK), so
//! `explain` says "held by fleet: broker unreachable"; the link resumes the
//! walk when it connects. Inline: its verdict is one atomic load.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use lwsys_messages::state::{SystemState, Verdict};

use crate::notifier::InlineNotifier;

const WAITING: u8 = 0;
const UNREACHABLE: u8 = 1;
const ACCEPTED: u8 = 2;

/// The gate's shared link status. Clones share it.
#[derive(Clone, Debug)]
pub struct FleetGate {
    state: SystemState,
    link: Arc<AtomicU8>,
    held: Arc<AtomicBool>,
}

impl FleetGate {
    /// A closed gate on `state`.
    pub fn new(state: SystemState) -> Self {
        Self {
            state,
            link: Arc::new(AtomicU8::new(WAITING)),
            held: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The gated state.
    pub fn state(&self) -> SystemState {
        self.state
    }

    /// The broker accepted the device: open.
    pub fn accepted(&self) {
        self.link.store(ACCEPTED, Ordering::SeqCst);
        self.held.store(false, Ordering::SeqCst);
    }

    /// The broker could not be reached (or the link dropped): closed.
    /// Returns whether that changed the reason the gate gives.
    pub fn unreachable(&self) -> bool {
        self.link.swap(UNREACHABLE, Ordering::SeqCst) != UNREACHABLE
    }

    /// Whether the gate has deferred a walk since it last opened (so a
    /// walk may be parked on it).
    pub fn holding(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// The verdict for entering `target`.
    pub fn verdict(&self, target: SystemState) -> Verdict {
        if target != self.state {
            return Verdict::Allow;
        }
        let v = match self.link.load(Ordering::SeqCst) {
            ACCEPTED => return Verdict::Allow,
            UNREACHABLE => Verdict::defer("broker unreachable"),
            _ => Verdict::defer("waiting for broker"),
        };
        self.held.store(true, Ordering::SeqCst);
        v
    }
}

impl InlineNotifier for FleetGate {
    fn consent(&mut self, _current: SystemState, target: SystemState) -> Verdict {
        self.verdict(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_defers_only_its_state_until_the_broker_accepts() {
        let g = FleetGate::new(SystemState::Registered);
        assert_eq!(g.verdict(SystemState::PolicyValid), Verdict::Allow);
        assert_eq!(g.verdict(SystemState::Registered), Verdict::defer("waiting for broker"));
        assert!(g.holding(), "it deferred");
        assert!(g.unreachable(), "the reason changed");
        assert!(!g.unreachable(), "and not again");
        assert_eq!(g.verdict(SystemState::Registered), Verdict::defer("broker unreachable"));
        g.clone().accepted();
        assert!(!g.holding());
        assert_eq!(g.verdict(SystemState::Registered), Verdict::Allow);
    }
}
