//! Notifiers as the library user gives them: the inline kind run on the
//! supervisor's thread, the specs given at build time, and the
//! registration message of an actor notifier. Kept apart from the
//! supervisor, the builder and the handle, which all use them, so none of
//! those needs another for these.

use actix::{Actor, Addr, Handler};
use lwsys_messages::state::{Aborted, Changed, Consent, SystemState, Verdict};
use lwsys_messages::supervisor::{NotifierKind, RegisterNotifier};

/// A notifier run on the supervisor's own thread, the fast path (like lws's
/// C callbacks). It must not block: anything slow belongs in an actor
/// notifier. Any `FnMut(current, target) -> Verdict` closure is one.
pub trait InlineNotifier: Send + 'static {
    /// May the system go from `current` to `target`?
    fn consent(&mut self, current: SystemState, target: SystemState) -> Verdict;

    /// The state changed (after every commit).
    fn changed(&mut self, _changed: Changed) {}

    /// A transition this notifier allowed was not made.
    fn aborted(&mut self, _current: SystemState, _target: SystemState) {}

    /// Whether [`InlineNotifier::changed`] is worth calling; asked once,
    /// at registration. A closure's is not (it only answers consent), so
    /// a state change costs nothing per closure.
    fn hears_changes(&self) -> bool {
        true
    }
}

impl<F> InlineNotifier for F
where
    F: FnMut(SystemState, SystemState) -> Verdict + Send + 'static,
{
    fn consent(&mut self, current: SystemState, target: SystemState) -> Verdict {
        self(current, target)
    }

    fn hears_changes(&self) -> bool {
        false
    }
}

/// A notifier given at build time.
pub enum NotifierSpec {
    /// Run on the supervisor's thread.
    Inline(String, Box<dyn InlineNotifier>),
    /// An actor asked by message.
    Actor(RegisterNotifier),
}

impl NotifierSpec {
    /// An inline notifier (any `FnMut(current, target) -> Verdict`).
    pub fn inline(name: &str, f: impl InlineNotifier) -> Self {
        Self::Inline(name.to_owned(), Box::new(f))
    }

    /// An actor notifier.
    pub fn actor<A>(name: &str, addr: &Addr<A>) -> Self
    where
        A: Actor + Handler<Consent> + Handler<Changed> + Handler<Aborted>,
        A::Context: actix::dev::ToEnvelope<A, Consent>
            + actix::dev::ToEnvelope<A, Changed>
            + actix::dev::ToEnvelope<A, Aborted>,
    {
        Self::Actor(actor_registration(name, addr, NotifierKind::Actor))
    }
}

/// Build a [`RegisterNotifier`] for an actor.
pub fn actor_registration<A>(name: &str, addr: &Addr<A>, kind: NotifierKind) -> RegisterNotifier
where
    A: Actor + Handler<Consent> + Handler<Changed> + Handler<Aborted>,
    A::Context: actix::dev::ToEnvelope<A, Consent>
        + actix::dev::ToEnvelope<A, Changed>
        + actix::dev::ToEnvelope<A, Aborted>,
{
    RegisterNotifier {
        name: name.to_owned(),
        consent: addr.clone().recipient(),
        changed: addr.clone().recipient(),
        aborted: addr.clone().recipient(),
        kind,
    }
}
