//! The notifier registry: who is asked for consent, in registration order.

use std::sync::Arc;

use actix::Recipient;
use lwsys_messages::state::{Aborted, Changed, Consent, SystemState};
use lwsys_messages::supervisor::{NotifierError, NotifierInfo, NotifierKind};

use crate::consent::Roster;
use crate::notifier::InlineNotifier;

/// How a notifier is reached.
pub(crate) enum Kind {
    Inline(Box<dyn InlineNotifier>),
    Actor {
        consent: Recipient<Consent>,
        changed: Recipient<Changed>,
        aborted: Recipient<Aborted>,
        kind: NotifierKind,
    },
}

impl Kind {
    pub(crate) fn aborted(&mut self, current: SystemState, target: SystemState) {
        match self {
            Self::Inline(f) => f.aborted(current, target),
            Self::Actor { aborted, .. } => aborted.do_send(Aborted { current, target }),
        }
    }

    fn changed(&mut self, ch: Changed) {
        match self {
            Self::Inline(f) => f.changed(ch),
            Self::Actor { changed, .. } => changed.do_send(ch),
        }
    }

    fn label(&self) -> NotifierKind {
        match self {
            Self::Inline(_) => NotifierKind::Inline,
            Self::Actor { kind, .. } => *kind,
        }
    }

    fn is_dead(&self) -> bool {
        matches!(self, Self::Actor { consent, .. } if !consent.connected())
    }
}

pub(crate) struct Notifier {
    /// Increasing with registration, so the list is ordered by id.
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    pub(crate) kind: Kind,
}

/// The notifiers, in registration order.
#[derive(Default)]
pub(crate) struct Registry {
    list: Vec<Notifier>,
    last_id: u64,
}

impl Registry {
    /// Add a notifier; a dead actor notifier holding the name is replaced.
    pub(crate) fn add(&mut self, name: &str, kind: Kind) -> Result<u64, NotifierError> {
        if !lwsys_messages::supervisor::is_valid_notifier_name(name) {
            return Err(NotifierError::BadName(lwsys_messages::supervisor::preview(name)));
        }
        if let Some(pos) = self.list.iter().position(|n| &*n.name == name) {
            if !self.list[pos].kind.is_dead() {
                return Err(NotifierError::Duplicate(name.to_owned()));
            }
            self.list.remove(pos);
        }
        self.last_id += 1;
        self.list.push(Notifier { id: self.last_id, name: Arc::from(name), kind });
        Ok(self.last_id)
    }

    /// Put `kind` in place of the notifier `name` (keeping its place in
    /// the consent order), or back at id `id`'s place if it was dropped
    /// meanwhile, or at the end. Returns its id.
    pub(crate) fn put(&mut self, id: Option<u64>, name: &str, kind: Kind) -> u64 {
        if let Some(n) = self.list.iter_mut().find(|n| &*n.name == name) {
            n.kind = kind;
            return n.id;
        }
        let id = match id {
            Some(id) if self.index(id).is_none() => id,
            _ => {
                self.last_id += 1;
                self.last_id
            }
        };
        let at = self.list.partition_point(|n| n.id < id);
        self.list.insert(at, Notifier { id, name: Arc::from(name), kind });
        id
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// The notifier at `index` in consent order.
    pub(crate) fn at_mut(&mut self, index: usize) -> Option<&mut Notifier> {
        self.list.get_mut(index)
    }

    fn index(&self, id: u64) -> Option<usize> {
        self.list.binary_search_by_key(&id, |n| n.id).ok()
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Notifier> {
        let i = self.index(id)?;
        self.list.get_mut(i)
    }

    pub(crate) fn name_of(&self, id: u64) -> Option<Arc<str>> {
        self.index(id).map(|i| self.list[i].name.clone())
    }

    pub(crate) fn find(&self, name: &str) -> Option<u64> {
        self.list.iter().find(|n| &*n.name == name).map(|n| n.id)
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<Notifier> {
        self.index(id).map(|i| self.list.remove(i))
    }

    pub(crate) fn tell_changed(&mut self, ch: Changed) {
        for n in &mut self.list {
            n.kind.changed(ch);
        }
    }

    pub(crate) fn infos(&self) -> Vec<NotifierInfo> {
        self.list
            .iter()
            .map(|n| NotifierInfo { name: n.name.clone(), kind: n.kind.label() })
            .collect()
    }
}

impl Roster for Registry {
    /// Checks `hint` first and uses it unless the registry changed since
    /// the last notifier was asked: the common case costs no search.
    fn next_after(&self, id: u64, hint: usize) -> Option<(usize, u64)> {
        let fits = self.list.get(hint).is_some_and(|n| n.id > id)
            && (hint == 0 || self.list.get(hint - 1).is_some_and(|p| p.id <= id));
        let i = if fits || hint == self.list.len() && self.list.last().is_none_or(|l| l.id <= id) {
            hint
        } else {
            self.list.partition_point(|n| n.id <= id)
        };
        self.list.get(i).map(|n| (i, n.id))
    }
}
