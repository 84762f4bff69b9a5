//! The supervisor's notifier requests: registering (actor or inline),
//! unregistering, `Resume`, listing and explaining, and what a notifier
//! leaving does to a round or a parked walk.

use std::sync::Arc;

use actix::prelude::*;
use lwsys_messages::state::Resume;
use lwsys_messages::supervisor::{
    Explain, Explanation, ListNotifiers, NotifierError, NotifierEventKind, NotifierKind, Pending,
    RegisterNotifier, Unregister,
};
use slog::info;

use super::registry::Kind;
use super::Supervisor;
use crate::notifier::InlineNotifier;

impl Supervisor {
    /// Remove a notifier: a round waiting on it goes on without it, and a
    /// walk it holds continues.
    pub(super) fn drop_notifier(&mut self, id: u64, why: &str, ctx: &mut Context<Self>) {
        let Some(n) = self.registry.remove(id) else { return };
        info!(self.log, "notifier unregistered"; "notifier" => %n.name, "why" => why);
        self.emit_notifier(NotifierEventKind::Unregistered, n.name.clone(), Some(why));
        self.departed(id, n.name.clone());
        if let Some(round) = self.round.as_mut() {
            round.gone(id);
        }
        self.resume_parked(&n.name);
        if self.awaiting.as_ref().is_some_and(|a| a.id == id) {
            // Its answer, should it come, is for nobody now.
            self.awaiting = None;
            self.continue_round(ctx);
        }
    }

    /// Register a notifier; one it replaces (a stopped actor with its
    /// name) has left, for the journal.
    fn add_notifier(&mut self, name: &str, kind: Kind) -> Result<u64, NotifierError> {
        let (id, replaced) = self.registry.add(name, kind)?;
        if let Some((old, name)) = replaced {
            self.departed(old, name);
        }
        Ok(id)
    }

    /// The journal keeps the name of a notifier that left for the rounds
    /// that name it.
    pub(super) fn departed(&mut self, id: u64, name: Arc<str>) {
        let in_flight = self.round.as_ref().map_or(&[][..], |r| r.asked());
        self.journal.departed(id, name, in_flight);
    }

    /// The journal, with names.
    pub(super) fn journal_entries(&self) -> Vec<lwsys_messages::state::JournalEntry> {
        self.journal.entries(|id| self.registry.name_of(id))
    }

    /// Move the walks parked by `name` back to the front of the queue.
    pub(super) fn resume_parked(&mut self, name: &str) -> bool {
        let mut resumed = false;
        let mut i = self.parked.len();
        while i > 0 {
            i -= 1;
            if self.parked[i].parked_by().is_some_and(|p| &*p.by == name) {
                let mut w = self.parked.remove(i);
                w.unpark();
                self.queue.push_front(w);
                resumed = true;
            }
        }
        resumed
    }
}

impl Handler<Resume> for Supervisor {
    type Result = bool;

    fn handle(&mut self, msg: Resume, ctx: &mut Self::Context) -> bool {
        let awaited = self.awaiting.as_ref().and_then(|a| self.registry.name_of(a.id));
        if awaited.as_deref() == Some(msg.name.as_str()) {
            if let Some(r) = self.round.as_mut() {
                r.note_early_resume();
            }
            return true;
        }
        let resumed = self.resume_parked(&msg.name);
        if resumed {
            info!(self.log, "walk resumed"; "by" => &msg.name);
            self.pump(ctx);
        }
        resumed
    }
}

impl Handler<RegisterNotifier> for Supervisor {
    type Result = Result<u64, NotifierError>;

    fn handle(&mut self, msg: RegisterNotifier, _ctx: &mut Self::Context) -> Self::Result {
        let name = msg.name.clone();
        let kind = Kind::Actor {
            consent: msg.consent,
            changed: msg.changed,
            aborted: msg.aborted,
            kind: msg.kind,
        };
        let id = self.add_notifier(&name, kind)?;
        info!(self.log, "notifier registered"; "notifier" => &name, "kind" => %msg.kind);
        self.emit_notifier(NotifierEventKind::Registered, Arc::from(name), None);
        Ok(id)
    }
}

/// Register an inline notifier, run on the supervisor's thread. Replies
/// with its registry id.
#[derive(Message)]
#[rtype(result = "Result<u64, NotifierError>")]
pub struct RegisterInline {
    /// A unique name, 1 to 64 bytes.
    pub name: String,
    /// The notifier.
    pub notifier: Box<dyn InlineNotifier>,
}

impl Handler<RegisterInline> for Supervisor {
    type Result = Result<u64, NotifierError>;

    fn handle(&mut self, msg: RegisterInline, _ctx: &mut Self::Context) -> Self::Result {
        let id = self.add_notifier(&msg.name, Kind::Inline(msg.notifier))?;
        info!(self.log, "notifier registered"; "notifier" => &msg.name, "kind" => %NotifierKind::Inline);
        self.emit_notifier(NotifierEventKind::Registered, Arc::from(msg.name), None);
        Ok(id)
    }
}

impl Handler<Unregister> for Supervisor {
    type Result = Result<(), NotifierError>;

    fn handle(&mut self, msg: Unregister, ctx: &mut Self::Context) -> Self::Result {
        let id = self.registry.find(&msg.name).ok_or_else(|| {
            NotifierError::NotFound(lwsys_messages::supervisor::preview(&msg.name))
        })?;
        self.drop_notifier(id, "requested", ctx);
        self.pump(ctx);
        Ok(())
    }
}

impl Handler<Explain> for Supervisor {
    type Result = MessageResult<Explain>;

    fn handle(&mut self, _msg: Explain, _ctx: &mut Self::Context) -> Self::Result {
        let parked: Vec<Pending> =
            self.parked.iter().filter_map(|w| w.parked_by().cloned()).collect();
        MessageResult(Explanation {
            state: self.current,
            since_us: self.since_us,
            pending: parked.first().cloned(),
            parked,
            journal: self.journal_entries(),
        })
    }
}

impl Handler<ListNotifiers> for Supervisor {
    type Result = MessageResult<ListNotifiers>;

    fn handle(&mut self, _msg: ListNotifiers, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.registry.infos())
    }
}
