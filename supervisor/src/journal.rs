//! The journal of consent rounds: the newest `journal_len` rounds, oldest
//! first, kept by the `Supervisor`, which is the only one that writes or
//! reads it (`state.explain`, and the last words of a torn-down system).
//!
//! It is kept compact because every transition writes to it: a round lists
//! the ids of the notifiers it asked, and only the verdicts that are not an
//! inline `Allow` (a `Defer`, a `Deny`, or any actor's answer, with its
//! latency) are kept in full beside them. Names are looked up when the
//! journal is read; a notifier that has left keeps its name here for as
//! long as a kept round names it. A round writes into the buffers of the
//! round it pushes out, so a full journal allocates nothing per round.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use lwsys_messages::state::{JournalEntry, NotifierVerdict, RoundOutcome, SystemState, Verdict};

/// How many consent rounds the journal keeps unless configured otherwise.
pub const DEFAULT_JOURNAL_LEN: usize = 256;

/// A verdict kept in full: anything but an inline notifier's `Allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    /// Where the notifier is in its round's `asked` list.
    pub at: u32,
    /// What it answered (`Defer { reason: "timeout" }` for silence).
    pub verdict: Verdict,
    /// How long its answer took; `None` for an inline notifier.
    pub latency_us: Option<u64>,
}

/// The lists a round writes its verdicts into, reused from the round the
/// journal drops.
#[derive(Debug, Default)]
pub struct Buffers {
    /// The ids of the notifiers asked, in the order asked.
    pub asked: Vec<u64>,
    /// The verdicts kept in full, in the order given.
    pub detail: Vec<Detail>,
}

impl Buffers {
    /// Each notifier asked, in order, with its verdict kept in full, or
    /// `None` for an inline `Allow`.
    pub fn each(&self) -> impl Iterator<Item = (u64, Option<&Detail>)> {
        let mut detail = self.detail.iter().peekable();
        self.asked
            .iter()
            .enumerate()
            .map(move |(i, id)| (*id, detail.next_if(|d| usize::try_from(d.at).ok() == Some(i))))
    }
}

/// One consent round as the journal keeps it.
#[derive(Debug)]
pub struct Record {
    /// When the round started, in Unix microseconds.
    pub at_us: u64,
    /// The state the system was in.
    pub current: SystemState,
    /// The state proposed.
    pub target: SystemState,
    /// Who was asked and what they said beyond an inline `Allow`.
    pub verdicts: Buffers,
    /// Time spent in inline notifiers, together, in nanoseconds.
    pub inline_ns: u64,
    /// How the round ended.
    pub outcome: RoundOutcome,
}

/// The journal. See the module docs.
#[derive(Debug)]
pub struct Journal {
    len: usize,
    rounds: VecDeque<Record>,
    /// Names of notifiers that left, by id, while a kept round may name
    /// them; pruned when it has doubled since the last prune.
    departed: Vec<(u64, Arc<str>)>,
    pruned_len: usize,
}

impl Journal {
    /// A journal keeping the newest `len` rounds (at least one).
    pub fn new(len: usize) -> Self {
        let len = len.max(1);
        Self {
            len,
            rounds: VecDeque::with_capacity(len.min(1024)),
            departed: Vec::new(),
            pruned_len: 0,
        }
    }

    /// Buffers for a new round of about `expected` notifiers, `detailed`
    /// of which answer with a verdict kept in full (actor notifiers): the
    /// oldest round's, emptied, once the journal is full (the new round
    /// takes its place when it is [`Journal::push`]ed). Sized up front, so
    /// a round of actor notifiers does not grow its list one by one.
    pub fn buffers(&mut self, expected: usize, detailed: usize) -> Buffers {
        if self.rounds.len() >= self.len {
            if let Some(old) = self.rounds.pop_front() {
                let mut b = old.verdicts;
                b.asked.clear();
                b.detail.clear();
                return b;
            }
        }
        Buffers { asked: Vec::with_capacity(expected), detail: Vec::with_capacity(detailed) }
    }

    /// Keep `r`, dropping the oldest round if the journal is full.
    pub fn push(&mut self, r: Record) {
        while self.rounds.len() >= self.len {
            self.rounds.pop_front();
        }
        self.rounds.push_back(r);
    }

    /// The notifier `id`, named `name`, left: keep its name for the rounds
    /// that name it. `in_flight` are the ids the round under way asked
    /// (not yet in the journal).
    pub fn departed(&mut self, id: u64, name: Arc<str>, in_flight: &[u64]) {
        self.departed.push((id, name));
        if self.departed.len() > (self.pruned_len * 2).max(16) {
            let named: HashSet<u64> = self
                .rounds
                .iter()
                .flat_map(|r| r.verdicts.asked.iter())
                .chain(in_flight)
                .copied()
                .collect();
            self.departed.retain(|(id, _)| named.contains(id));
            self.pruned_len = self.departed.len();
        }
    }

    /// The rounds kept, oldest first, with names: `name_of` gives those of
    /// the notifiers still registered.
    pub fn entries(&self, name_of: impl Fn(u64) -> Option<Arc<str>>) -> Vec<JournalEntry> {
        let name = |id: u64| {
            name_of(id)
                .or_else(|| {
                    self.departed.iter().rev().find(|(d, _)| *d == id).map(|(_, n)| n.clone())
                })
                .unwrap_or_else(|| Arc::from(format!("#{id}")))
        };
        self.rounds
            .iter()
            .map(|r| {
                let verdicts = r
                    .verdicts
                    .each()
                    .map(|(id, detail)| {
                        let (verdict, latency_us) = match detail {
                            Some(d) => (d.verdict.clone(), d.latency_us),
                            None => (Verdict::Allow, None),
                        };
                        NotifierVerdict { name: name(id), verdict, latency_us }
                    })
                    .collect();
                JournalEntry {
                    at_us: r.at_us,
                    current: r.current,
                    target: r.target,
                    verdicts,
                    inline_ns: r.inline_ns,
                    outcome: r.outcome.clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SystemState::*;

    fn record(j: &mut Journal, at_us: u64, asked: &[u64], detail: Vec<Detail>) {
        let mut verdicts = j.buffers(asked.len(), 0);
        verdicts.asked.extend_from_slice(asked);
        verdicts.detail = detail;
        j.push(Record {
            at_us,
            current: Initialized,
            target: IfaceColdplug,
            verdicts,
            inline_ns: 3,
            outcome: RoundOutcome::Committed,
        });
    }

    fn names(id: u64) -> Option<Arc<str>> {
        (id < 10).then(|| Arc::from(format!("n{id}")))
    }

    #[test]
    fn it_keeps_the_newest_rounds_up_to_its_bound_and_reuses_their_buffers() {
        let mut j = Journal::new(3);
        for at in 0..5 {
            record(&mut j, at, &[1, 2], Vec::new());
        }
        let at: Vec<u64> = j.entries(names).iter().map(|e| e.at_us).collect();
        assert_eq!(at, [2, 3, 4]);
        // A full journal hands out the oldest round's lists, emptied.
        let cap = j.rounds[0].verdicts.asked.capacity();
        let b = j.buffers(2, 0);
        assert!(b.asked.is_empty() && b.asked.capacity() == cap);
        assert_eq!(j.entries(names).len(), 2);
    }

    #[test]
    fn entries_spell_out_inline_allows_and_keep_other_verdicts_in_full() {
        let mut j = Journal::new(4);
        let defer = Verdict::defer("later");
        record(
            &mut j,
            7,
            &[1, 2, 3],
            vec![
                Detail { at: 1, verdict: Verdict::Allow, latency_us: Some(40) },
                Detail { at: 2, verdict: defer.clone(), latency_us: None },
            ],
        );
        let e = &j.entries(names)[0];
        let got: Vec<(&str, &Verdict, Option<u64>)> =
            e.verdicts.iter().map(|v| (&*v.name, &v.verdict, v.latency_us)).collect();
        assert_eq!(
            got,
            [
                ("n1", &Verdict::Allow, None),
                ("n2", &Verdict::Allow, Some(40)),
                ("n3", &defer, None)
            ]
        );
        assert_eq!((e.at_us, e.current, e.target, e.inline_ns), (7, Initialized, IfaceColdplug, 3));
    }

    #[test]
    fn a_notifier_that_left_keeps_its_name_while_a_kept_round_names_it() {
        let mut j = Journal::new(2);
        record(&mut j, 0, &[42], Vec::new());
        j.departed(42, Arc::from("gone"), &[]);
        assert_eq!(&*j.entries(names)[0].verdicts[0].name, "gone");
        // Many more leave; once no kept round names 42 its name is pruned,
        // and the list stays bounded.
        record(&mut j, 1, &[1], Vec::new());
        record(&mut j, 2, &[1], Vec::new());
        for id in 100..200 {
            j.departed(id, Arc::from("x"), &[]);
        }
        assert!(j.departed.len() <= 32, "{}", j.departed.len());
        assert!(j.departed.iter().all(|(id, _)| *id != 42));
        // One the round under way asked is kept.
        for id in 200..300 {
            j.departed(id, Arc::from("y"), &[200]);
        }
        assert!(j.departed.iter().any(|(id, _)| *id == 200));
    }
}
