//! Unit tests pinning each consent-engine rule of DESIGN §3.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use lwsys_messages::state::{Aborted, Changed, Consent, RoundOutcome, SystemState, Verdict};
use lwsys_messages::supervisor::{Cycle, WalkError, WalkReport};

use crate::builder::{Builder, NotifierSpec};
use crate::handle::SystemHandle;

use SystemState::*;

/// What a test notifier saw, in order, shared by every notifier of a test.
type Log = Arc<Mutex<Vec<String>>>;

/// How a scripted notifier answers.
#[derive(Clone)]
enum Answer {
    Allow,
    Defer,
    Deny,
    Silent,
    /// Allow, this many ms after being asked.
    AllowAfter(u64),
}

/// An actor notifier answering by script: `rules` maps a target to an
/// answer (first match), `Allow` otherwise.
struct Scripted {
    name: &'static str,
    rules: Vec<(SystemState, Answer)>,
    log: Log,
}

impl Actor for Scripted {
    type Context = Context<Self>;
}

impl Handler<Consent> for Scripted {
    type Result = ResponseFuture<Verdict>;

    fn handle(&mut self, m: Consent, _: &mut Context<Self>) -> Self::Result {
        self.log.lock().unwrap().push(format!("{} consent {}", self.name, m.target));
        let answer = self.rules.iter().find(|(t, _)| *t == m.target).map(|(_, a)| a.clone());
        // A rule fires once, so a later round (after resume) allows.
        self.rules.retain(|(t, _)| *t != m.target);
        Box::pin(async move {
            match answer.unwrap_or(Answer::Allow) {
                Answer::Allow => Verdict::Allow,
                Answer::Defer => Verdict::defer("working"),
                Answer::Deny => Verdict::deny("no"),
                Answer::Silent => futures::future::pending().await,
                Answer::AllowAfter(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Verdict::Allow
                }
            }
        })
    }
}

impl Handler<Changed> for Scripted {
    type Result = ();

    fn handle(&mut self, m: Changed, _: &mut Context<Self>) {
        self.log.lock().unwrap().push(format!("{} changed {}", self.name, m.to));
    }
}

impl Handler<Aborted> for Scripted {
    type Result = ();

    fn handle(&mut self, m: Aborted, _: &mut Context<Self>) {
        self.log.lock().unwrap().push(format!("{} aborted {}", self.name, m.target));
    }
}

fn scripted(name: &'static str, rules: Vec<(SystemState, Answer)>, log: &Log) -> NotifierSpec {
    let addr = Scripted { name, rules, log: log.clone() }.start();
    NotifierSpec::actor(name, &addr)
}

fn held(notifiers: Vec<NotifierSpec>) -> SystemHandle {
    Builder::new()
        .boot_target(ContextCreated)
        .consent_timeout(Duration::from_millis(300))
        .notifiers(notifiers)
        .start()
        .unwrap()
}

fn lines(log: &Log, filter: &str) -> Vec<String> {
    log.lock().unwrap().iter().filter(|l| l.contains(filter)).cloned().collect()
}

async fn settle(h: &SystemHandle) {
    // Changed is sent with do_send after the reply; one more round trip to
    // every actor on this thread lets it land.
    for _ in 0..4 {
        let _ = h.state().await;
        tokio::task::yield_now().await;
    }
}

#[actix_rt::test]
async fn consent_is_asked_in_registration_order() {
    let log = Log::default();
    let h = held(vec![scripted("a", vec![], &log), scripted("b", vec![], &log)]);
    let r = h.steps(PrePrivDrop).await.unwrap().unwrap();
    assert!(r.reached);
    assert_eq!(lines(&log, "consent"), ["a consent PRE_PRIV_DROP", "b consent PRE_PRIV_DROP"]);
}

#[actix_rt::test]
async fn first_non_allow_stops_the_round() {
    let log = Log::default();
    let h = held(vec![
        scripted("a", vec![(PrePrivDrop, Answer::Defer)], &log),
        scripted("b", vec![], &log),
    ]);
    let r = h.steps(PrePrivDrop).await.unwrap().unwrap();
    assert!(!r.reached);
    assert_eq!(r.state, ContextCreated);
    assert_eq!(r.pending.unwrap().by.as_ref(), "a");
    assert!(lines(&log, "b consent").is_empty(), "b must not be asked after a's defer");
}

#[actix_rt::test]
async fn defer_then_resume_continues_from_where_it_parked() {
    let log = Log::default();
    let h = held(vec![scripted("clock", vec![(TimeValid, Answer::Defer)], &log)]);
    let r = h.steps(Operational).await.unwrap().unwrap();
    assert_eq!(r.state, CpdPreTime);
    assert!(!r.reached);
    let p = r.pending.unwrap();
    assert_eq!((p.by.as_ref(), p.reason.as_str(), p.target), ("clock", "working", TimeValid));
    let explained = h.explain().await.unwrap();
    assert_eq!(explained.pending.unwrap().by.as_ref(), "clock");

    assert!(h.resume("clock").await.unwrap());
    assert_eq!(h.wait_for(Operational, None).await.unwrap(), Operational);
    // The resumed walk asked again for TIME_VALID and went on from there.
    let consents = lines(&log, "consent");
    assert_eq!(consents.iter().filter(|l| l.ends_with("TIME_VALID")).count(), 2);
    assert_eq!(consents.iter().filter(|l| l.ends_with("CPD_PRE_TIME")).count(), 1);
}

#[actix_rt::test]
async fn deny_ends_the_request_and_aborts_earlier_allowers() {
    let log = Log::default();
    let h = held(vec![
        scripted("first", vec![], &log),
        scripted("veto", vec![(Initialized, Answer::Deny)], &log),
        scripted("last", vec![], &log),
    ]);
    let err = h.steps(Operational).await.unwrap().unwrap_err();
    match err {
        WalkError::Denied { by, target, state, reason } => {
            assert_eq!(
                (by.as_ref(), target, state, reason.as_str()),
                ("veto", Initialized, PrePrivDrop, "no")
            );
        }
        other => panic!("expected denied, got {other:?}"),
    }
    settle(&h).await;
    assert_eq!(lines(&log, "aborted"), ["first aborted INITIALIZED"]);
    assert!(lines(&log, "last consent INITIALIZED").is_empty());
    assert_eq!(h.state().await.unwrap().state, PrePrivDrop);
}

#[actix_rt::test]
async fn silent_notifier_times_out_as_a_defer() {
    tokio::time::pause();
    let log = Log::default();
    let h = held(vec![scripted("mute", vec![(PrePrivDrop, Answer::Silent)], &log)]);
    let r = h.steps(PrePrivDrop).await.unwrap().unwrap();
    let p = r.pending.unwrap();
    assert_eq!((p.by.as_ref(), p.reason.as_str()), ("mute", "timeout"));
    let j = h.explain().await.unwrap().journal;
    let last = j.last().unwrap();
    assert_eq!(last.verdicts[0].verdict, Verdict::defer("timeout"));
    assert!(last.verdicts[0].latency_us.unwrap() >= 300_000);
}

#[actix_rt::test]
async fn each_request_has_its_own_deadline_though_one_timer_serves_the_walk() {
    tokio::time::pause();
    let log = Log::default();
    // The timer armed for "slow" (due at 300 ms) fires while "mute", asked
    // at 200 ms, still has 200 ms to go: it is moved on, not obeyed.
    let h = held(vec![
        scripted("slow", vec![(PrePrivDrop, Answer::AllowAfter(200))], &log),
        scripted("mute", vec![(PrePrivDrop, Answer::Silent)], &log),
    ]);
    let r = h.steps(PrePrivDrop).await.unwrap().unwrap();
    assert_eq!(r.pending.unwrap().by.as_ref(), "mute");
    let j = h.explain().await.unwrap().journal;
    let v = &j.last().unwrap().verdicts;
    assert_eq!(
        (v[0].verdict.clone(), v[1].verdict.clone()),
        (Verdict::Allow, Verdict::defer("timeout"))
    );
    let (slow, mute) = (v[0].latency_us.unwrap(), v[1].latency_us.unwrap());
    assert!((200_000..300_000).contains(&slow), "{slow}");
    assert!(mute >= 300_000, "{mute}");
    // A walk after it that nobody keeps waiting is not timed out by a
    // timer left from before.
    let r = h.steps(PrePrivDrop).await.unwrap().unwrap();
    assert!(r.reached, "{r:?}");
}

#[actix_rt::test]
async fn stopped_notifier_actor_is_dropped_and_the_walk_goes_on() {
    struct Quitter;
    impl Actor for Quitter {
        type Context = Context<Self>;
    }
    impl Handler<Consent> for Quitter {
        type Result = Verdict;
        fn handle(&mut self, _: Consent, ctx: &mut Context<Self>) -> Verdict {
            ctx.stop();
            Verdict::Allow
        }
    }
    impl Handler<Changed> for Quitter {
        type Result = ();
        fn handle(&mut self, _: Changed, _: &mut Context<Self>) {}
    }
    impl Handler<Aborted> for Quitter {
        type Result = ();
        fn handle(&mut self, _: Aborted, _: &mut Context<Self>) {}
    }
    let addr = Quitter.start();
    let h = held(vec![NotifierSpec::actor("quitter", &addr)]);
    let r = h.steps(Operational).await.unwrap().unwrap();
    assert!(r.reached);
    assert!(h.notifiers().await.unwrap().is_empty());
}

#[actix_rt::test]
async fn steps_to_a_lower_state_is_a_no_op() {
    let log = Log::default();
    let h = held(vec![scripted("a", vec![], &log)]);
    h.steps(Dhcp).await.unwrap().unwrap();
    let before = lines(&log, "consent").len();
    let r = h.steps(Initialized).await.unwrap().unwrap();
    assert_eq!((r.state, r.reached), (Dhcp, true));
    assert_eq!(lines(&log, "consent").len(), before);
}

#[actix_rt::test]
async fn queued_requests_run_in_order() {
    let log = Log::default();
    let h = held(vec![scripted("a", vec![], &log)]);
    let first = h.jump(Dhcp);
    let second = h.jump(Initialized);
    let third = h.jump(Operational);
    let (a, b, c) = futures::join!(first, second, third);
    assert_eq!(a.unwrap().unwrap().state, Dhcp);
    assert_eq!(b.unwrap().unwrap().state, Initialized);
    assert_eq!(c.unwrap().unwrap().state, Operational);
    assert_eq!(
        lines(&log, "consent"),
        ["a consent DHCP", "a consent INITIALIZED", "a consent OPERATIONAL"]
    );
}

#[actix_rt::test]
async fn changed_reaches_every_notifier_exactly_once_per_commit() {
    let log = Log::default();
    let h = held(vec![scripted("a", vec![], &log), scripted("b", vec![], &log)]);
    h.steps(Operational).await.unwrap().unwrap();
    settle(&h).await;
    for who in ["a", "b"] {
        let seen = lines(&log, &format!("{who} changed"));
        assert_eq!(seen.len(), 14, "{who}: {seen:?}");
        let mut states: Vec<_> =
            seen.iter().map(|l| l.rsplit(' ').next().unwrap().to_owned()).collect();
        states.dedup();
        assert_eq!(states.len(), 14);
    }
}

#[actix_rt::test]
async fn journal_records_each_verdict_and_outcome() {
    let log = Log::default();
    let h = held(vec![
        NotifierSpec::inline("fast", |_c, _t| Verdict::Allow),
        scripted("slow", vec![(PrePrivDrop, Answer::Deny)], &log),
    ]);
    let _ = h.steps(PrePrivDrop).await.unwrap();
    let j = h.explain().await.unwrap().journal;
    let round = j.last().unwrap();
    assert_eq!((round.current, round.target), (ContextCreated, PrePrivDrop));
    assert_eq!(round.verdicts.len(), 2);
    assert_eq!(round.verdicts[0].name.as_ref(), "fast");
    assert!(round.verdicts[0].latency_us.is_none());
    assert_eq!(round.verdicts[1].verdict, Verdict::deny("no"));
    assert!(round.verdicts[1].latency_us.is_some());
    assert!(matches!(&round.outcome, RoundOutcome::Denied { by, .. } if by.as_ref() == "slow"));
}

#[actix_rt::test]
async fn a_steps_request_extends_a_walk_in_flight() {
    let log = Log::default();
    let h = held(vec![scripted("a", vec![], &log)]);
    let low = h.steps(Dhcp);
    let high = h.steps(Operational);
    let (low, high) = futures::join!(low, high);
    let low = low.unwrap().unwrap();
    assert!(low.reached && low.state >= Dhcp);
    assert_eq!(high.unwrap().unwrap().state, Operational);
    // One walk: each transition asked once.
    assert_eq!(lines(&log, "consent").len(), 14);
}

#[actix_rt::test]
async fn boot_walk_reaches_the_boot_target_and_build_time_notifiers_see_the_first_transition() {
    let log = Log::default();
    let h = Builder::new().notifiers([scripted("early", vec![], &log)]).start().unwrap();
    assert_eq!(h.wait_for(Operational, Some(Duration::from_secs(5))).await.unwrap(), Operational);
    assert_eq!(lines(&log, "consent").first().unwrap(), "early consent PRE_PRIV_DROP");
}

#[actix_rt::test]
async fn policy_invalidate_cycles_back_to_operational() {
    let log = Log::default();
    let h = held(vec![scripted("a", vec![], &log)]);
    h.steps(Operational).await.unwrap().unwrap();
    log.lock().unwrap().clear();
    let r = h.cycle(Cycle::PolicyInvalidate).await.unwrap().unwrap();
    assert_eq!((r.state, r.reached), (Operational, true));
    let consents = lines(&log, "consent");
    assert_eq!(consents[0], "a consent POLICY_INVALID");
    assert_eq!(consents[1], "a consent INITIALIZED");
    assert_eq!(consents.last().unwrap(), "a consent OPERATIONAL");
    assert_eq!(consents.len(), 2 + 12);
}

#[actix_rt::test]
async fn enter_modal_can_be_denied_and_leave_modal_returns_to_operational() {
    let log = Log::default();
    let h = held(vec![scripted("busy", vec![(ModalUpdating, Answer::Deny)], &log)]);
    h.steps(Operational).await.unwrap().unwrap();
    let err = h.cycle(Cycle::EnterModal).await.unwrap().unwrap_err();
    assert!(matches!(
        err,
        WalkError::Denied { target: ModalUpdating, state: AwaitingModalUpdating, .. }
    ));
    let r = h.cycle(Cycle::LeaveModal).await.unwrap().unwrap();
    assert_eq!(r.state, Operational);
    let r = h.cycle(Cycle::EnterModal).await.unwrap().unwrap();
    assert_eq!((r.state, r.reached), (ModalUpdating, true));
}

#[actix_rt::test]
async fn enter_modal_past_defer_goes_past_a_defer_and_a_silence_but_not_a_deny() {
    let log = Log::default();
    let h = held(vec![
        scripted("slow", vec![(ModalUpdating, Answer::Defer)], &log),
        scripted("mute", vec![(ModalUpdating, Answer::Silent)], &log),
        scripted("last", vec![], &log),
    ]);
    h.steps(Operational).await.unwrap().unwrap();
    log.lock().unwrap().clear();
    let r = h.cycle(Cycle::EnterModalPastDefer).await.unwrap().unwrap();
    assert_eq!((r.state, r.reached), (ModalUpdating, true));
    // Everyone was still asked, past the defer and the timeout.
    let asked = lines(&log, "consent MODAL_UPDATING");
    assert_eq!(
        asked,
        [
            "slow consent MODAL_UPDATING",
            "mute consent MODAL_UPDATING",
            "last consent MODAL_UPDATING"
        ]
    );
    let x = h.explain().await.unwrap();
    let round = x.journal.iter().rev().find(|j| j.target == ModalUpdating).unwrap();
    assert_eq!(round.outcome, RoundOutcome::Forced);
    h.cycle(Cycle::LeaveModal).await.unwrap().unwrap();
    let h2 = held(vec![scripted("guard", vec![(ModalUpdating, Answer::Deny)], &log)]);
    h2.steps(Operational).await.unwrap().unwrap();
    let err = h2.cycle(Cycle::EnterModalPastDefer).await.unwrap().unwrap_err();
    assert!(matches!(err, WalkError::Denied { target: ModalUpdating, .. }), "{err:?}");
}

#[actix_rt::test]
async fn a_health_round_asks_everyone_at_operational_and_changes_nothing() {
    let log = Log::default();
    let mut rounds = 0;
    let h = held(vec![
        scripted("a", vec![], &log),
        NotifierSpec::inline("db", move |c, t| {
            rounds += u32::from(c == Operational && t == Operational);
            if rounds == 1 && c == t {
                Verdict::defer("warming up")
            } else {
                Verdict::Allow
            }
        }),
    ]);
    // Not at OPERATIONAL: nobody is asked.
    let r = h.cycle(Cycle::HealthCheck).await.unwrap().unwrap();
    assert_eq!((r.state, r.reached), (ContextCreated, false));
    h.steps(Operational).await.unwrap().unwrap();
    log.lock().unwrap().clear();
    // db defers its first health round: not yet, and nothing is parked.
    let r = h.cycle(Cycle::HealthCheck).await.unwrap().unwrap();
    assert_eq!((r.state, r.reached), (Operational, false));
    assert_eq!(r.pending.unwrap().by.as_ref(), "db");
    assert!(h.explain().await.unwrap().parked.is_empty());
    // Asked again, all allow: healthy; the state never moved.
    let r = h.cycle(Cycle::HealthCheck).await.unwrap().unwrap();
    assert_eq!((r.state, r.reached), (Operational, true));
    assert_eq!(lines(&log, "a consent OPERATIONAL").len(), 2);
    assert!(lines(&log, "changed").is_empty() && lines(&log, "aborted").is_empty());
    let x = h.explain().await.unwrap();
    let round = x.journal.last().unwrap();
    assert_eq!((round.current, round.target), (Operational, Operational));
    assert_eq!(round.outcome, RoundOutcome::Committed);
    // An inline notifier sees the round as OPERATIONAL -> OPERATIONAL.
    let h2 = held(vec![NotifierSpec::inline("db", |c, t| {
        if c == Operational && t == Operational {
            Verdict::deny("disk full")
        } else {
            Verdict::Allow
        }
    })]);
    h2.steps(Operational).await.unwrap().unwrap();
    let err = h2.cycle(Cycle::HealthCheck).await.unwrap().unwrap_err();
    assert!(
        matches!(&err, WalkError::Denied { by, reason, .. } if by.as_ref() == "db" && reason == "disk full"),
        "{err:?}"
    );
    assert_eq!(h2.state().await.unwrap().state, Operational);
}

#[actix_rt::test]
async fn force_modal_goes_past_a_deny_and_the_notifier_is_still_asked() {
    let log = Log::default();
    let h = held(vec![scripted("guard", vec![(ModalUpdating, Answer::Deny)], &log)]);
    h.steps(Operational).await.unwrap().unwrap();
    let r = h.cycle(Cycle::ForceModal).await.unwrap().unwrap();
    assert_eq!((r.state, r.reached), (ModalUpdating, true));
    assert_eq!(lines(&log, "consent MODAL_UPDATING"), ["guard consent MODAL_UPDATING"]);
    let x = h.explain().await.unwrap();
    let round = x.journal.iter().rev().find(|j| j.target == ModalUpdating).unwrap();
    assert_eq!(round.outcome, RoundOutcome::Forced);
    assert!(!round.verdicts[0].verdict.is_allow());
}

#[actix_rt::test]
async fn shutdown_cannot_be_vetoed_and_notifiers_see_context_destroying() {
    let log = Log::default();
    let h = held(vec![scripted("stubborn", vec![(ContextDestroying, Answer::Deny)], &log)]);
    h.steps(Operational).await.unwrap().unwrap();
    let r = h.shutdown().await.unwrap().unwrap();
    assert_eq!(r.state, ContextDestroying);
    settle(&h).await;
    assert_eq!(lines(&log, "changed CONTEXT_DESTROYING").len(), 1);
    assert!(matches!(h.steps(Operational).await.unwrap(), Err(WalkError::ShuttingDown)));
}

#[actix_rt::test]
async fn shutdown_is_bounded_by_the_grace_period() {
    tokio::time::pause();
    let log = Log::default();
    let h = Builder::new()
        .boot_target(ContextCreated)
        .consent_timeout(Duration::from_secs(60))
        .shutdown_grace(Duration::from_millis(200))
        .notifiers([scripted("mute", vec![(ContextDestroying, Answer::Silent)], &log)])
        .start()
        .unwrap();
    let r = h.shutdown().await.unwrap().unwrap();
    assert_eq!(r.state, ContextDestroying);
    let j = h.explain().await.unwrap().journal;
    assert_eq!(j.last().unwrap().outcome, RoundOutcome::Forced);
}

#[actix_rt::test]
async fn a_new_request_for_a_parked_target_continues_the_walk() {
    let log = Log::default();
    let h = held(vec![scripted("a", vec![(Dhcp, Answer::Defer)], &log)]);
    let r = h.steps(Dhcp).await.unwrap().unwrap();
    assert!(!r.reached);
    let r = h.steps(Dhcp).await.unwrap().unwrap();
    assert_eq!((r.state, r.reached), (Dhcp, true));
    assert!(h.explain().await.unwrap().parked.is_empty());
}

#[actix_rt::test]
async fn unregistering_the_deferring_notifier_continues_the_walk() {
    let log = Log::default();
    let h = held(vec![scripted("gone", vec![(Dhcp, Answer::Defer)], &log)]);
    let r = h.steps(Operational).await.unwrap().unwrap();
    assert_eq!(r.state, IfaceColdplug);
    h.unregister("gone").await.unwrap();
    assert_eq!(h.wait_for(Operational, Some(Duration::from_secs(5))).await.unwrap(), Operational);
}

#[actix_rt::test]
async fn the_journal_names_a_notifier_that_left_and_a_full_journal_keeps_the_newest_rounds() {
    let log = Log::default();
    // "gone" defers DHCP and then leaves, which lets the walk go on.
    let walk_without_gone = |journal_len| {
        let h = Builder::new()
            .boot_target(ContextCreated)
            .journal_len(journal_len)
            .notifiers(vec![
                NotifierSpec::inline("first", |_c, _t| Verdict::Allow),
                scripted("gone", vec![(Dhcp, Answer::Defer)], &log),
            ])
            .start()
            .unwrap();
        async move {
            let r = h.steps(Operational).await.unwrap().unwrap();
            assert_eq!(r.state, IfaceColdplug);
            h.unregister("gone").await.unwrap();
            let reached = h.wait_for(Operational, Some(Duration::from_secs(5))).await.unwrap();
            assert_eq!(reached, Operational);
            h.explain().await.unwrap().journal
        }
    };
    let j = walk_without_gone(4).await;
    // The 4 newest rounds, in order, ending with the commit of OPERATIONAL.
    assert_eq!(j.len(), 4);
    assert!(j.windows(2).all(|w| w[0].target < w[1].target), "{j:?}");
    assert_eq!(j.last().map(|r| r.target), Some(Operational));
    // With room for every round, the deferred one is kept, and still
    // names the notifier that left since.
    let j = walk_without_gone(64).await;
    let deferred = j
        .iter()
        .find(|r| matches!(&r.outcome, RoundOutcome::Deferred { .. }))
        .expect("the deferred round is kept");
    let names: Vec<&str> = deferred.verdicts.iter().map(|v| v.name.as_ref()).collect();
    assert_eq!(names, ["first", "gone"]);
    assert_eq!(deferred.verdicts[1].verdict, Verdict::defer("working"));
    assert!(deferred.verdicts[1].latency_us.is_some());
    // Rounds after it no longer ask the notifier that left.
    let last = j.last().unwrap();
    assert_eq!(last.verdicts.iter().map(|v| v.name.as_ref()).collect::<Vec<_>>(), ["first"]);
}

#[actix_rt::test]
async fn other_requests_run_while_a_walk_is_parked() {
    let log = Log::default();
    let h = held(vec![scripted("a", vec![(TimeValid, Answer::Defer)], &log)]);
    let r = h.steps(Operational).await.unwrap().unwrap();
    assert_eq!(r.state, CpdPreTime);
    let r = h.jump(Dhcp).await.unwrap().unwrap();
    assert_eq!((r.state, r.reached), (Dhcp, true));
    // The parked walk continues from DHCP, the state current now.
    h.resume("a").await.unwrap();
    assert_eq!(h.wait_for(Operational, Some(Duration::from_secs(5))).await.unwrap(), Operational);
}

#[actix_rt::test]
async fn inline_notifiers_consent_and_are_told_of_changes() {
    struct Counting(Arc<Mutex<Vec<SystemState>>>);
    impl crate::InlineNotifier for Counting {
        fn consent(&mut self, _c: SystemState, t: SystemState) -> Verdict {
            if t == Dhcp {
                Verdict::deny("no network")
            } else {
                Verdict::Allow
            }
        }
        fn changed(&mut self, ch: Changed) {
            self.0.lock().unwrap().push(ch.to);
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let h = held(vec![NotifierSpec::inline("net", Counting(seen.clone()))]);
    let err = h.steps(Operational).await.unwrap().unwrap_err();
    assert!(matches!(err, WalkError::Denied { target: Dhcp, .. }));
    assert_eq!(*seen.lock().unwrap(), [PrePrivDrop, Initialized, CollectingStdin, IfaceColdplug]);
}

#[actix_rt::test]
async fn a_resume_racing_ahead_of_the_defer_is_not_lost() {
    // The notifier sends Resume before answering Defer: the dependency is
    // already done, so the walk must not stay parked.
    struct Racer(Option<SystemHandle>, bool);
    impl Actor for Racer {
        type Context = Context<Self>;
    }
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Handle(SystemHandle);
    impl Handler<Handle> for Racer {
        type Result = ();
        fn handle(&mut self, m: Handle, _: &mut Context<Self>) {
            self.0 = Some(m.0);
        }
    }
    impl Handler<Consent> for Racer {
        type Result = ResponseFuture<Verdict>;
        fn handle(&mut self, m: Consent, _: &mut Context<Self>) -> Self::Result {
            let h = self.0.clone();
            let first = m.target == TimeValid && !std::mem::replace(&mut self.1, true);
            Box::pin(async move {
                if first {
                    if let Some(h) = h {
                        let _ = h.resume("racer").await;
                        return Verdict::defer("done already");
                    }
                }
                Verdict::Allow
            })
        }
    }
    impl Handler<Changed> for Racer {
        type Result = ();
        fn handle(&mut self, _: Changed, _: &mut Context<Self>) {}
    }
    impl Handler<Aborted> for Racer {
        type Result = ();
        fn handle(&mut self, _: Aborted, _: &mut Context<Self>) {}
    }
    let addr = Racer(None, false).start();
    let h = held(vec![NotifierSpec::actor("racer", &addr)]);
    addr.send(Handle(h.clone())).await.unwrap();
    let r: WalkReport = h.steps(Operational).await.unwrap().unwrap();
    assert_eq!((r.state, r.reached), (Operational, true));
}

#[actix_rt::test]
async fn a_notifier_that_always_resumes_before_deferring_cannot_spin_the_supervisor() {
    struct Spinner(Option<SystemHandle>);
    impl Actor for Spinner {
        type Context = Context<Self>;
    }
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Handle(SystemHandle);
    impl Handler<Handle> for Spinner {
        type Result = ();
        fn handle(&mut self, m: Handle, _: &mut Context<Self>) {
            self.0 = Some(m.0);
        }
    }
    impl Handler<Consent> for Spinner {
        type Result = ResponseFuture<Verdict>;
        fn handle(&mut self, _m: Consent, _: &mut Context<Self>) -> Self::Result {
            let h = self.0.clone();
            Box::pin(async move {
                if let Some(h) = h {
                    let _ = h.resume("spinner").await;
                }
                Verdict::defer("again")
            })
        }
    }
    impl Handler<Changed> for Spinner {
        type Result = ();
        fn handle(&mut self, _: Changed, _: &mut Context<Self>) {}
    }
    impl Handler<Aborted> for Spinner {
        type Result = ();
        fn handle(&mut self, _: Aborted, _: &mut Context<Self>) {}
    }
    let addr = Spinner(None).start();
    let h = held(vec![NotifierSpec::actor("spinner", &addr)]);
    addr.send(Handle(h.clone())).await.unwrap();
    let r = h.steps(PrePrivDrop).await.unwrap().unwrap();
    assert!(!r.reached);
    assert_eq!(r.pending.unwrap().by.as_ref(), "spinner");
    let rounds = h.explain().await.unwrap().journal.len();
    assert_eq!(rounds, 1 + crate::supervisor::MAX_EARLY_RESUMES as usize);
}

#[actix_rt::test]
async fn a_resumed_jump_does_not_move_the_state_back_down() {
    let log = Log::default();
    let h = held(vec![scripted("net", vec![(Dhcp, Answer::Defer)], &log)]);
    let r = h.jump(Dhcp).await.unwrap().unwrap();
    assert!(!r.reached);
    // The system goes past DHCP while the jump is parked.
    let r = h.jump(Operational).await.unwrap().unwrap();
    assert_eq!(r.state, Operational);
    h.resume("net").await.unwrap();
    let _ = h.explain().await.unwrap();
    assert_eq!(h.state().await.unwrap().state, Operational, "the resumed jump went back");
}

#[actix_rt::test]
async fn a_resumed_jump_runs_when_nothing_moved_meanwhile() {
    let log = Log::default();
    let h = held(vec![scripted("net", vec![(ContextCreated, Answer::Defer)], &log)]);
    h.steps(Operational).await.unwrap().unwrap();
    let r = h.jump(ContextCreated).await.unwrap().unwrap();
    assert_eq!((r.state, r.reached), (Operational, false));
    h.resume("net").await.unwrap();
    // Resumed with the state unchanged: the downward jump is made.
    let mut state = h.state().await.unwrap().state;
    // No sleeps: each round trip lets the re-ask and the commit land.
    for _ in 0..50 {
        if state == ContextCreated {
            break;
        }
        settle(&h).await;
        state = h.state().await.unwrap().state;
    }
    assert_eq!(state, ContextCreated);
}
