//! Plain threads asking for callbacks on the supervisor's event loop (the
//! lws_system `attach` op): each thread queues work for OPERATIONAL before
//! the system gets there, waits with `flush`, and the callbacks run on the
//! loop in the order each thread queued them.
#![allow(clippy::print_stdout)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lwsys::messages::state::SystemState;
use lwsys::Builder;

fn main() {
    let sys = actix::System::new();
    let code = sys.block_on(async {
        // Hold the boot so the threads queue before OPERATIONAL.
        let handle = match Builder::new().boot_target(SystemState::ContextCreated).start() {
            Ok(h) => h,
            Err(e) => {
                eprintln!("cannot build: {e}");
                return 1;
            }
        };
        let ran = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for t in 0..4 {
            let attach = handle.attach_handle().clone();
            let ran = ran.clone();
            threads.push(std::thread::spawn(move || {
                for i in 0..1000 {
                    let ran = ran.clone();
                    let queued = attach.attach(SystemState::Operational, move |ctx| {
                        // On the loop thread, at OPERATIONAL or later.
                        assert!(ctx.state() >= SystemState::Operational);
                        ran.fetch_add(1, Ordering::Relaxed);
                        let _ = (t, i);
                    });
                    if let Err(e) = queued {
                        eprintln!("thread {t}: attach failed: {e}");
                        return false;
                    }
                }
                // Everything this thread queued has run once this returns.
                attach.flush(Duration::from_secs(10)).is_ok()
            }));
        }
        // Let the threads queue, then walk to OPERATIONAL.
        tokio::time::sleep(Duration::from_millis(50)).await;
        println!("queued before OPERATIONAL: {} callbacks ran so far", ran.load(Ordering::Relaxed));
        match handle.steps(SystemState::Operational).await {
            Ok(Ok(r)) if r.reached => println!("reached {}", r.state),
            other => {
                eprintln!("boot failed: {other:?}");
                return 1;
            }
        }
        let joined = tokio::task::spawn_blocking(move || {
            threads.into_iter().all(|t| t.join().unwrap_or(false))
        })
        .await
        .unwrap_or(false);
        let n = ran.load(Ordering::Relaxed);
        println!("4 threads x 1000 callbacks: {n} ran on the loop");
        i32::from(!(joined && n == 4000))
    });
    std::process::exit(code);
}
