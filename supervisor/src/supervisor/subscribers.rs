//! The supervisor's event subscribers: who is told of every system event,
//! how dead ones are dropped, and how many are kept.

use std::sync::Arc;

use actix::prelude::*;
use lwsys_messages::protocol::{Subscribe, SystemEvent};
use lwsys_messages::supervisor::NotifierEventKind;

use super::Supervisor;

impl Supervisor {
    pub(super) fn emit(&mut self, ev: SystemEvent) {
        self.subscribers.retain(|s| s.connected());
        for s in &self.subscribers {
            s.do_send(ev.clone());
        }
    }

    pub(super) fn emit_notifier(
        &mut self,
        kind: NotifierEventKind,
        name: Arc<str>,
        reason: Option<&str>,
    ) {
        if !self.subscribers.is_empty() {
            self.emit(SystemEvent::Notifier { kind, name, reason: reason.map(str::to_owned) });
        }
    }
}

/// A service's event (such as `ota` progress or a clock sync):
/// passed on to every subscriber.
impl Handler<SystemEvent> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: SystemEvent, _ctx: &mut Self::Context) {
        self.emit(msg);
    }
}

impl Handler<Subscribe> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Self::Context) {
        // Subscribers that went away are otherwise dropped only at the
        // next event, which may be long coming: without this, clients that
        // subscribe and hang up would pile up here.
        self.subscribers.retain(|s| s.connected());
        self.subscribers.push(msg.0);
    }
}

/// Drop a subscriber now: its connection closed. Without it the dead
/// recipient would go only at the next event or subscribe.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Unsubscribe(pub(crate) Recipient<SystemEvent>);

impl Handler<Unsubscribe> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _ctx: &mut Self::Context) {
        self.subscribers.retain(|s| *s != msg.0 && s.connected());
    }
}

/// How many event subscribers are kept, dead or alive (so it shows
/// whether closed connections were removed), for `system.info`.
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) struct CountSubscribers;

impl Handler<CountSubscribers> for Supervisor {
    type Result = usize;

    fn handle(&mut self, _msg: CountSubscribers, _ctx: &mut Self::Context) -> usize {
        self.subscribers.len()
    }
}
