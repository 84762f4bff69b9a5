//! `ClockForwarder`: turns the clock service's `ClockEvent`s into
//! `SystemEvent::Clock` events (`{"kind": ..., "event": "clock"}` on the
//! wire) sent to the Supervisor, which broadcasts them to its subscribers, so protocol
//! clients subscribed to the `clock` topic see them.

use actix::prelude::*;
use lwsys_messages::clock::ClockEvent;
use lwsys_messages::protocol::SystemEvent;

/// Forwards clock events to the Supervisor. See the module docs.
pub struct ClockForwarder {
    to: Recipient<SystemEvent>,
}

impl ClockForwarder {
    /// A forwarder sending to `to` (the Supervisor).
    pub fn new(to: Recipient<SystemEvent>) -> Self {
        Self { to }
    }
}

impl Actor for ClockForwarder {
    type Context = Context<Self>;
}

impl Handler<lwsys_messages::lifecycle::Stop> for ClockForwarder {
    type Result = ();

    /// Its system is torn down.
    fn handle(&mut self, _msg: lwsys_messages::lifecycle::Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<ClockEvent> for ClockForwarder {
    type Result = ();

    fn handle(&mut self, msg: ClockEvent, _ctx: &mut Self::Context) {
        self.to.do_send(SystemEvent::Clock(msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lwsys_messages::protocol::Topic;

    #[test]
    fn clock_events_carry_the_clock_topic_and_their_kind() {
        let ev =
            ClockEvent::Failed { reason: "timeout".into(), server: "s".into(), retry_in_ms: 7 };
        let sys = SystemEvent::Clock(ev);
        assert_eq!(sys.topic(), Some(Topic::Clock));
        let v = sys.to_json();
        assert_eq!(v["event"], "clock");
        assert_eq!(v["kind"], "failed");
        assert_eq!(v["retry_in_ms"], 7);
    }
}
