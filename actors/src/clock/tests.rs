//! Tests of `ClockService`: consent rules, `clock.set`, the SNTP client
//! against fake UDP peers and a real chronyd, and the retry schedule.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::softclock::unix_us;
use super::*;
use lwsys_tests::chrony::Chronyd;

fn log() -> Logger {
    Logger::root(slog::Discard, slog::o!())
}

/// Records `Resume` and clock events for the test to wait on.
struct Probe {
    resumes: mpsc::UnboundedSender<String>,
    events: mpsc::UnboundedSender<ClockEvent>,
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<Resume> for Probe {
    type Result = bool;

    fn handle(&mut self, msg: Resume, _ctx: &mut Self::Context) -> bool {
        let _ = self.resumes.send(msg.name);
        true
    }
}

impl Handler<ClockEvent> for Probe {
    type Result = ();

    fn handle(&mut self, msg: ClockEvent, _ctx: &mut Self::Context) {
        let _ = self.events.send(msg);
    }
}

struct Rig {
    clock: Addr<ClockService>,
    resumes: mpsc::UnboundedReceiver<String>,
    events: mpsc::UnboundedReceiver<ClockEvent>,
    ops: Arc<LinuxClockOps>,
}

/// The soft path only: tests run as root and must never step the machine's
/// clock.
fn rig(cfg: ClockConfig, server: ServerName) -> Rig {
    rig_with_ops(cfg, server, LinuxClockOps::new(false, SoftClock::default()))
}

fn rig_with_ops(cfg: ClockConfig, server: ServerName, ops: LinuxClockOps) -> Rig {
    let (rtx, resumes) = mpsc::unbounded_channel();
    let (etx, events) = mpsc::unbounded_channel();
    let probe = Probe { resumes: rtx, events: etx }.start();
    let ops = Arc::new(ops);
    let svc = ClockService::new(&log(), cfg, ops.clone(), server, probe.clone().recipient());
    let clock = ClockService::create(move |ctx| {
        ctx.notify(SubscribeClock(probe.recipient()));
        svc
    });
    Rig { clock, resumes, events, ops }
}

fn sntp_cfg() -> ClockConfig {
    ClockConfig {
        source: TimeSource::Sntp,
        query_timeout: Duration::from_millis(300),
        // One attempt per test unless the test says otherwise.
        backoff_min: Duration::from_secs(600),
        backoff_max: Duration::from_secs(600),
        ..ClockConfig::default()
    }
}

const INTO_TIME_VALID: Consent =
    Consent { current: SystemState::CpdPreTime, target: SystemState::TimeValid };

async fn next_event(rx: &mut mpsc::UnboundedReceiver<ClockEvent>, within: Duration) -> ClockEvent {
    tokio::time::timeout(within, rx.recv()).await.expect("no clock event in time").unwrap()
}

#[actix_rt::test]
async fn consent_defers_only_transitions_that_cross_time_valid() {
    let mut r = rig(sntp_cfg(), server_from_fn(|| "127.0.0.1:9".into()));
    use SystemState::*;
    for (current, target) in [(Initialized, CpdPreTime), (CpdPreTime, ContextDestroying)] {
        let v = r.clock.send(Consent { current, target }).await.unwrap();
        assert_eq!(v, Verdict::Allow, "{current} -> {target}");
    }
    for (current, target) in [(CpdPreTime, TimeValid), (Initialized, Operational)] {
        let v = r.clock.send(Consent { current, target }).await.unwrap();
        assert!(matches!(v, Verdict::Defer { .. }), "{current} -> {target}: {v:?}");
    }
    let v = r.clock.send(Consent { current: TimeValid, target: CpdPostTime }).await.unwrap();
    assert_eq!(v, Verdict::Allow);
    assert!(r.resumes.try_recv().is_err());
}

#[actix_rt::test]
async fn trusted_system_clock_is_valid_at_start() {
    let r = rig(ClockConfig::default(), server_from_fn(String::new));
    assert_eq!(r.clock.send(INTO_TIME_VALID).await.unwrap(), Verdict::Allow);
    let reading = r.clock.send(GetClock).await.unwrap();
    assert!(reading.valid);
    assert_eq!(reading.source, ClockSource::System);
    assert!(reading.unix_us.abs_diff(unix_us()) < 1_000_000);
}

#[actix_rt::test]
async fn untrusted_system_clock_defers_until_the_host_syncs() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("synchronized");
    let ops = LinuxClockOps::new(false, SoftClock::default()).with_sync_marker(&marker);
    let cfg = ClockConfig { trust_unsynced: false, ..ClockConfig::default() };
    let mut r = rig_with_ops(cfg, server_from_fn(String::new), ops);
    assert!(matches!(r.clock.send(INTO_TIME_VALID).await.unwrap(), Verdict::Defer { .. }));
    std::fs::write(&marker, b"").unwrap();
    // The next poll, 10 s of paused time later, sees the marker.
    let name = tokio::time::timeout(Duration::from_secs(30), r.resumes.recv()).await.unwrap();
    assert_eq!(name.as_deref(), Some("clock"));
    assert_eq!(r.clock.send(INTO_TIME_VALID).await.unwrap(), Verdict::Allow);
}

#[actix_rt::test]
async fn set_clock_rejects_wild_times_and_otherwise_resumes_on_the_soft_clock() {
    let mut r = rig(sntp_cfg(), server_from_fn(|| "127.0.0.1:9".into()));
    assert!(matches!(r.clock.send(INTO_TIME_VALID).await.unwrap(), Verdict::Defer { .. }));
    for wild in [0, 946_684_799_999_999, 7_258_118_400_000_001] {
        let e = r.clock.send(SetClock { unix_us: wild }).await.unwrap().unwrap_err();
        assert_eq!(e.code(), lwsys_messages::ErrorCode::BadRequest);
    }
    assert!(r.resumes.try_recv().is_err());
    let target = unix_us() + 86_400_000_000;
    let reading = r.clock.send(SetClock { unix_us: target }).await.unwrap().unwrap();
    assert!(reading.valid);
    assert_eq!(reading.source, ClockSource::Soft);
    assert!(reading.unix_us.abs_diff(target) < 1_000_000);
    // The machine's clock did not move.
    assert!(unix_us() + 3_600_000_000 < target);
    assert!(r.ops.soft().offset_us() > 86_000_000_000);
    assert_eq!(r.resumes.recv().await.as_deref(), Some("clock"));
    assert_eq!(r.clock.send(INTO_TIME_VALID).await.unwrap(), Verdict::Allow);
}

/// A fake NTP server that answers every request with `reply(request)`, or
/// not at all if that is empty.
async fn fake_peer(reply: fn(&[u8]) -> Vec<u8>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let answer = reply(&buf[..n]);
            // An empty answer stands for silence.
            if !answer.is_empty() {
                let _ = sock.send_to(&answer, from).await;
            }
        }
    });
    addr
}

/// A well-formed server reply to `req` (leap 0, v4, mode 4, stratum 2)
/// carrying the host time.
fn good_reply(req: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x24;
    p[1] = 2;
    p[24..32].copy_from_slice(&req[40..48]);
    let now = sntp::ntp_from_unix_us(unix_us()).to_be_bytes();
    p[32..40].copy_from_slice(&now);
    p[40..48].copy_from_slice(&now);
    p
}

async fn assert_rejected(reply: fn(&[u8]) -> Vec<u8>, reason: &str) {
    let addr = fake_peer(reply).await;
    let mut r = rig(sntp_cfg(), server_from_fn(move || addr.to_string()));
    match next_event(&mut r.events, Duration::from_secs(5)).await {
        ClockEvent::Failed { reason: got, server, retry_in_ms } => {
            assert!(got.contains(reason), "{got:?} should say {reason:?}");
            assert_eq!(server, addr.to_string());
            assert!(retry_in_ms >= 480_000, "{retry_in_ms}");
        }
        e => panic!("expected failed, got {e:?}"),
    }
    let v = r.clock.send(INTO_TIME_VALID).await.unwrap();
    assert!(matches!(&v, Verdict::Defer { reason: why } if why.contains(reason)), "{v:?}");
    assert!(r.resumes.try_recv().is_err());
    assert!(!r.clock.send(GetClock).await.unwrap().valid);
}

#[actix_rt::test]
async fn reply_in_client_mode_is_rejected() {
    assert_rejected(
        |q| {
            let mut p = good_reply(q);
            p[0] = 0x23;
            p
        },
        "wrong mode 3",
    )
    .await;
}

#[actix_rt::test]
async fn kiss_of_death_is_rejected_with_its_code() {
    assert_rejected(
        |q| {
            let mut p = good_reply(q);
            p[0] = 0xe4;
            p[1] = 0;
            p[12..16].copy_from_slice(b"RATE");
            p
        },
        "kiss-of-death RATE",
    )
    .await;
}

#[actix_rt::test]
async fn deny_kiss_waits_the_longest_delay() {
    let addr = fake_peer(|q| {
        let mut p = good_reply(q);
        p[1] = 0;
        p[12..16].copy_from_slice(b"DENY");
        p
    })
    .await;
    let cfg = ClockConfig {
        backoff_min: Duration::from_secs(1),
        backoff_max: Duration::from_secs(300),
        ..sntp_cfg()
    };
    let mut r = rig(cfg, server_from_fn(move || addr.to_string()));
    match next_event(&mut r.events, Duration::from_secs(5)).await {
        ClockEvent::Failed { reason, retry_in_ms, .. } => {
            assert_eq!(reason, "kiss-of-death DENY");
            assert_eq!(retry_in_ms, 300_000);
        }
        e => panic!("expected failed, got {e:?}"),
    }
}

#[actix_rt::test]
async fn reply_with_another_origin_is_rejected() {
    assert_rejected(
        |q| {
            let mut p = good_reply(q);
            p[31] ^= 0x80;
            p
        },
        "origin timestamp does not match",
    )
    .await;
}

#[actix_rt::test]
async fn truncated_reply_is_rejected() {
    assert_rejected(|q| good_reply(q)[..40].to_vec(), "truncated reply: 40 bytes").await;
}

#[actix_rt::test]
async fn unsynchronised_server_is_rejected() {
    assert_rejected(
        |q| {
            let mut p = good_reply(q);
            p[0] |= 0xc0;
            p
        },
        "unsynchronised",
    )
    .await;
}

#[actix_rt::test]
async fn silent_server_times_out() {
    assert_rejected(|_| Vec::new(), "no reply within 300 ms").await;
}

#[actix_rt::test]
async fn good_fake_reply_syncs_and_resyncs_periodically() {
    let addr = fake_peer(good_reply).await;
    let cfg = ClockConfig { resync: Duration::from_millis(200), ..sntp_cfg() };
    let mut r = rig(cfg, server_from_fn(move || addr.to_string()));
    for _ in 0..2 {
        match next_event(&mut r.events, Duration::from_secs(5)).await {
            ClockEvent::Synced { offset_us, .. } => assert!(offset_us.abs() < 50_000),
            e => panic!("expected synced, got {e:?}"),
        }
    }
    let reading = r.clock.send(GetClock).await.unwrap();
    assert!(reading.valid && reading.last_offset_us.is_some() && reading.last_sync_us.is_some());
}

#[actix_rt::test]
async fn server_name_is_read_again_at_every_attempt() {
    let good = fake_peer(good_reply).await;
    let silent = fake_peer(|_| Vec::new()).await;
    let reads = Arc::new(AtomicUsize::new(0));
    let counted = reads.clone();
    let cfg = ClockConfig { backoff_min: Duration::from_millis(50), ..sntp_cfg() };
    let mut r = rig(
        cfg,
        server_from_fn(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            if n == 0 { silent } else { good }.to_string()
        }),
    );
    assert!(matches!(
        next_event(&mut r.events, Duration::from_secs(5)).await,
        ClockEvent::Failed { .. }
    ));
    match next_event(&mut r.events, Duration::from_secs(5)).await {
        ClockEvent::Synced { server, .. } => assert_eq!(server, good.to_string()),
        e => panic!("expected synced, got {e:?}"),
    }
    assert_eq!(reads.load(Ordering::SeqCst), 2);
}

#[actix_rt::test]
async fn empty_server_name_falls_back_to_the_default() {
    let silent = fake_peer(|_| Vec::new()).await;
    let cfg = ClockConfig { default_server: silent.to_string(), ..sntp_cfg() };
    let mut r = rig(cfg, server_from_fn(String::new));
    match next_event(&mut r.events, Duration::from_secs(5)).await {
        ClockEvent::Failed { server, .. } => assert_eq!(server, silent.to_string()),
        e => panic!("expected failed, got {e:?}"),
    }
}

#[actix_rt::test]
async fn retries_back_off_exponentially_and_arm_early_by_the_wake_latency() {
    tokio::time::pause();
    let silent = fake_peer(|_| Vec::new()).await;
    let cfg = ClockConfig {
        backoff_min: Duration::from_secs(1),
        backoff_max: Duration::from_secs(8),
        query_timeout: Duration::from_secs(2),
        wake_latency: Duration::from_millis(100),
        ..sntp_cfg()
    };
    let mut r = rig(cfg, server_from_fn(move || silent.to_string()));
    let mut last = tokio::time::Instant::now();
    let mut retry_prev: Option<u64> = None;
    let mut delays = Vec::new();
    for i in 0..7 {
        let ClockEvent::Failed { retry_in_ms, .. } =
            next_event(&mut r.events, Duration::from_secs(60)).await
        else {
            panic!("expected failed")
        };
        let now = tokio::time::Instant::now();
        if let Some(prev) = retry_prev {
            // Time between failures = the armed retry delay + the timeout.
            let gap = (now - last).as_millis() as u64;
            assert!(gap.abs_diff(prev + 2_000) <= 20, "attempt {i}: gap {gap} vs {prev}");
        }
        // Nominal 1, 2, 4, 8, 8 s, less up to 20% jitter (never below 1 s),
        // less the 100 ms wake latency.
        let nominal = 1_000u64 << i.min(3);
        assert!(retry_in_ms <= nominal - 100, "{i}: {retry_in_ms}");
        assert!(retry_in_ms >= (nominal * 8 / 10).max(1_000) - 100, "{i}: {retry_in_ms}");
        delays.push(retry_in_ms);
        retry_prev = Some(retry_in_ms);
        last = now;
    }
    assert!(delays.iter().all(|&d| d < 8_000), "{delays:?}");
}

/// The real-server scenario, against chronyd: deferred until the
/// first sync, then resumed; offset within 50 ms; stopping the server gives
/// `failed` events with backoff; restarting it recovers.
#[actix_rt::test]
async fn chronyd_sync_defers_resumes_and_recovers_after_a_restart() {
    let Some(mut chrony) = Chronyd::start(None) else { return };
    let server = Arc::new(Mutex::new(String::new()));
    let name = server.clone();
    *server.lock().unwrap() = format!("127.0.0.1:{}", chrony.port);
    let cfg = ClockConfig {
        resync: Duration::from_millis(300),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        ..sntp_cfg()
    };
    let mut r = rig(cfg, server_from_fn(move || name.lock().unwrap().clone()));
    assert!(matches!(r.clock.send(INTO_TIME_VALID).await.unwrap(), Verdict::Defer { .. }));
    let resumed = tokio::time::timeout(Duration::from_secs(5), r.resumes.recv()).await;
    assert_eq!(resumed.unwrap().as_deref(), Some("clock"));
    assert_eq!(r.clock.send(INTO_TIME_VALID).await.unwrap(), Verdict::Allow);
    let ClockEvent::Synced { offset_us, delay_us, .. } =
        next_event(&mut r.events, Duration::from_secs(5)).await
    else {
        panic!("expected synced")
    };
    eprintln!("chronyd: offset {offset_us} us, delay {delay_us} us");
    assert!(offset_us.abs() < 50_000, "{offset_us}");
    let reading = r.clock.send(GetClock).await.unwrap();
    assert_eq!(reading.source, ClockSource::Soft);
    assert!(reading.unix_us.abs_diff(unix_us()) < 50_000);

    chrony.stop();
    let started = std::time::Instant::now();
    let mut retries = Vec::new();
    while retries.len() < 4 {
        match next_event(&mut r.events, Duration::from_secs(5)).await {
            ClockEvent::Failed { retry_in_ms, reason, .. } => {
                eprintln!("failed: {reason}, retry in {retry_in_ms} ms");
                retries.push(retry_in_ms);
            }
            ClockEvent::Synced { .. } => assert!(retries.is_empty(), "synced after failures"),
        }
    }
    assert!(retries.windows(2).all(|w| w[1] + 100 >= w[0]), "{retries:?}");
    assert!(retries.iter().all(|&d| (80..=400).contains(&d)), "{retries:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Still valid: the time does not become unknown because a re-sync failed.
    assert!(r.clock.send(GetClock).await.unwrap().valid);

    let port = chrony.port;
    drop(chrony);
    let _chrony = Chronyd::start(Some(port)).unwrap();
    loop {
        if let ClockEvent::Synced { offset_us, .. } =
            next_event(&mut r.events, Duration::from_secs(5)).await
        {
            assert!(offset_us.abs() < 50_000);
            break;
        }
    }
}
