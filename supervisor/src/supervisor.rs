//! `Supervisor`: owns the notifier registry and the transition queue, runs
//! each transition by asking notifiers for consent in registration order and
//! committing to `StateService`, and runs the built-in cycles and shutdown.
//! It also tears its system down (`Teardown`): it stops the services, the
//! state service and itself, so that a system nobody holds is freed.
//!
//! Rules (DESIGN §3): one transition at a time; consent is asked
//! sequentially and stops at the first verdict that is not `Allow` (upstream
//! lws asks newest-first; we ask oldest-first so that a notifier registered
//! at build time always speaks before ones added later). A `Defer` parks the
//! walk and answers its requesters; the walk continues on `Resume` from that
//! notifier, when it unregisters, or when a new request for the same target
//! arrives, with a fresh round. Notifiers that allowed a transition that was
//! then not made get `Aborted`.

mod awaiting;
mod notifiers;
mod registry;
mod requests;
mod restarts;
mod subscribers;
mod walk;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use lwsys_actors::time::unix_us;
use lwsys_actors::{StatePublisher, StateService};
use lwsys_messages::protocol::SystemEvent;
use lwsys_messages::state::{
    Changed, CommitRound, CommitRounds, RoundOutcome, StateReading, SystemState, Verdict,
};
use lwsys_messages::supervisor::{
    Explanation, NotifierError, NotifierEventKind, Pending, WalkError,
};
use slog::{info, warn, Logger};

pub use crate::notifier::InlineNotifier;
use awaiting::{Awaiting, ReplySlot};
use registry::{Kind, Registry};
use walk::{Mode, Override, Walk};

use crate::consent::{self, Next, Round, Step};
use crate::journal::{Journal, DEFAULT_JOURNAL_LEN};
use crate::notifier::NotifierSpec;
pub use crate::supervision::RestartLimits;
use crate::supervision::Supervision;

/// Timing knobs of the consent engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// How long an actor or connection notifier has to answer a consent
    /// request before its silence counts as `Defer { reason: "timeout" }`.
    pub consent_timeout: Duration,
    /// The bound on a shutdown: after this, CONTEXT_DESTROYING is committed
    /// whatever the notifiers are doing.
    pub shutdown_grace: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self { consent_timeout: Duration::from_secs(5), shutdown_grace: Duration::from_secs(5) }
    }
}

/// The consent engine. See the module docs.
pub struct Supervisor {
    log: Logger,
    cfg: SupervisorConfig,
    state: Addr<StateService>,
    /// Publishes the committed readings (see [`Publication`]).
    publication: Publication,
    current: SystemState,
    since_us: u64,
    registry: Registry,
    queue: VecDeque<Walk>,
    active: Option<Walk>,
    parked: Vec<Walk>,
    round: Option<Round>,
    /// The newest consent rounds (see the journal module).
    journal: Journal,
    /// Transitions committed and not yet sent to the state service: they
    /// go together when the supervisor is done for now (end of
    /// [`Supervisor::pump`]).
    unsent: Vec<CommitRound>,
    /// A clock reading to start the next round with: the one that ended
    /// the last round, while nothing has been awaited since (cleared at
    /// the end of [`Supervisor::pump`]); one reading per round instead of
    /// two. With it, its time since the `anchor` in ns, when known (the
    /// sum of the spans the rounds measure anyway): the next round's start
    /// stamp then costs no clock arithmetic.
    tick: Option<(Instant, Option<u64>)>,
    /// Unix time at an instant, read once per pump: the rounds of a walk
    /// stamp their start from it rather than read the wall clock each.
    anchor: Option<(Instant, u64)>,
    /// The consent reply being awaited (see the awaiting module); a
    /// request dropped from here is cancelled: its reply is never read.
    awaiting: Option<Awaiting>,
    /// The request whose reply is awaited.
    reply: ReplySlot,
    /// The timer that times out the awaited consent: one for a whole
    /// walk, re-armed for the next deadline, instead of one per request;
    /// dropped once nothing is awaited, so an idle daemon never wakes.
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// An `awaiting::Poller` is running: a request sent now is polled by it.
    polling: bool,
    subscribers: Vec<Recipient<SystemEvent>>,
    shutting_down: bool,
    grace_over: bool,
    /// Tells the world once a shutdown has begun, and whether the system
    /// failed (the daemon waits on it: a numeric wait for
    /// CONTEXT_DESTROYING would also fire at the modal states, which are
    /// numbered past it).
    shutdown_tx: tokio::sync::watch::Sender<RunState>,
    supervision: Option<Supervision>,
    /// The explanation as the system was torn down, for the handles still
    /// held after a shutdown (set once, by `Teardown`).
    last_words: Arc<std::sync::OnceLock<Explanation>>,
    torn_down: bool,
}

/// Whether the system runs, is shutting down, or has failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Running.
    Running,
    /// A shutdown has begun.
    ShuttingDown,
    /// The supervisor gave up (a service died too often); a shutdown has
    /// begun and the daemon exits non-zero.
    Failed(String),
}

/// How many times in a row a walk is re-asked because its deferring
/// notifier resumed before its verdict arrived; past this it parks, so a
/// notifier that always does so cannot spin the supervisor.
pub(crate) const MAX_EARLY_RESUMES: u32 = 8;

impl Supervisor {
    /// A supervisor committing to `state`, which must be at
    /// CONTEXT_CREATED, with the notifiers given at build time, asked in
    /// the order given.
    pub fn new(
        log: &Logger,
        cfg: SupervisorConfig,
        state: Addr<StateService>,
        notifiers: Vec<NotifierSpec>,
    ) -> Result<Self, NotifierError> {
        let mut registry = Registry::default();
        // In the order given: that is the consent order.
        for n in notifiers {
            match n {
                NotifierSpec::Inline(name, f) => registry.add(&name, Kind::Inline(f))?,
                NotifierSpec::Actor(r) => registry.add(
                    &r.name,
                    Kind::Actor {
                        consent: r.consent,
                        changed: r.changed,
                        aborted: r.aborted,
                        kind: r.kind,
                    },
                )?,
            };
        }
        Ok(Self {
            log: log.new(slog::o!("service" => "supervisor")),
            cfg,
            state,
            publication: Publication::default(),
            current: SystemState::ContextCreated,
            since_us: unix_us(),
            registry,
            queue: VecDeque::new(),
            active: None,
            parked: Vec::new(),
            round: None,
            journal: Journal::new(DEFAULT_JOURNAL_LEN),
            // A boot walk's worth, so the first walk does not grow it.
            unsent: Vec::with_capacity(16),
            tick: None,
            anchor: None,
            awaiting: None,
            reply: ReplySlot::default(),
            deadline: None,
            polling: false,
            subscribers: Vec::new(),
            shutting_down: false,
            grace_over: false,
            shutdown_tx: tokio::sync::watch::channel(RunState::Running).0,
            supervision: None,
            last_words: Arc::default(),
            torn_down: false,
        })
    }

    /// Publish each committed reading through `p` before answering the
    /// walk (the builder passes the state service's; without one, readers
    /// of the snapshot see a commit once the state service has handled it).
    pub fn publish_with(&mut self, p: StatePublisher) {
        self.publication.publisher = Some(p);
    }

    /// Keep the newest `n` consent rounds in the journal (at least one).
    pub fn journal_len(&mut self, n: usize) {
        self.journal = Journal::new(n);
    }

    /// Restart the services of `s` when they die.
    pub fn supervise(&mut self, mut s: Supervision) {
        s.locate_notifiers(|name| self.registry.find(name));
        self.supervision = Some(s);
    }

    /// Where the explanation is left once the system is torn down.
    pub fn last_words(&self) -> Arc<std::sync::OnceLock<Explanation>> {
        self.last_words.clone()
    }

    /// A receiver of the run state (running, shutting down, failed).
    pub fn shutdown_watch(&self) -> tokio::sync::watch::Receiver<RunState> {
        self.shutdown_tx.subscribe()
    }

    /// Queue a walk and answer through `rx`.
    fn enqueue(&mut self, walk: Walk, ctx: &mut Context<Self>) {
        self.queue.push_back(walk);
        self.pump(ctx);
    }

    /// Drive the queue as far as it goes without waiting, then send the
    /// state service what was committed meanwhile.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        self.run_queue(ctx);
        self.publication.flush();
        if !self.unsent.is_empty() {
            // Exactly sized; `unsent` keeps its capacity for the next walk.
            let rounds = self.unsent.drain(..).collect();
            let published = self.publication.publisher.is_some();
            self.state.do_send(CommitRounds { rounds, published });
        }
        // Whatever comes next comes after a wait: read the clocks afresh.
        self.tick = None;
        self.anchor = None;
        if self.awaiting.is_none() {
            self.deadline = None;
        }
    }

    fn run_queue(&mut self, ctx: &mut Context<Self>) {
        while self.awaiting.is_none() && self.round.is_none() {
            let Some(walk) = self.active.as_mut() else {
                match self.queue.pop_front() {
                    Some(w) => self.active = Some(w),
                    None => return,
                }
                continue;
            };
            if self.shutting_down && walk.leg.mode != Mode::Forced {
                self.publication.flush();
                if let Some(w) = self.active.take() {
                    w.fail(WalkError::ShuttingDown);
                }
                continue;
            }
            if walk.answers_at(self.current) {
                self.publication.flush();
                walk.answer_reached(self.current);
            }
            match walk.next_transition(self.current) {
                Some(target) => self.start_round(target, ctx),
                None => {
                    if !walk.advance_leg() {
                        self.publication.flush();
                        if let Some(w) = self.active.take() {
                            w.finish(self.current);
                        }
                    }
                }
            }
        }
    }

    fn start_round(&mut self, target: SystemState, ctx: &mut Context<Self>) {
        let forced = self.active.as_ref().is_some_and(|w| w.leg.mode == Mode::Forced);
        let overrides = self.active.as_ref().map_or(Override::Nothing, |w| w.overrides);
        let (t0, known) = self.tick.take().unwrap_or_else(|| (Instant::now(), None));
        let (i0, u0) = *self.anchor.get_or_insert_with(|| (t0, unix_us()));
        let offset_ns = known.unwrap_or_else(|| nanos(t0.saturating_duration_since(i0)));
        let at_us = u0.saturating_add(offset_ns / 1000);
        let verdicts = self.journal.buffers(self.registry.len(), self.registry.actors());
        let all = forced || overrides == Override::All;
        let round = Round::new(self.current, target, all, at_us, verdicts);
        self.round = Some(if overrides == Override::Defers { round.past_defer() } else { round });
        if forced && self.grace_over {
            self.commit();
        } else {
            self.ask(Some((t0, offset_ns)), ctx);
        }
    }

    /// Go on with the round (see [`Supervisor::ask`]), then with the queue.
    fn continue_round(&mut self, ctx: &mut Context<Self>) {
        self.ask(None, ctx);
        self.pump(ctx);
    }

    /// Ask the notifiers after the last one asked, inline ones right here,
    /// until one does not allow (the round ends), an actor's answer must be
    /// awaited, or everyone allowed (committed here, without waiting). The
    /// caller goes on with [`Supervisor::pump`]: this never recurses into
    /// it, so a long queue cannot deepen the stack. `started`: when the
    /// round began, if it begins here, and how long after the `anchor` (in
    /// ns); an inline run that starts the round is timed from then, saving
    /// a clock read.
    fn ask(&mut self, started: Option<(Instant, u64)>, ctx: &mut Context<Self>) {
        let Some(round) = self.round.as_mut() else { return };
        // When the run of inline notifiers under way began, and how long
        // after the anchor if known. One call asks at most one run: an
        // actor ends it with a wait.
        let mut inline_run: Option<(Instant, Option<u64>)> = None;
        loop {
            let index = match round.next(&self.registry) {
                Next::Ask { index, .. } => index,
                Next::Commit => {
                    if let Some((t, offset_ns)) = inline_run {
                        let t1 = Instant::now();
                        let ns = nanos(t1.saturating_duration_since(t));
                        round.add_inline_ns(ns);
                        self.tick = Some((t1, offset_ns.map(|o| o.saturating_add(ns))));
                    }
                    if round.current() == round.target() {
                        self.check_passed();
                        return;
                    }
                    self.commit();
                    return;
                }
            };
            let Some(n) = self.registry.at_mut(index) else { return };
            match &mut n.kind {
                Kind::Inline(_) => {
                    inline_run.get_or_insert_with(|| match started {
                        Some((t, offset_ns)) => (t, Some(offset_ns)),
                        None => (Instant::now(), None),
                    });
                    let (current, target) = (round.current(), round.target());
                    // The run of inline notifiers from here, called in a
                    // row in roster order: nothing can change the registry
                    // while they run, so no lookup is needed between them.
                    // A stretch of them that allows is journaled after it
                    // ran, in one copy: the calls write nothing meanwhile.
                    let mut from = index;
                    let stopped = loop {
                        let mut end = from;
                        let mut other = None;
                        for (i, n) in self.registry.iter_from(from) {
                            let Kind::Inline(f) = &mut n.kind else { break };
                            let v = f.consent(current, target);
                            if !v.is_allow() {
                                other = Some((i, v));
                                break;
                            }
                            end = i + 1;
                        }
                        if end > from {
                            round.allowed_in_run(self.registry.ids(from, end));
                            if let Some(n) = self.registry.at_mut(end - 1) {
                                round.ran_upto(n.id, end - 1);
                            }
                        }
                        let Some((i, v)) = other else { break None };
                        let Some(n) = self.registry.at_mut(i) else { break None };
                        round.asking_inline(n.id, i);
                        if let Step::Stop { by, verdict } = round.verdict(n.id, &n.name, v, None) {
                            break Some((by, verdict));
                        }
                        from = i + 1;
                    };
                    if let Some((by, verdict)) = stopped {
                        if let Some((t, _)) = inline_run {
                            round.add_inline_ns(elapsed_ns(t));
                        }
                        self.conclude(by, verdict);
                        return;
                    }
                }
                Kind::Actor { consent, .. } => {
                    if let Some((t, _)) = inline_run.take() {
                        round.add_inline_ns(elapsed_ns(t));
                    }
                    if !consent.connected() {
                        let id = n.id;
                        self.drop_notifier(id, "stopped", ctx);
                        // drop_notifier may have moved things; re-borrow.
                        return self.ask(None, ctx);
                    }
                    let reply = consent.send(lwsys_messages::Consent {
                        current: round.current(),
                        target: round.target(),
                    });
                    let id = n.id;
                    self.await_reply(id, reply, ctx);
                    return;
                }
            }
        }
    }

    /// The awaited reply came (or its deadline passed: `Timeout`).
    fn on_consent(&mut self, res: Result<Verdict, MailboxError>, ctx: &mut Context<Self>) {
        let Some(Awaiting { id, since, .. }) = self.awaiting.take() else { return };
        let Some(name) = self.registry.name_ref(id) else {
            return self.continue_round(ctx);
        };
        let latency_us = micros(since.elapsed());
        let step = match res {
            Ok(v) => self.round.as_mut().map(|r| r.verdict(id, name, v, Some(latency_us))),
            Err(MailboxError::Timeout) => {
                let name = name.clone();
                warn!(self.log, "notifier missed its consent deadline"; "notifier" => %name,
                      "timeout_ms" => self.cfg.consent_timeout.as_millis());
                self.emit_notifier(NotifierEventKind::Timeout, name.clone(), None);
                self.round.as_mut().map(|r| r.timed_out(id, &name, latency_us))
            }
            Err(MailboxError::Closed) => {
                self.drop_notifier(id, "stopped", ctx);
                return self.continue_round(ctx);
            }
        };
        match step {
            Some(Step::Continue) => self.continue_round(ctx),
            Some(Step::Stop { by, verdict }) => {
                let early = self.round.as_ref().is_some_and(Round::resumed_early)
                    && matches!(verdict, Verdict::Defer { .. })
                    && self
                        .active
                        .as_mut()
                        .is_some_and(|w| w.note_early_resume() <= MAX_EARLY_RESUMES);
                if early {
                    // The notifier resumed before its Defer reached us: the
                    // dependency is already done, so ask everyone again at once.
                    self.send_aborted();
                    self.record_round(consent::stopped_outcome(by, &verdict));
                    self.round = None;
                    self.pump(ctx);
                } else {
                    self.conclude(by, verdict);
                    self.pump(ctx);
                }
            }
            Some(Step::Stale) | None => {}
        }
    }

    /// A health round every notifier allowed: journaled, nothing
    /// committed, its requester answered `reached`; the caller pumps.
    fn check_passed(&mut self) {
        self.record_round(RoundOutcome::Committed);
        self.round = None;
        if let Some(w) = self.active.as_mut() {
            w.passed = true;
        }
    }

    /// End a round that a notifier did not allow; the caller pumps.
    fn conclude(&mut self, by: Arc<str>, verdict: Verdict) {
        // Its requesters are answered here: they read what was committed.
        self.publication.flush();
        let reason = verdict_reason(&verdict);
        let Some(round) = self.round.as_ref() else { return };
        let target = round.target();
        let outcome = consent::stopped_outcome(by.clone(), &verdict);
        let denied = matches!(outcome, RoundOutcome::Denied { .. });
        info!(self.log, "transition not made"; "from" => %self.current, "to" => %target,
              "by" => %by, "verdict" => if denied { "deny" } else { "defer" },
              "reason" => lwsys_actors::LogSafe(&reason));
        if target != self.current {
            // A health round prepares nothing a notifier would undo.
            self.send_aborted();
        }
        self.record_round(outcome);
        self.round = None;
        if let Some(mut walk) = self.active.take() {
            if denied {
                walk.fail(WalkError::Denied { by, reason, target, state: self.current });
            } else {
                let pending = Pending { by, reason, target, since_us: unix_us() };
                walk.park(self.current, pending);
                // A health round is asked again by its requester, not
                // resumed by the notifier.
                if walk.leg.mode != Mode::Check {
                    self.parked.push(walk);
                }
            }
        }
    }

    /// Tell those that allowed the round that it was not made; before
    /// [`Supervisor::record_round`], which takes its verdicts.
    fn send_aborted(&mut self) {
        let Some(round) = self.round.as_ref() else { return };
        let (current, target) = (round.current(), round.target());
        for id in round.allowed() {
            if let Some(n) = self.registry.get_mut(id) {
                n.kind.aborted(current, target);
            }
        }
    }

    fn record_round(&mut self, outcome: RoundOutcome) {
        let Some(round) = self.round.as_mut() else { return };
        self.journal.push(round.record(outcome));
    }

    /// Commit the round's transition: journal it and publish the reading;
    /// the state service is told at the end of [`Supervisor::pump`] (which
    /// the caller goes on with), with the other commits made meanwhile,
    /// and not waited for, since only the supervisor commits and it knows
    /// what it commits.
    fn commit(&mut self) {
        let Some(round) = self.round.as_mut() else { return };
        // A past-defer round that went past a verdict is forced through too.
        let forced_through = round.overridden() || (round.forced() && self.grace_over);
        let (from, to) = (round.current(), round.target());
        let record = round.record(if forced_through {
            RoundOutcome::Forced
        } else {
            RoundOutcome::Committed
        });
        let since_us = round.began_us_if_unwaited().unwrap_or_else(unix_us);
        self.current = to;
        self.since_us = since_us;
        self.publication.commit(StateReading { state: to, since_us });
        if self.registry.anyone_hears() || !self.subscribers.is_empty() {
            // They are told next, and may read the state when they are.
            self.publication.flush();
        }
        self.journal.push(record);
        self.unsent.push(CommitRound { from, to, since_us });
        self.round = None;
        if let Some(w) = self.active.as_mut() {
            w.committed();
        }
        info!(self.log, "state changed"; "from" => %from, "to" => %to);
        let changed = Changed { from, to };
        self.registry.tell_changed(changed);
        if !self.subscribers.is_empty() {
            self.emit(SystemEvent::State { from, to, at_us: since_us });
        }
    }
}

/// The readings the supervisor commits, published (set by the builder;
/// see `StateService`'s module docs) before anyone can learn of the
/// commit: before the walk's requesters are answered, notifiers are told
/// `Changed` or subscribers get the event. A walk of plain inline
/// notifiers, which nobody hears, therefore publishes once, as its turn
/// ends, rather than at each of its transitions; another thread reading
/// the snapshot meanwhile reads it as it was when the turn began.
#[derive(Default)]
struct Publication {
    publisher: Option<StatePublisher>,
    pending: Option<StateReading>,
}

impl Publication {
    fn commit(&mut self, reading: StateReading) {
        self.pending = Some(reading);
    }

    fn flush(&mut self) {
        if let (Some(p), Some(r)) = (&self.publisher, self.pending.take()) {
            p.publish(r);
        }
    }
}

fn elapsed_ns(t: Instant) -> u64 {
    nanos(t.elapsed())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn verdict_reason(v: &Verdict) -> String {
    match v {
        Verdict::Allow => String::new(),
        Verdict::Defer { reason } | Verdict::Deny { reason } => reason.clone(),
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

pub use notifiers::RegisterInline;
pub(crate) use requests::{Teardown, WalkTo};
pub(crate) use subscribers::{CountSubscribers, Unsubscribe};
