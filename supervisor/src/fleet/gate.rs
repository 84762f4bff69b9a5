//! The built-in `fleet` notifier: with `[fleet] gate_state` set, it defers
//! that state until the broker has accepted the device (CONNACK), so
//! `explain` says "held by fleet: broker unreachable"; the link resumes the
//! walk when it connects. Inline: its verdict is one atomic load.

use std::sync::atomic::{AtomicU8, Ordering};
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
}

impl FleetGate {
    /// A closed gate on `state`.
    pub fn new(state: SystemState) -> Self {
        Self { state, link: Arc::new(AtomicU8::new(WAITING)) }
    }

    /// The gated state.
    pub fn state(&self) -> SystemState {
        self.state
    }

    /// The broker accepted the device: open.
    pub fn accepted(&self) {
        self.link.store(ACCEPTED, Ordering::SeqCst);
    }

    /// The broker could not be reached (or the link dropped): closed.
    pub fn unreachable(&self) {
        self.link.store(UNREACHABLE, Ordering::SeqCst);
    }

    /// The verdict for entering `target`.
    pub fn verdict(&self, target: SystemState) -> Verdict {
        if target != self.state {
            return Verdict::Allow;
        }
        match self.link.load(Ordering::SeqCst) {
            ACCEPTED => Verdict::Allow,
            UNREACHABLE => Verdict::defer("broker unreachable"),
            _ => Verdict::defer("waiting for broker"),
        }
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
        g.unreachable();
        assert_eq!(g.verdict(SystemState::Registered), Verdict::defer("broker unreachable"));
        g.clone().accepted();
        assert_eq!(g.verdict(SystemState::Registered), Verdict::Allow);
    }
}
