//! Property tests of the consent engine (issue 2): random notifier verdict
//! scripts and random request sequences, checked against the journal, the
//! `Changed` each notifier saw and the subscribers' state events.
//!
//! Each case runs in its own actix `System` with tokio time paused, so the
//! consent deadline and the "supervisor always answers" timeout cost no
//! wall time and a quiet runtime is a settled one.
// Unwrap is fine in tests, but clippy's allow-unwrap-in-tests only covers
// `#[test]` functions, not this file's helpers.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use lwsys::messages::protocol::SystemEvent;
use lwsys::messages::state::{
    Aborted, Changed, Consent, JournalEntry, RoundOutcome, SystemState, Verdict, ALL_STATES,
};
use lwsys::messages::supervisor::Cycle;
use lwsys::{Builder, InlineNotifier, NotifierSpec, SystemHandle};
use proptest::prelude::*;

/// A scripted answer; each is used once, then the notifier allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Allow,
    Defer,
    Deny,
    /// Never answers (actor notifiers; inline ones defer instead), so the
    /// consent deadline must turn it into a `Defer`.
    Silent,
}

/// What a notifier saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Consent { current: SystemState, target: SystemState, answer: Answer },
    Changed { from: SystemState, to: SystemState },
    Aborted { current: SystemState, target: SystemState },
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A notifier's script: `(target, answer)` pairs, the first match for a
/// target used (and removed) per ask.
#[derive(Debug, Clone)]
struct Script(Vec<(SystemState, Answer)>);

impl Script {
    /// The verdict for this ask; `None`: stay silent.
    fn ask(
        &mut self,
        current: SystemState,
        target: SystemState,
        log: &Log,
        can_be_silent: bool,
    ) -> Option<Verdict> {
        let mut answer = match self.0.iter().position(|(t, _)| *t == target) {
            Some(i) => self.0.remove(i).1,
            None => Answer::Allow,
        };
        if answer == Answer::Silent && !can_be_silent {
            answer = Answer::Defer;
        }
        log.lock().unwrap().push(Seen::Consent { current, target, answer });
        match answer {
            Answer::Allow => Some(Verdict::Allow),
            Answer::Defer => Some(Verdict::defer("scripted")),
            Answer::Deny => Some(Verdict::deny("scripted")),
            Answer::Silent => None,
        }
    }
}

struct ActorNotifier {
    script: Script,
    log: Log,
}

impl Actor for ActorNotifier {
    type Context = Context<Self>;
}

impl Handler<Consent> for ActorNotifier {
    type Result = ResponseFuture<Verdict>;

    fn handle(&mut self, m: Consent, _: &mut Context<Self>) -> Self::Result {
        let v = self.script.ask(m.current, m.target, &self.log, true);
        // Answer through a future, as a real notifier doing work would.
        Box::pin(async move {
            tokio::task::yield_now().await;
            match v {
                Some(v) => v,
                None => futures::future::pending().await,
            }
        })
    }
}

impl Handler<Changed> for ActorNotifier {
    type Result = ();

    fn handle(&mut self, m: Changed, _: &mut Context<Self>) {
        self.log.lock().unwrap().push(Seen::Changed { from: m.from, to: m.to });
    }
}

impl Handler<Aborted> for ActorNotifier {
    type Result = ();

    fn handle(&mut self, m: Aborted, _: &mut Context<Self>) {
        self.log.lock().unwrap().push(Seen::Aborted { current: m.current, target: m.target });
    }
}

struct Inline {
    script: Script,
    log: Log,
}

impl InlineNotifier for Inline {
    fn consent(&mut self, current: SystemState, target: SystemState) -> Verdict {
        self.script.ask(current, target, &self.log, false).unwrap_or_else(|| Verdict::defer("x"))
    }

    fn changed(&mut self, m: Changed) {
        self.log.lock().unwrap().push(Seen::Changed { from: m.from, to: m.to });
    }

    fn aborted(&mut self, current: SystemState, target: SystemState) {
        self.log.lock().unwrap().push(Seen::Aborted { current, target });
    }
}

/// Collects the subscribers' state events.
struct Collector(Arc<Mutex<Vec<(SystemState, SystemState)>>>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<SystemEvent> for Collector {
    type Result = ();

    fn handle(&mut self, ev: SystemEvent, _: &mut Context<Self>) {
        if let SystemEvent::State { from, to, .. } = ev {
            self.0.lock().unwrap().push((from, to));
        }
    }
}

#[derive(Debug, Clone)]
enum Req {
    Steps(SystemState),
    Jump(SystemState),
    Resume(usize),
    Unregister(usize),
    Cycle(Cycle),
}

#[derive(Debug, Clone)]
struct Case {
    /// `true`: an actor notifier, `false`: inline; in registration order.
    notifiers: Vec<(bool, Script)>,
    reqs: Vec<Req>,
}

const CONSENT_TIMEOUT: Duration = Duration::from_millis(50);
/// Far above the consent deadline: only a supervisor that never answers
/// reaches it (time is paused, so it costs nothing).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

fn name(i: usize) -> String {
    format!("n{i}")
}

fn state() -> impl Strategy<Value = SystemState> {
    prop::sample::select(ALL_STATES.to_vec())
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        1 => Just(Answer::Allow),
        3 => Just(Answer::Defer),
        1 => Just(Answer::Deny),
        1 => Just(Answer::Silent),
    ]
}

fn script() -> impl Strategy<Value = Script> {
    prop::collection::vec((state(), answer()), 0..4).prop_map(Script)
}

fn notifiers() -> impl Strategy<Value = Vec<(bool, Script)>> {
    prop::collection::vec((any::<bool>(), script()), 1..6)
}

fn req(steps_only: bool) -> BoxedStrategy<Req> {
    let idx = 0usize..6;
    if steps_only {
        prop_oneof![
            4 => state().prop_map(Req::Steps),
            3 => idx.clone().prop_map(Req::Resume),
            1 => idx.prop_map(Req::Unregister),
        ]
        .boxed()
    } else {
        prop_oneof![
            3 => state().prop_map(Req::Steps),
            2 => state().prop_map(Req::Jump),
            3 => idx.clone().prop_map(Req::Resume),
            1 => idx.prop_map(Req::Unregister),
            1 => prop::sample::select(vec![
                Cycle::PolicyInvalidate,
                Cycle::EnterModal,
                Cycle::LeaveModal
            ])
            .prop_map(Req::Cycle),
        ]
        .boxed()
    }
}

fn case(steps_only: bool) -> impl Strategy<Value = Case> {
    (notifiers(), prop::collection::vec(req(steps_only), 1..14))
        .prop_map(|(notifiers, reqs)| Case { notifiers, reqs })
}

fn cases() -> u32 {
    if std::env::var_os("LWSYS_SLOW").is_some() {
        4096
    } else {
        64
    }
}

/// What a run produced.
struct Outcome {
    logs: Vec<Log>,
    /// Notifiers unregistered by request, by index.
    unregistered: HashSet<usize>,
    journal: Vec<JournalEntry>,
    events: Vec<(SystemState, SystemState)>,
    final_state: SystemState,
}

/// Wait until every actor on this runtime is idle: with time paused, the
/// clock only moves once nothing else can run.
async fn quiesce() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn answered<T>(what: &Req, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(ANSWER_TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => panic!("supervisor did not answer {what:?}"),
    }
}

async fn run_case(case: &Case) -> Outcome {
    tokio::time::pause();
    let logs: Vec<Log> = case.notifiers.iter().map(|_| Log::default()).collect();
    let specs: Vec<NotifierSpec> = case
        .notifiers
        .iter()
        .zip(&logs)
        .enumerate()
        .map(|(i, ((actor, script), log))| {
            let (script, log) = (script.clone(), log.clone());
            if *actor {
                NotifierSpec::actor(&name(i), &ActorNotifier { script, log }.start())
            } else {
                NotifierSpec::inline(&name(i), Inline { script, log })
            }
        })
        .collect();
    let h: SystemHandle = Builder::new()
        .boot_target(SystemState::ContextCreated)
        .consent_timeout(CONSENT_TIMEOUT)
        .journal_len(100_000)
        .notifiers(specs)
        .start()
        .unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    h.subscribe(Collector(events.clone()).start().recipient()).await.unwrap();

    let mut unregistered = HashSet::new();
    for r in &case.reqs {
        match r {
            Req::Steps(s) => {
                let _ = answered(r, h.steps(*s)).await.unwrap();
            }
            Req::Jump(s) => {
                let _ = answered(r, h.jump(*s)).await.unwrap();
            }
            Req::Cycle(c) => {
                let _ = answered(r, h.cycle(*c)).await.unwrap();
            }
            Req::Resume(i) => {
                answered(r, h.resume(&name(*i))).await.unwrap();
            }
            Req::Unregister(i) => {
                if answered(r, h.unregister(&name(*i))).await.is_ok() {
                    unregistered.insert(*i);
                }
            }
        }
    }
    quiesce().await;
    let explained = answered(&Req::Resume(usize::MAX), h.explain()).await.unwrap();
    let final_state = h.state().await.unwrap().state;
    let events = events.lock().unwrap().clone();
    Outcome { logs, unregistered, journal: explained.journal, events, final_state }
}

fn run(case: &Case) -> Outcome {
    actix_rt::System::new().block_on(run_case(case))
}

fn commits(o: &Outcome) -> Vec<(SystemState, SystemState)> {
    o.journal
        .iter()
        .filter(|e| matches!(e.outcome, RoundOutcome::Committed | RoundOutcome::Forced))
        .map(|e| (e.current, e.target))
        .collect()
}

/// The invariants every run must keep, whatever the requests.
fn check_common(case: &Case, o: &Outcome) -> Result<(), TestCaseError> {
    let names: Vec<String> = (0..case.notifiers.len()).map(name).collect();
    let commits = commits(o);

    // The state only changes by commits, chained from CONTEXT_CREATED.
    let mut at = SystemState::ContextCreated;
    for (from, to) in &commits {
        prop_assert_eq!(*from, at, "commit does not start where the last one ended");
        prop_assert_ne!(from, to);
        at = *to;
    }
    prop_assert_eq!(o.final_state, at);
    prop_assert_eq!(&o.events, &commits, "subscribers' state events differ from the journal");

    for e in &o.journal {
        let asked: Vec<&str> = e.verdicts.iter().map(|v| &*v.name).collect();
        let distinct: HashSet<&str> = asked.iter().copied().collect();
        prop_assert_eq!(distinct.len(), asked.len(), "a notifier was asked twice in one round");
        for n in &asked {
            prop_assert!(names.iter().any(|x| x == n), "unknown notifier {} in journal", n);
        }
        match &e.outcome {
            RoundOutcome::Committed => {
                prop_assert!(
                    e.verdicts.iter().all(|v| v.verdict == Verdict::Allow),
                    "committed round with a non-Allow verdict: {:?}",
                    e
                );
                // Every notifier never unregistered must have been asked.
                for (i, n) in names.iter().enumerate() {
                    if !o.unregistered.contains(&i) {
                        prop_assert!(distinct.contains(n.as_str()), "{} not asked in {:?}", n, e);
                    }
                }
            }
            RoundOutcome::Forced => prop_assert!(false, "forced round without shutdown"),
            RoundOutcome::Deferred { by, .. } | RoundOutcome::Denied { by, .. } => {
                // The round stopped at the first non-Allow: `by` is last.
                prop_assert_eq!(asked.last().copied(), Some(&**by));
                let last = e.verdicts.last().map(|v| &v.verdict);
                prop_assert!(!matches!(last, Some(Verdict::Allow) | None));
            }
        }
        // Each journal verdict matches what the notifier itself answered.
        for v in &e.verdicts {
            let i = names.iter().position(|x| **x == *v.name).unwrap_or(usize::MAX);
            let want = match &v.verdict {
                Verdict::Allow => Answer::Allow,
                Verdict::Defer { reason } if reason == "timeout" => Answer::Silent,
                Verdict::Defer { .. } => Answer::Defer,
                Verdict::Deny { .. } => Answer::Deny,
            };
            let seen = Seen::Consent { current: e.current, target: e.target, answer: want };
            prop_assert!(
                o.logs[i].lock().unwrap().contains(&seen),
                "{} never answered {:?}",
                v.name,
                seen
            );
        }
    }

    // Exactly one Changed per commit per notifier while it is registered:
    // all of them for notifiers never unregistered, a prefix otherwise.
    for (i, log) in o.logs.iter().enumerate() {
        let log = log.lock().unwrap();
        let changed: Vec<(SystemState, SystemState)> = log
            .iter()
            .filter_map(|s| match s {
                Seen::Changed { from, to } => Some((*from, *to)),
                _ => None,
            })
            .collect();
        if o.unregistered.contains(&i) {
            prop_assert!(commits.starts_with(&changed), "n{} changes {:?}", i, changed);
        } else {
            prop_assert_eq!(&changed, &commits, "n{} saw other changes than committed", i);
        }
        // Aborted only after this notifier allowed that very transition.
        for s in log.iter() {
            if let Seen::Aborted { current, target } = s {
                let allowed =
                    Seen::Consent { current: *current, target: *target, answer: Answer::Allow };
                prop_assert!(log.contains(&allowed), "n{} aborted {:?} it never allowed", i, s);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Any mix of steps, jumps, cycles, resumes and unregisters keeps the
    /// consent invariants, and the supervisor answers every request.
    #[test]
    fn state_changes_only_by_unanimous_commits(case in case(false)) {
        let o = run(&case);
        check_common(&case, &o)?;
    }

    /// With only steps requests (plus resumes and unregisters), every
    /// committed transition goes to the next state.
    #[test]
    fn steps_walks_never_skip_a_state(case in case(true)) {
        let o = run(&case);
        check_common(&case, &o)?;
        for (from, to) in commits(&o) {
            prop_assert_eq!(from.next(), Some(to), "steps walk skipped from {} to {}", from, to);
        }
    }
}

/// `Builder::notifiers` is the consent order, whatever the kinds: an
/// actor given first is asked before a later inline one.
#[test]
fn build_time_notifiers_are_asked_in_the_order_given() {
    let order = actix_rt::System::new().block_on(async {
        let log = Log::default();
        let a = ActorNotifier { script: Script(vec![]), log: log.clone() }.start();
        let h = Builder::new()
            .boot_target(SystemState::ContextCreated)
            .notifiers([
                NotifierSpec::actor("actor_first", &a),
                NotifierSpec::inline("inline_second", |_, _| Verdict::Allow),
            ])
            .start()
            .unwrap();
        h.steps(SystemState::PrePrivDrop).await.unwrap().unwrap();
        let j = h.explain().await.unwrap().journal;
        j[0].verdicts.iter().map(|v| v.name.to_string()).collect::<Vec<_>>()
    });
    assert_eq!(order, ["actor_first", "inline_second"]);
}
