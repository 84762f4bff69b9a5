//! A custom actor notifier: it defers TIME_VALID until an (imitated) NTP
//! query has finished, then resumes the walk, printing every state it sees.
//! Exits 0 once the system is OPERATIONAL, 1 if it is not within 10 s.
//!
//! Run with `cargo run -p lwsys-supervisor --example custom_notifier`.
// Printing what it sees is this example's whole output, not logging.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use actix::prelude::*;
use lwsys::messages::state::{Aborted, Changed, Consent, SystemState, Verdict};
use lwsys::{Builder, NotifierSpec, SystemHandle};

/// The notifier's registry name; `resume` refers to it.
const NAME: &str = "ntp";

/// Holds TIME_VALID until the clock has been set.
#[derive(Default)]
struct NtpNotifier {
    handle: Option<SystemHandle>,
    querying: bool,
    synced: bool,
}

impl Actor for NtpNotifier {
    type Context = Context<Self>;
}

/// Hands the notifier the system it belongs to, which only exists once the
/// builder has started it.
#[derive(Message)]
#[rtype(result = "()")]
struct Attach(SystemHandle);

/// Stands in for an NTP exchange: some time on the network, then an offset.
async fn query_ntp() -> i64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    -1_250
}

impl NtpNotifier {
    /// Continue the walk if the clock is set and the system is known. Either
    /// may come first, and resuming when nothing is parked is harmless: the
    /// next ask for TIME_VALID is allowed anyway.
    fn resume_if_ready(&self) {
        if let (true, Some(h)) = (self.synced, self.handle.clone()) {
            actix::spawn(async move {
                match h.resume(NAME).await {
                    Ok(parked) => println!("ntp: resumed the walk (parked: {parked})"),
                    Err(e) => println!("ntp: resume failed: {e}"),
                }
            });
        }
    }
}

impl Handler<Attach> for NtpNotifier {
    type Result = ();

    fn handle(&mut self, msg: Attach, _: &mut Context<Self>) {
        self.handle = Some(msg.0);
        self.resume_if_ready();
    }
}

impl Handler<Consent> for NtpNotifier {
    type Result = ResponseActFuture<Self, Verdict>;

    fn handle(&mut self, m: Consent, ctx: &mut Context<Self>) -> Self::Result {
        println!("ntp: asked {} -> {}", m.current, m.target);
        if m.target != SystemState::TimeValid || self.synced {
            return Box::pin(fut::ready(Verdict::Allow));
        }
        if !self.querying {
            self.querying = true;
            // The query runs on its own; the verdict must not wait for it,
            // or the supervisor's consent deadline would count it as silence.
            ctx.spawn(query_ntp().into_actor(self).map(|offset_ms, act, _| {
                println!("ntp: clock set (offset {offset_ms} ms)");
                act.synced = true;
                act.resume_if_ready();
            }));
        }
        Box::pin(fut::ready(Verdict::defer("waiting for NTP")))
    }
}

impl Handler<Changed> for NtpNotifier {
    type Result = ();

    fn handle(&mut self, m: Changed, _: &mut Context<Self>) {
        println!("ntp: state {} -> {}", m.from, m.to);
    }
}

impl Handler<Aborted> for NtpNotifier {
    type Result = ();

    fn handle(&mut self, m: Aborted, _: &mut Context<Self>) {
        println!("ntp: transition {} -> {} not made", m.current, m.target);
    }
}

fn main() {
    let code = actix_rt::System::new().block_on(async {
        let ntp = NtpNotifier::default().start();
        let handle = match Builder::new().notifiers([NotifierSpec::actor(NAME, &ntp)]).start() {
            Ok(h) => h,
            Err(e) => {
                eprintln!("build failed: {e}");
                return 2;
            }
        };
        ntp.do_send(Attach(handle.clone()));
        match handle.wait_for(SystemState::Operational, Some(Duration::from_secs(10))).await {
            Ok(s) => {
                println!("reached {s}");
                0
            }
            Err(e) => {
                eprintln!("did not reach OPERATIONAL: {e}");
                if let Ok(x) = handle.explain().await {
                    eprintln!("stuck at {}, pending: {:?}", x.state, x.pending);
                }
                1
            }
        }
    });
    std::process::exit(code);
}
