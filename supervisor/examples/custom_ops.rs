//! Embedding lwsys with your own platform ops: a program supplies a
//! `SystemOps` whose reboot only records that it was called, builds a
//! system with it, waits for OPERATIONAL, reboots through the handle, and
//! checks that its op ran after the system passed through
//! CONTEXT_DESTROYING. Exits 0 when it did.
//!
//! Run with `cargo run -p lwsys-supervisor --example custom_ops`.
#![allow(clippy::print_stdout)]

use std::sync::{Arc, Mutex};

use lwsys::messages::state::{Changed, SystemState, Verdict};
use lwsys::{Builder, InlineNotifier};
use lwsys_actors::platform::{OpError, SetOutcome, SystemOps};

/// What happened, in order, as the notifier and the ops saw it.
type Journal = Arc<Mutex<Vec<String>>>;

fn note(j: &Journal, what: String) {
    if let Ok(mut j) = j.lock() {
        j.push(what);
    }
}

/// This platform's ops: reboot is recorded (a real device would write a
/// watchdog register or call its bootloader); the clock cannot be set.
struct RecordingOps {
    journal: Journal,
}

impl SystemOps for RecordingOps {
    fn reboot(&self) -> Result<(), OpError> {
        note(&self.journal, "reboot op called".into());
        Ok(())
    }

    fn set_clock(&self, _unix_us: u64) -> Result<SetOutcome, OpError> {
        Err(OpError::NotProvided("set_clock"))
    }

    fn wake_latency_us(&self) -> u64 {
        2_000
    }
}

/// A notifier that writes down every change it is told of.
struct Watcher {
    journal: Journal,
}

impl InlineNotifier for Watcher {
    fn consent(&mut self, _current: SystemState, _target: SystemState) -> Verdict {
        Verdict::Allow
    }

    fn changed(&mut self, c: Changed) {
        if c.to == SystemState::ContextDestroying {
            note(&self.journal, format!("notifier told {} -> {}", c.from, c.to));
        }
    }
}

fn main() -> anyhow::Result<()> {
    let journal = Journal::default();
    let ops = Arc::new(RecordingOps { journal: journal.clone() });
    let watcher = Watcher { journal: journal.clone() };
    actix::System::new().block_on(async move {
        let sys = Builder::new()
            .system_ops(ops)
            .notifiers([lwsys::NotifierSpec::inline("watcher", watcher)])
            .start()?;
        sys.wait_for(SystemState::Operational, None).await?;
        println!("ops present: {:?}", sys.ops().present());
        sys.reboot().await?;
        anyhow::Ok(())
    })?;
    let journal = journal.lock().map_err(|_| anyhow::anyhow!("journal poisoned"))?.clone();
    for line in &journal {
        println!("{line}");
    }
    anyhow::ensure!(
        journal == ["notifier told OPERATIONAL -> CONTEXT_DESTROYING", "reboot op called"],
        "the reboot op must run once, after CONTEXT_DESTROYING"
    );
    println!("custom reboot op ran after CONTEXT_DESTROYING");
    Ok(())
}
