//! What a session is sent unasked, turned into [`Event`] lines: consent
//! requests and outcomes for a connection that registered as a notifier,
//! and the topic events it subscribed to.

use actix::prelude::*;
use lwsys_messages::protocol::Event;
use lwsys_messages::protocol::SystemEvent;
use lwsys_messages::state::{Aborted, Changed, Consent, Verdict};
use tokio::sync::oneshot;

use super::ControlSession;

impl ControlSession {
    /// Push an event the client subscribed to.
    pub(super) fn push_event(&mut self, ev: &SystemEvent, ctx: &mut Context<Self>) {
        if ev.topic().is_some_and(|t| self.topics.contains(&t)) {
            self.send_line(ev, ctx);
        }
    }
}

impl Handler<Consent> for ControlSession {
    type Result = ResponseFuture<Verdict>;

    fn handle(&mut self, msg: Consent, ctx: &mut Self::Context) -> Self::Result {
        // The supervisor runs one round at a time, so any older ticket is
        // stale from now on.
        self.tickets.clear();
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let (tx, rx) = oneshot::channel();
        self.tickets.insert(ticket, tx);
        // A round that changes nothing is the health round.
        let check = (msg.current == msg.target).then(|| "health".to_owned());
        let ev = Event::Consent { ticket, current: msg.current, target: msg.target, check };
        self.send_line(&ev, ctx);
        // Forget the ticket once the supervisor has stopped waiting, so a
        // late reply is answered as stale.
        ctx.run_later(self.env.consent_timeout, move |act, _| {
            act.tickets.remove(&ticket);
        });
        Box::pin(async move { rx.await.unwrap_or_else(|_| Verdict::defer("ticket expired")) })
    }
}

impl Handler<Changed> for ControlSession {
    type Result = ();

    fn handle(&mut self, msg: Changed, ctx: &mut Self::Context) {
        self.send_line(&Event::Changed { from: msg.from, to: msg.to }, ctx);
    }
}

impl Handler<Aborted> for ControlSession {
    type Result = ();

    fn handle(&mut self, msg: Aborted, ctx: &mut Self::Context) {
        self.send_line(&Event::Aborted { current: msg.current, target: msg.target }, ctx);
    }
}

impl Handler<SystemEvent> for ControlSession {
    type Result = ();

    fn handle(&mut self, msg: SystemEvent, ctx: &mut Self::Context) {
        self.push_event(&msg, ctx);
    }
}
