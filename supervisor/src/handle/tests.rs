//! Tests of the handle: restarts behind it, blocking use, what it answers
//! after a shutdown.

use lwsys_messages::blobs::BlobKind;
use lwsys_messages::lifecycle::Crash;

use crate::services::ServiceConfig;
use crate::Builder;

/// Crash the service `pick` names and wait until the supervisor has
/// published its replacement.
async fn restart<A>(
    h: &super::SystemHandle,
    pick: impl Fn(&crate::services::Services) -> actix::Addr<A>,
) where
    A: actix::Actor + actix::Handler<Crash>,
    A::Context: actix::dev::ToEnvelope<A, Crash>,
{
    let mut watch = h.inner.services.clone();
    let old = pick(&h.services().unwrap());
    let _ = old.send(Crash).await;
    while h.services().map(|s| pick(&s)) == Some(old.clone()) {
        watch.changed().await.unwrap();
    }
}

#[actix_rt::test]
async fn handles_taken_before_a_service_restart_reach_the_new_service() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServiceConfig {
        state_dir: Some(dir.path().to_owned()),
        durable: vec![BlobKind::DeviceSerial],
        ..ServiceConfig::default()
    };
    let h = Builder::new().services(cfg).start().unwrap();
    let serial = h.blob(BlobKind::DeviceSerial, 0).unwrap();
    serial.set(&b"SN-1"[..]).await.unwrap();

    restart(&h, |s| s.blobs.clone()).await;
    // The durable value was reloaded, and the old handle reaches it.
    assert_eq!(&serial.get(0, None).await.unwrap().data[..], b"SN-1");
    serial.set(&b"SN-2"[..]).await.unwrap();
    assert_eq!(serial.size().await.unwrap(), 4);

    restart(&h, |s| s.trust.clone()).await;
    // No trust store is configured, so the answer is "none trusted";
    // before the fix this was a closed mailbox.
    let found = h.ops().jit_trust_query(&[0xab; 20]).await;
    assert!(!matches!(found, Err(lwsys_actors::platform::OpError::Failed { .. })), "{found:?}");
}

#[actix_rt::test]
async fn a_blocking_wait_with_a_timeout_works_on_a_thread_without_a_runtime() {
    use lwsys_messages::state::SystemState;
    let h = Builder::new().boot_target(SystemState::ContextCreated).start().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let h2 = h.clone();
    std::thread::spawn(move || {
        let t = Some(std::time::Duration::from_millis(50));
        let _ = tx.send(h2.blocking().wait_for(SystemState::Operational, t));
    });
    // Awaited, so the event loop keeps serving the state service.
    let got = rx.await.unwrap();
    assert!(matches!(got, Err(super::Error::WaitTimedOut(_))), "{got:?}");
    assert_eq!(h.waiters().await.unwrap(), 0);
}

#[actix_rt::test]
async fn a_handle_kept_after_shutdown_answers_from_what_the_system_left() {
    use lwsys_messages::attach::AttachError;
    use lwsys_messages::blobs::BlobError;
    use lwsys_messages::state::SystemState::*;
    use lwsys_messages::supervisor::WalkError;

    let h = Builder::new().services(ServiceConfig::default()).start().unwrap();
    let serial = h.blob(BlobKind::DeviceSerial, 0).unwrap();
    assert!(h.steps(Operational).await.unwrap().unwrap().reached);
    let r = h.shutdown().await.unwrap().unwrap();
    assert_eq!((r.state, r.reached), (ContextDestroying, true));
    // Queued behind the teardown, so answered from its last words.
    let why = h.explain().await.unwrap();
    assert!(h.is_torn_down());
    assert_eq!(why.state, ContextDestroying);
    assert_eq!(why.journal.last().map(|j| j.target), Some(ContextDestroying));
    assert_eq!(h.state().await.unwrap().state, ContextDestroying);
    assert_eq!(h.wait_for(Operational, None).await, Ok(ContextDestroying));
    assert!(matches!(h.wait_for(ModalUpdating, None).await, Err(super::Error::Gone(_))));
    assert_eq!(h.steps(Operational).await, Ok(Err(WalkError::ShuttingDown)));
    let again = h.shutdown().await.unwrap().unwrap();
    assert_eq!((again.state, again.reached), (ContextDestroying, true));
    // The services and attach have stopped; handles taken from the
    // system say so rather than hang.
    assert_eq!(serial.size().await, Err(BlobError::Unavailable));
    assert!(matches!(h.attach_stats().await, Err(super::Error::Gone(_))));
    assert_eq!(h.attach(Operational, |_| {}).unwrap_err(), AttachError::Shutdown);
}

#[actix_rt::test]
async fn durable_blob_writes_do_not_need_the_event_loop() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServiceConfig {
        state_dir: Some(dir.path().to_owned()),
        durable: vec![BlobKind::DeviceSerial],
        ..ServiceConfig::default()
    };
    let h = Builder::new().services(cfg).start().unwrap();
    let serial = h.blob(BlobKind::DeviceSerial, 0).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = futures::executor::block_on(serial.set(&b"SN-1"[..]));
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    // This thread, the event loop, is held until the write is answered:
    // the write (and its fsync) can only finish on a thread of its own.
    let done = rx.recv_timeout(std::time::Duration::from_secs(20));
    assert_eq!(done, Ok(Ok(4)), "the blob service needed the event loop");
}
