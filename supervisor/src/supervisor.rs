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

mod registry;
mod walk;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use lwsys_actors::time::unix_us;
use lwsys_actors::StateService;
use lwsys_messages::lifecycle::ServiceDied;
use lwsys_messages::protocol::ServiceEvent;
use lwsys_messages::state::{
    Changed, Commit, CommitRefused, GetJournal, JournalEntry, NotifierVerdict, RecordRound, Resume,
    RoundOutcome, StateReading, SystemState, Verdict,
};
use lwsys_messages::supervisor::{
    Cycle, Explain, Explanation, Jump, ListNotifiers, NotifierError, NotifierEventKind, Pending,
    RegisterNotifier, Shutdown, Steps, Subscribe, SystemEvent, Unregister, WalkError, WalkResult,
};
use slog::{info, warn, Logger};
use tokio::sync::oneshot;

pub use registry::InlineNotifier;
use registry::{Kind, Registry};
use walk::{Leg, Mode, Walk};

use crate::builder::NotifierSpec;
use crate::services::{ServiceFactory, Services};

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
    current: SystemState,
    since_us: u64,
    registry: Registry,
    queue: VecDeque<Walk>,
    active: Option<Walk>,
    parked: Vec<Walk>,
    round: Option<Round>,
    /// The call being awaited (a consent reply or a commit); replies from
    /// any other call are stale and ignored.
    awaiting: Option<Awaiting>,
    call_seq: u64,
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

/// How often a dead service may be restarted (OTP style: at most `max` in
/// any `window`); past that the supervisor gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartLimits {
    /// Restarts allowed within `window`.
    pub max: usize,
    /// The sliding window.
    pub window: Duration,
}

impl Default for RestartLimits {
    fn default() -> Self {
        Self { max: 5, window: Duration::from_secs(60) }
    }
}

/// What the supervisor needs to restart services: how to start each one,
/// where to publish the new addresses, and the limits.
pub struct Supervision {
    factory: ServiceFactory,
    services: tokio::sync::watch::Sender<Option<Services>>,
    clock_name: String,
    clock_id: Option<u64>,
    limits: RestartLimits,
    restarts: VecDeque<tokio::time::Instant>,
}

impl Supervision {
    /// Supervise the services `factory` started and `services` publishes;
    /// the clock is the notifier `clock_name`.
    pub fn new(
        factory: ServiceFactory,
        services: tokio::sync::watch::Sender<Option<Services>>,
        clock_name: String,
        limits: RestartLimits,
    ) -> Self {
        Self { factory, services, clock_name, clock_id: None, limits, restarts: VecDeque::new() }
    }

    /// Stop the services (the system is torn down, or its build failed).
    pub fn stop_all(&self) {
        self.factory.stop_all(self.services.borrow().as_ref());
    }
}

/// One consent round for (current, target).
struct Round {
    current: SystemState,
    target: SystemState,
    forced: bool,
    /// Notifiers with an id at or below this have been asked.
    asked_upto: u64,
    /// Where the next one probably is in the registry (a hint).
    next_index: usize,
    allowed: Vec<u64>,
    verdicts: Vec<NotifierVerdict>,
    inline_ns: u64,
    at_us: u64,
    /// A `Resume` from the notifier being asked arrived before its verdict.
    early_resume: bool,
}

/// How many times in a row a walk is re-asked because its deferring
/// notifier resumed before its verdict arrived; past this it parks, so a
/// notifier that always does so cannot spin the supervisor.
const MAX_EARLY_RESUMES: u32 = 8;

#[derive(Clone, Copy)]
enum Awaiting {
    Consent { call: u64, id: u64, since: tokio::time::Instant },
    Commit { call: u64 },
}

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
            current: SystemState::ContextCreated,
            since_us: unix_us(),
            registry,
            queue: VecDeque::new(),
            active: None,
            parked: Vec::new(),
            round: None,
            awaiting: None,
            call_seq: 0,
            subscribers: Vec::new(),
            shutting_down: false,
            grace_over: false,
            shutdown_tx: tokio::sync::watch::channel(RunState::Running).0,
            supervision: None,
            last_words: Arc::default(),
            torn_down: false,
        })
    }

    /// Restart the services of `s` when they die.
    pub fn supervise(&mut self, mut s: Supervision) {
        s.clock_id = self.registry.find(&s.clock_name);
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

    fn emit(&mut self, ev: SystemEvent) {
        self.subscribers.retain(|s| s.connected());
        for s in &self.subscribers {
            s.do_send(ev.clone());
        }
    }

    fn emit_notifier(&mut self, kind: NotifierEventKind, name: Arc<str>, reason: Option<&str>) {
        if !self.subscribers.is_empty() {
            self.emit(SystemEvent::Notifier { kind, name, reason: reason.map(str::to_owned) });
        }
    }

    /// Queue a walk and answer through `rx`.
    fn enqueue(&mut self, walk: Walk, ctx: &mut Context<Self>) {
        self.queue.push_back(walk);
        self.pump(ctx);
    }

    /// Drive the queue as far as it goes without waiting.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while self.awaiting.is_none() && self.round.is_none() {
            let Some(walk) = self.active.as_mut() else {
                match self.queue.pop_front() {
                    Some(w) => self.active = Some(w),
                    None => return,
                }
                continue;
            };
            if self.shutting_down && walk.leg.mode != Mode::Forced {
                if let Some(w) = self.active.take() {
                    w.fail(WalkError::ShuttingDown);
                }
                continue;
            }
            walk.answer_reached(self.current);
            match walk.next_transition(self.current) {
                Some(target) => self.start_round(target, ctx),
                None => {
                    if !walk.advance_leg() {
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
        self.round = Some(Round {
            current: self.current,
            target,
            forced,
            asked_upto: 0,
            next_index: 0,
            allowed: Vec::with_capacity(self.registry.len()),
            verdicts: Vec::with_capacity(self.registry.len()),
            inline_ns: 0,
            at_us: unix_us(),
            early_resume: false,
        });
        if forced && self.grace_over {
            self.commit(ctx);
        } else {
            self.continue_round(ctx);
        }
    }

    /// Ask the notifiers after the last one asked, inline ones right here,
    /// until one does not allow or an actor's answer must be awaited.
    fn continue_round(&mut self, ctx: &mut Context<Self>) {
        let Some(round) = self.round.as_mut() else { return };
        let mut inline_run: Option<Instant> = None;
        loop {
            let Some((index, n)) = self.registry.next_after(round.asked_upto, round.next_index)
            else {
                if let Some(t) = inline_run {
                    round.inline_ns += elapsed_ns(t);
                }
                self.commit(ctx);
                return;
            };
            round.asked_upto = n.id;
            round.next_index = index + 1;
            match &mut n.kind {
                Kind::Inline(f) => {
                    inline_run.get_or_insert_with(Instant::now);
                    let v = f.consent(round.current, round.target);
                    let allow = v.is_allow();
                    if allow {
                        round.allowed.push(n.id);
                    }
                    round.verdicts.push(NotifierVerdict {
                        name: n.name.clone(),
                        verdict: v.clone(),
                        latency_us: None,
                    });
                    if !allow && !round.forced {
                        if let Some(t) = inline_run {
                            round.inline_ns += elapsed_ns(t);
                        }
                        let by = n.name.clone();
                        self.conclude(by, v, ctx);
                        return;
                    }
                }
                Kind::Actor { consent, .. } => {
                    if let Some(t) = inline_run.take() {
                        round.inline_ns += elapsed_ns(t);
                    }
                    if !consent.connected() {
                        let id = n.id;
                        self.drop_notifier(id, "stopped", ctx);
                        // drop_notifier may have moved things; re-borrow.
                        return self.continue_round(ctx);
                    }
                    self.call_seq += 1;
                    let call = self.call_seq;
                    let id = n.id;
                    let fut = consent
                        .send(lwsys_messages::Consent {
                            current: round.current,
                            target: round.target,
                        })
                        .timeout(self.cfg.consent_timeout);
                    self.awaiting =
                        Some(Awaiting::Consent { call, id, since: tokio::time::Instant::now() });
                    ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
                        act.on_consent(call, res, ctx);
                    }));
                    return;
                }
            }
        }
    }

    fn on_consent(
        &mut self,
        call: u64,
        res: Result<Verdict, MailboxError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(Awaiting::Consent { call: want, id, since }) = self.awaiting else { return };
        if want != call {
            return;
        }
        self.awaiting = None;
        let Some(name) = self.registry.name_of(id) else {
            return self.continue_round(ctx);
        };
        let verdict = match res {
            Ok(v) => v,
            Err(MailboxError::Timeout) => {
                warn!(self.log, "notifier missed its consent deadline"; "notifier" => %name,
                      "timeout_ms" => self.cfg.consent_timeout.as_millis());
                self.emit_notifier(NotifierEventKind::Timeout, name.clone(), None);
                Verdict::defer("timeout")
            }
            Err(MailboxError::Closed) => {
                self.drop_notifier(id, "stopped", ctx);
                return self.continue_round(ctx);
            }
        };
        let Some(round) = self.round.as_mut() else { return };
        let allow = verdict.is_allow();
        if allow {
            round.allowed.push(id);
        }
        round.verdicts.push(NotifierVerdict {
            name: name.clone(),
            verdict: verdict.clone(),
            latency_us: Some(u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)),
        });
        if allow || round.forced {
            self.continue_round(ctx);
        } else if round.early_resume
            && matches!(verdict, Verdict::Defer { .. })
            && self.active.as_mut().is_some_and(|w| w.note_early_resume() <= MAX_EARLY_RESUMES)
        {
            // The notifier resumed before its Defer reached us: the
            // dependency is already done, so ask everyone again at once.
            self.record_round(RoundOutcome::Deferred {
                by: name,
                reason: verdict_reason(&verdict),
            });
            self.send_aborted();
            self.round = None;
            self.pump(ctx);
        } else {
            self.conclude(name, verdict, ctx);
        }
    }

    /// End a round that a notifier did not allow.
    fn conclude(&mut self, by: Arc<str>, verdict: Verdict, ctx: &mut Context<Self>) {
        let reason = verdict_reason(&verdict);
        let Some(round) = self.round.as_ref() else { return };
        let target = round.target;
        let outcome = match verdict {
            Verdict::Deny { .. } => RoundOutcome::Denied { by: by.clone(), reason: reason.clone() },
            _ => RoundOutcome::Deferred { by: by.clone(), reason: reason.clone() },
        };
        let denied = matches!(outcome, RoundOutcome::Denied { .. });
        info!(self.log, "transition not made"; "from" => %self.current, "to" => %target,
              "by" => %by, "verdict" => if denied { "deny" } else { "defer" },
              "reason" => lwsys_actors::LogSafe(&reason));
        self.record_round(outcome);
        self.send_aborted();
        self.round = None;
        if let Some(mut walk) = self.active.take() {
            if denied {
                walk.fail(WalkError::Denied { by, reason, target, state: self.current });
            } else {
                let pending = Pending { by, reason, target, since_us: unix_us() };
                walk.park(self.current, pending);
                self.parked.push(walk);
            }
        }
        self.pump(ctx);
    }

    fn send_aborted(&mut self) {
        let Some(round) = self.round.as_ref() else { return };
        let (current, target) = (round.current, round.target);
        for id in &round.allowed {
            if let Some(n) = self.registry.get_mut(*id) {
                n.kind.aborted(current, target);
            }
        }
    }

    fn record_round(&mut self, outcome: RoundOutcome) {
        let Some(round) = self.round.as_mut() else { return };
        self.state.do_send(RecordRound(JournalEntry {
            at_us: round.at_us,
            current: round.current,
            target: round.target,
            verdicts: std::mem::take(&mut round.verdicts),
            inline_ns: round.inline_ns,
            outcome,
        }));
    }

    fn commit(&mut self, ctx: &mut Context<Self>) {
        let Some(round) = self.round.as_ref() else { return };
        self.call_seq += 1;
        let call = self.call_seq;
        self.awaiting = Some(Awaiting::Commit { call });
        let fut = self.state.send(Commit { from: round.current, to: round.target });
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| act.on_commit(call, res, ctx)));
    }

    fn on_commit(
        &mut self,
        call: u64,
        res: Result<Result<StateReading, CommitRefused>, MailboxError>,
        ctx: &mut Context<Self>,
    ) {
        if !matches!(self.awaiting, Some(Awaiting::Commit { call: c }) if c == call) {
            return;
        }
        self.awaiting = None;
        let forced_through = self.round.as_ref().is_some_and(|r| {
            r.forced && (self.grace_over || r.verdicts.iter().any(|v| !v.verdict.is_allow()))
        });
        match res {
            Ok(Ok(reading)) => {
                let from = self.current;
                self.current = reading.state;
                self.since_us = reading.since_us;
                self.record_round(if forced_through {
                    RoundOutcome::Forced
                } else {
                    RoundOutcome::Committed
                });
                self.round = None;
                if let Some(w) = self.active.as_mut() {
                    w.committed();
                }
                info!(self.log, "state changed"; "from" => %from, "to" => %reading.state);
                let changed = Changed { from, to: reading.state };
                self.registry.tell_changed(changed);
                if !self.subscribers.is_empty() {
                    self.emit(SystemEvent::State {
                        from,
                        to: reading.state,
                        at_us: reading.since_us,
                    });
                }
            }
            Ok(Err(refused)) => {
                // Only the supervisor commits, so this is a bug: resync and
                // fail the walk rather than loop.
                warn!(self.log, "commit refused"; "error" => %refused);
                self.current = refused.current;
                self.round = None;
                if let Some(w) = self.active.take() {
                    w.fail(WalkError::Internal(refused.to_string()));
                }
            }
            Err(e) => {
                warn!(self.log, "state service unreachable"; "error" => %e);
                self.round = None;
                if let Some(w) = self.active.take() {
                    w.fail(WalkError::Internal(format!("state service: {e}")));
                }
            }
        }
        self.pump(ctx);
    }

    /// Remove a notifier: a round waiting on it goes on without it, and a
    /// walk it holds continues.
    fn drop_notifier(&mut self, id: u64, why: &str, ctx: &mut Context<Self>) {
        let Some(n) = self.registry.remove(id) else { return };
        info!(self.log, "notifier unregistered"; "notifier" => %n.name, "why" => why);
        self.emit_notifier(NotifierEventKind::Unregistered, n.name.clone(), Some(why));
        if let Some(round) = self.round.as_mut() {
            round.allowed.retain(|a| *a != id);
        }
        self.resume_parked(&n.name);
        if matches!(self.awaiting, Some(Awaiting::Consent { id: w, .. }) if w == id) {
            self.awaiting = None;
            self.continue_round(ctx);
        }
    }

    /// Move the walks parked by `name` back to the front of the queue.
    fn resume_parked(&mut self, name: &str) -> bool {
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

    /// A new request for a target a parked walk is waiting for continues
    /// that walk, with the new requester added.
    fn take_parked_for(&mut self, mode: Mode, target: SystemState) -> Option<Walk> {
        let pos = self.parked.iter().position(|w| w.leg.mode == mode && w.leg.target == target)?;
        let mut w = self.parked.remove(pos);
        w.unpark();
        Some(w)
    }

    fn walk_request(
        &mut self,
        leg: Leg,
        rest: Vec<Leg>,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<WalkResult> {
        let (tx, rx) = oneshot::channel();
        let single = rest.is_empty();
        if self.shutting_down {
            let _ = tx.send(Err(WalkError::ShuttingDown));
        } else if let Some(w) = self.active.as_mut().filter(|w| single && w.can_extend(leg)) {
            w.extend(leg.target, tx);
            self.pump(ctx);
        } else if let Some(mut w) =
            single.then(|| self.take_parked_for(leg.mode, leg.target)).flatten()
        {
            w.add_waiter(leg, tx);
            self.queue.push_front(w);
            self.pump(ctx);
        } else {
            self.enqueue(Walk::new(leg, rest, tx), ctx);
        }
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| Err(WalkError::Internal("supervisor stopped".into())))
        })
    }

    fn grace_expired(&mut self, ctx: &mut Context<Self>) {
        self.grace_over = true;
        if self.current == SystemState::ContextDestroying {
            return;
        }
        warn!(self.log, "shutdown grace period over; forcing CONTEXT_DESTROYING";
              "grace_ms" => self.cfg.shutdown_grace.as_millis());
        if matches!(self.awaiting, Some(Awaiting::Consent { .. })) {
            self.awaiting = None;
            let forced = self.active.as_ref().is_some_and(|w| w.leg.mode == Mode::Forced);
            if forced && self.round.is_some() {
                self.commit(ctx);
                return;
            }
            self.round = None;
            if let Some(w) = self.active.take() {
                w.fail(WalkError::ShuttingDown);
            }
        }
        self.pump(ctx);
    }
}

fn elapsed_ns(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
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

/// Ends the system: sent when its last `SystemHandle` is dropped, or after
/// a shutdown has committed CONTEXT_DESTROYING. The actors of a system hold
/// one another's addresses (the services report to the supervisor, which
/// holds them, and the clock reads the address book that names it), so
/// they would never stop by themselves: the supervisor stops them, then
/// itself. Idempotent; no reply.
#[derive(Debug, Clone, Copy, actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Teardown;

impl Handler<Teardown> for Supervisor {
    type Result = ();

    fn handle(&mut self, _msg: Teardown, ctx: &mut Self::Context) {
        if std::mem::replace(&mut self.torn_down, true) {
            return;
        }
        info!(self.log, "system torn down"; "state" => %self.current);
        self.round = None;
        self.awaiting = None;
        let walks = self.active.take().into_iter();
        for w in walks.chain(self.queue.drain(..)).chain(self.parked.drain(..)) {
            w.fail(WalkError::ShuttingDown);
        }
        // Taken first, so that the deaths the stops cause restart nothing.
        if let Some(s) = self.supervision.take() {
            s.stop_all();
            // Dropping the factory ends the blob service's thread.
        }
        // The journal is read before the state service goes, so that a
        // handle kept after a shutdown can still explain how it ended.
        // `wait`: nothing else is handled meanwhile.
        ctx.wait(self.state.send(GetJournal).into_actor(self).map(|res, act, ctx| {
            let _ = act.last_words.set(Explanation {
                state: act.current,
                since_us: act.since_us,
                pending: None,
                parked: Vec::new(),
                journal: res.map(|j| j.rounds).unwrap_or_default(),
            });
            act.state.do_send(lwsys_messages::lifecycle::Stop);
            ctx.stop();
        }));
    }
}

impl Handler<Steps> for Supervisor {
    type Result = ResponseFuture<WalkResult>;

    fn handle(&mut self, msg: Steps, ctx: &mut Self::Context) -> Self::Result {
        self.walk_request(Leg { mode: Mode::Steps, target: msg.target }, Vec::new(), ctx)
    }
}

impl Handler<Jump> for Supervisor {
    type Result = ResponseFuture<WalkResult>;

    fn handle(&mut self, msg: Jump, ctx: &mut Self::Context) -> Self::Result {
        self.walk_request(Leg { mode: Mode::Jump, target: msg.target }, Vec::new(), ctx)
    }
}

impl Handler<Cycle> for Supervisor {
    type Result = ResponseFuture<WalkResult>;

    fn handle(&mut self, msg: Cycle, ctx: &mut Self::Context) -> Self::Result {
        let jump = |target| Leg { mode: Mode::Jump, target };
        let (first, rest) = match msg {
            Cycle::PolicyInvalidate => (
                jump(SystemState::PolicyInvalid),
                vec![
                    jump(SystemState::Initialized),
                    Leg { mode: Mode::Steps, target: SystemState::Operational },
                ],
            ),
            Cycle::EnterModal => {
                (jump(SystemState::AwaitingModalUpdating), vec![jump(SystemState::ModalUpdating)])
            }
            Cycle::LeaveModal => (jump(SystemState::Operational), Vec::new()),
        };
        self.walk_request(first, rest, ctx)
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseFuture<WalkResult>;

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let leg = Leg { mode: Mode::Forced, target: SystemState::ContextDestroying };
        if !self.shutting_down {
            info!(self.log, "shutting down"; "from" => %self.current,
                  "grace_ms" => self.cfg.shutdown_grace.as_millis());
            self.shutting_down = true;
            self.shutdown_tx.send_if_modified(|st| {
                let begin = *st == RunState::Running;
                if begin {
                    *st = RunState::ShuttingDown;
                }
                begin
            });
            for w in self.queue.drain(..).chain(self.parked.drain(..)) {
                w.fail(WalkError::ShuttingDown);
            }
            self.queue.push_front(Walk::new(leg, Vec::new(), tx));
            ctx.run_later(self.cfg.shutdown_grace, |act, ctx| act.grace_expired(ctx));
        } else if let Some(w) =
            self.active.iter_mut().chain(self.queue.iter_mut()).find(|w| w.leg.mode == Mode::Forced)
        {
            w.add_waiter(leg, tx);
        } else {
            let _ = tx.send(Ok(lwsys_messages::supervisor::WalkReport {
                state: self.current,
                reached: self.current == SystemState::ContextDestroying,
                pending: None,
            }));
        }
        self.pump(ctx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| Err(WalkError::Internal("supervisor stopped".into())))
        })
    }
}

impl Handler<Resume> for Supervisor {
    type Result = bool;

    fn handle(&mut self, msg: Resume, ctx: &mut Self::Context) -> bool {
        let awaited = match self.awaiting {
            Some(Awaiting::Consent { id, .. }) => self.registry.name_of(id),
            _ => None,
        };
        if awaited.as_deref() == Some(msg.name.as_str()) {
            if let Some(r) = self.round.as_mut() {
                r.early_resume = true;
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
        let id = self.registry.add(&name, kind)?;
        info!(self.log, "notifier registered"; "notifier" => &name, "kind" => msg.kind);
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
        let id = self.registry.add(&msg.name, Kind::Inline(msg.notifier))?;
        info!(self.log, "notifier registered"; "notifier" => &msg.name, "kind" => "inline");
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
    type Result = ResponseActFuture<Self, Explanation>;

    fn handle(&mut self, _msg: Explain, _ctx: &mut Self::Context) -> Self::Result {
        let fut = self.state.send(GetJournal);
        Box::pin(fut.into_actor(self).map(|res, act, _ctx| {
            let parked: Vec<Pending> =
                act.parked.iter().filter_map(|w| w.parked_by().cloned()).collect();
            Explanation {
                state: act.current,
                since_us: act.since_us,
                pending: parked.first().cloned(),
                parked,
                journal: res.map(|j| j.rounds).unwrap_or_default(),
            }
        }))
    }
}

impl Handler<ListNotifiers> for Supervisor {
    type Result = MessageResult<ListNotifiers>;

    fn handle(&mut self, _msg: ListNotifiers, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.registry.infos())
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

impl Handler<ServiceDied> for Supervisor {
    type Result = ();

    /// A supervised service is gone: restart it (durable state reloaded),
    /// unless it died too often, then give up and shut down as failed.
    fn handle(&mut self, msg: ServiceDied, ctx: &mut Self::Context) {
        if self.shutting_down {
            return;
        }
        let Some(sup) = self.supervision.as_mut() else { return };
        let now = tokio::time::Instant::now();
        while sup.restarts.front().is_some_and(|t| now.duration_since(*t) >= sup.limits.window) {
            sup.restarts.pop_front();
        }
        let name = msg.service;
        if sup.restarts.len() >= sup.limits.max {
            let why = format!(
                "the {name} service died {} times within {} s",
                sup.restarts.len() + 1,
                sup.limits.window.as_secs()
            );
            slog::crit!(self.log, "giving up on a service; shutting down"; "service" => name,
                        "restarts" => sup.restarts.len());
            return self.fail(why, name, ctx);
        }
        let current = sup.services.borrow().clone();
        let Some(current) = current else { return };
        let next = match sup.factory.restart(name, &current) {
            Ok(next) => next,
            Err(e) => {
                slog::crit!(self.log, "cannot restart a service; shutting down"; "service" => name,
                            "error" => %e);
                return self.fail(format!("cannot restart the {name} service: {e}"), name, ctx);
            }
        };
        sup.restarts.push_back(now);
        let count = sup.restarts.len();
        sup.factory.watch(&next, Some(name), &ctx.address().recipient());
        let clock = (name == "clock").then(|| (sup.clock_name.clone(), sup.clock_id));
        sup.services.send_replace(Some(next.clone()));
        warn!(self.log, "service died; restarted"; "service" => name, "restarts_in_window" => count);
        if let Some((clock_name, clock_id)) = clock {
            // The new clock takes the old one's place in the consent order,
            // and a walk the old one held is asked again (the new one has
            // deferred nothing it could resume).
            let reg = crate::handle::actor_registration(&clock_name, &next.clock, "builtin");
            let kind = Kind::Actor {
                consent: reg.consent,
                changed: reg.changed,
                aborted: reg.aborted,
                kind: reg.kind,
            };
            let id = self.registry.put(clock_id, &clock_name, kind);
            if let Some(s) = self.supervision.as_mut() {
                s.clock_id = Some(id);
            }
            if self.resume_parked(&clock_name) {
                self.pump(ctx);
            }
        }
        self.emit(SystemEvent::Service(ServiceEvent::Restarted {
            service: name.to_owned(),
            restarts: count,
        }));
    }
}

impl Supervisor {
    /// Give up: publish the failure, tell subscribers, and shut down.
    fn fail(&mut self, why: String, service: &str, ctx: &mut Context<Self>) {
        self.emit(SystemEvent::Service(ServiceEvent::GaveUp {
            service: service.to_owned(),
            reason: why.clone(),
        }));
        self.shutdown_tx.send_replace(RunState::Failed(why));
        ctx.address().do_send(Shutdown);
    }
}

#[cfg(test)]
mod tests;
