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

    /// Whether it is told about changes: a closure only answers consent,
    /// so calling it after each commit would cost a call for nothing.
    fn hears_changes(&self) -> bool {
        match self {
            Self::Inline(f) => f.hears_changes(),
            Self::Actor { .. } => true,
        }
    }
}

pub(crate) struct Notifier {
    /// Increasing with registration, so the list is ordered by id.
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    pub(crate) kind: Kind,
    /// `kind.hears_changes()`, asked once.
    hears: bool,
}

impl Notifier {
    fn new(id: u64, name: &str, kind: Kind) -> Self {
        let hears = kind.hears_changes();
        Self { id, name: Arc::from(name), kind, hears }
    }
}

/// A notifier that a new one with its name replaced (an actor that had
/// stopped): its id and name.
pub(crate) type Replaced = Option<(u64, Arc<str>)>;

/// The notifiers, in registration order.
#[derive(Default)]
pub(crate) struct Registry {
    list: Vec<Notifier>,
    last_id: u64,
    /// How many are told about changes (see `Kind::hears_changes`).
    hearing: usize,
    /// How many are actors (their verdicts are journaled in full).
    actors: usize,
}

impl Registry {
    /// Add a notifier; a dead actor notifier holding the name is replaced
    /// (and returned).
    pub(crate) fn add(&mut self, name: &str, kind: Kind) -> Result<(u64, Replaced), NotifierError> {
        if !lwsys_messages::supervisor::is_valid_notifier_name(name) {
            return Err(NotifierError::BadName(lwsys_messages::supervisor::preview(name)));
        }
        let mut replaced = None;
        if let Some(pos) = self.list.iter().position(|n| &*n.name == name) {
            if !self.list[pos].kind.is_dead() {
                return Err(NotifierError::Duplicate(name.to_owned()));
            }
            let old = self.list.remove(pos);
            replaced = Some((old.id, old.name));
        }
        self.last_id += 1;
        self.list.push(Notifier::new(self.last_id, name, kind));
        self.recount();
        Ok((self.last_id, replaced))
    }

    /// Put `kind` in place of the notifier `name` (keeping its place in
    /// the consent order), or back at id `id`'s place if it was dropped
    /// meanwhile, or at the end. Returns its id.
    pub(crate) fn put(&mut self, id: Option<u64>, name: &str, kind: Kind) -> u64 {
        if let Some(n) = self.list.iter_mut().find(|n| &*n.name == name) {
            n.hears = kind.hears_changes();
            n.kind = kind;
            let id = n.id;
            self.recount();
            return id;
        }
        let id = match id {
            Some(id) if self.index(id).is_none() => id,
            _ => {
                self.last_id += 1;
                self.last_id
            }
        };
        let at = self.list.partition_point(|n| n.id < id);
        self.list.insert(at, Notifier::new(id, name, kind));
        self.recount();
        id
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// The notifiers from `index` on, in consent order, with their
    /// indexes.
    #[inline]
    pub(crate) fn iter_from(
        &mut self,
        index: usize,
    ) -> impl Iterator<Item = (usize, &mut Notifier)> {
        let from = index.min(self.list.len());
        (from..).zip(self.list[from..].iter_mut())
    }

    /// The ids of the notifiers at `from..end` in consent order.
    #[inline]
    pub(crate) fn ids(&self, from: usize, end: usize) -> impl Iterator<Item = u64> + '_ {
        let end = end.min(self.list.len());
        self.list[from.min(end)..end].iter().map(|n| n.id)
    }

    /// The notifier at `index` in consent order.
    #[inline]
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
        self.name_ref(id).cloned()
    }

    pub(crate) fn name_ref(&self, id: u64) -> Option<&Arc<str>> {
        self.index(id).map(|i| &self.list[i].name)
    }

    pub(crate) fn find(&self, name: &str) -> Option<u64> {
        self.list.iter().find(|n| &*n.name == name).map(|n| n.id)
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<Notifier> {
        let n = self.index(id).map(|i| self.list.remove(i));
        self.recount();
        n
    }

    fn recount(&mut self) {
        self.hearing = self.list.iter().filter(|n| n.hears).count();
        self.actors = self.list.iter().filter(|n| matches!(n.kind, Kind::Actor { .. })).count();
    }

    /// How many notifiers are actors.
    pub(crate) fn actors(&self) -> usize {
        self.actors
    }

    /// Whether any notifier is told about changes.
    pub(crate) fn anyone_hears(&self) -> bool {
        self.hearing > 0
    }

    pub(crate) fn tell_changed(&mut self, ch: Changed) {
        if self.hearing == 0 {
            return;
        }
        for n in self.list.iter_mut().filter(|n| n.hears) {
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
    #[inline]
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
