//! Hostile clients against the real `lwsysd` (issue 14): each test plays
//! one attacker and asserts the bound it must hit, with its figure, and
//! that an admin is still served. Clients that never read (pipelined
//! `blob.get`s, events, attached `blob.get`s all ready at once), clients
//! that half-close and never read, a notifier that half-closes while
//! asked, thousands of connect-wait-close and connect-attach-close cycles
//! (2,000 each; 20,000 with `LWSYS_SLOW=1`), idle connections, attach
//! floods, and idle read-only clients filling the connection slots while
//! root needs one (those run as uid 65534 and need root; without it they
//! say so and pass).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lwsys_tests::{bin_path, Client, Options, TestDaemon, WAIT};
use serde_json::{json, Value};

/// `nobody` on Debian: the read-only user of the tests that need one.
const OTHER: u32 = 65534;

fn slow() -> bool {
    std::env::var_os("LWSYS_SLOW").is_some_and(|v| v == "1")
}

fn at_context_created(config: &str) -> TestDaemon {
    TestDaemon::with(Options {
        config: Some(config.to_owned()),
        args: vec!["--boot-target".into(), "CONTEXT_CREATED".into()],
        ..Options::default()
    })
}

/// Poll `system.info` until `done` holds (each poll is a round trip, so
/// this waits on the daemon's own report); panics with the last report
/// after [`WAIT`].
fn info_until(c: &mut Client, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let info = c.ok("system.info", json!({}));
        if done(&info) {
            return info;
        }
        assert!(Instant::now() < deadline, "never {what}; last system.info: {info}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connect, send `lines`, and read until the reply with id `until`
/// arrives; then hang up. Returns that reply.
fn one_cycle(d: &TestDaemon, lines: &str, until: u64) -> Value {
    let mut s = UnixStream::connect(d.socket()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(lines.as_bytes()).unwrap();
    let mut r = BufReader::new(&s);
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "closed before reply {until}");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["id"] == until {
            return v;
        }
    }
}

#[test]
fn a_client_that_never_reads_is_cut_off_at_its_queue_bound_and_others_are_served() {
    // 64 KiB blobs: the queue bound is raised to one blob.get reply at
    // worst, 4 * ceil(65536 / 3) + 6 * 65536 + 4096 = 484,696 bytes.
    let mut d =
        at_context_created("[control]\nclient_queue_bytes = 1\n[blobs]\nmax_bytes = 65536\n");
    let mut admin = d.connect();
    admin.ok("blob.set", json!({"kind": "DEVICE_TYPE", "data": "t".repeat(65536)}));
    admin.ok("subscribe", json!({"events": ["state", "notifier"]}));
    let rss0 = d.rss_kib();
    // Ask for 2,000 copies (about 175 MB of replies) and never read one.
    let mut slow = UnixStream::connect(d.socket()).unwrap();
    slow.set_write_timeout(Some(WAIT)).unwrap();
    let req = b"{\"op\":\"blob.get\",\"kind\":\"DEVICE_TYPE\"}\n";
    let mut sent = 0;
    while sent < 2000 && slow.write_all(req).is_ok() {
        sent += 1;
    }
    let line = d.wait_log("not reading");
    assert!(line.contains("queue_bytes: 484696"), "{line}");
    let grown = d.rss_kib().saturating_sub(rss0);
    assert!(grown < 8 * 1024, "RSS grew {grown} KiB (bound 8 MiB) for a client that never read");
    // The same with events: a subscriber that never reads, and a flood
    // of state changes.
    let mut deaf = UnixStream::connect(d.socket()).unwrap();
    deaf.write_all(b"{\"op\":\"subscribe\",\"events\":[\"state\",\"notifier\"]}\n").unwrap();
    let mut jumps = 0;
    while d.logs().matches("not reading").count() < 2 {
        assert!(jumps < 100_000, "a deaf subscriber outlived {jumps} state changes");
        for target in ["PRE_PRIV_DROP", "CONTEXT_CREATED"] {
            admin.ok("state.jump", json!({"target": target}));
        }
        jumps += 2;
    }
    d.wait_log_count("not reading", 2);
    let grown = d.rss_kib().saturating_sub(rss0);
    assert!(
        grown < 8 * 1024,
        "RSS grew {grown} KiB (bound 8 MiB) for a subscriber that never read"
    );
    drop((slow, deaf));
    let mut other = d.connect();
    assert_eq!(other.ok("blob.get", json!({"kind": "DEVICE_TYPE"}))["size"], 65536);
    info_until(&mut other, "back to two clients", |i| i["clients"]["connected"] == 2);
}

#[test]
fn attach_items_that_become_ready_together_make_only_a_few_large_replies_at_once() {
    let mut d = at_context_created("");
    let mut admin = d.connect();
    // A 1 MiB blob: each blob.get reply is about 2.4 MB.
    let half = "t".repeat(512 * 1024);
    admin.ok("blob.set", json!({"kind": "DEVICE_TYPE", "data": half}));
    admin.ok("blob.append", json!({"kind": "DEVICE_TYPE", "data": half}));
    let rss0 = d.rss_kib();
    // 64 attached blob.gets (this connection's whole quota), all ready at
    // the same commit, from a client that never reads.
    let mut deaf = UnixStream::connect(d.socket()).unwrap();
    let req = "{\"op\":\"attach\",\"state\":\"PRE_PRIV_DROP\",\"request\":{\"op\":\"blob.get\",\"kind\":\"DEVICE_TYPE\"}}\n";
    deaf.write_all(req.repeat(64).as_bytes()).unwrap();
    info_until(&mut admin, "64 attaches", |i| i["clients"]["attach_pending"] == 64);
    admin.ok("state.steps", json!({"target": "PRE_PRIV_DROP"}));
    d.wait_log("not reading");
    let grown = d.rss_kib().saturating_sub(rss0);
    // Without the large-reply permits all 64 copies (64 MiB) were made at
    // once; now 4 replies at most besides the 8 MiB queue.
    assert!(grown < 40 * 1024, "RSS grew {grown} KiB (bound 40 MiB)");
    info_until(&mut admin, "the attaches released", |i| i["clients"]["attach_pending"] == 0);
    drop(deaf);
}

#[test]
fn a_client_that_half_closes_and_never_reads_is_let_go_within_the_linger() {
    let d = at_context_created("");
    let mut admin = d.connect();
    // Services the jumps wake open what they need first.
    for target in ["PRE_PRIV_DROP", "CONTEXT_CREATED"] {
        admin.ok("state.jump", json!({"target": target}));
    }
    let fds0 = d.fd_count();
    // A subscriber that is sent about 4000 events (some 360 KB: under the
    // queue bound, over the socket buffer) and a wait that will never be
    // answered, then EOF on its writing side while it keeps the socket
    // and reads nothing.
    let mut s = UnixStream::connect(d.socket()).unwrap();
    s.write_all(b"{\"op\":\"subscribe\",\"events\":[\"state\"]}\n").unwrap();
    s.write_all(b"{\"op\":\"state.wait\",\"state\":\"OPERATIONAL\"}\n").unwrap();
    info_until(&mut admin, "a wait", |i| i["waiters"] == 1);
    for _ in 0..2000 {
        for target in ["PRE_PRIV_DROP", "CONTEXT_CREATED"] {
            admin.ok("state.jump", json!({"target": target}));
        }
    }
    let t0 = Instant::now();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    // The wait goes at once; the slot when the queued events are written
    // or the 5 s linger ends, whichever is first.
    info_until(&mut admin, "the wait released", |i| i["waiters"] == 0);
    info_until(&mut admin, "the slot released", |i| i["clients"]["connected"] == 1);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(8), "slot held {took:?}, bound 5 s linger (+3 s slack)");
    let fds = d.fd_count();
    assert!(fds <= fds0, "{fds} fds open, {fds0} before");
    drop(s);
}

#[test]
fn a_notifier_that_half_closes_while_asked_lets_the_round_go_on_at_once() {
    // A minute of consent timeout: the round must not wait for it.
    let d = at_context_created("[supervisor]\nconsent_timeout_ms = 60000\n");
    let mut n = UnixStream::connect(d.socket()).unwrap();
    n.set_read_timeout(Some(WAIT)).unwrap();
    n.write_all(b"{\"id\":1,\"op\":\"notifier.register\",\"name\":\"mute\"}\n").unwrap();
    let mut r = BufReader::new(n.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":true"), "{line}");
    let mut admin = d.connect();
    let id = admin.send("state.steps", json!({"target": "PRE_PRIV_DROP"}));
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("\"consent\""), "{line}");
    let t0 = Instant::now();
    n.shutdown(std::net::Shutdown::Write).unwrap();
    let reply = admin.reply(&json!(id));
    let took = t0.elapsed();
    assert_eq!(reply["state"], "PRE_PRIV_DROP", "{reply}");
    assert!(took < Duration::from_secs(10), "the round waited {took:?} (timeout 60 s)");
    let info = admin.ok("system.info", json!({}));
    let names: Vec<&Value> =
        info["notifiers"].as_array().unwrap().iter().map(|n| &n["name"]).collect();
    assert!(!names.contains(&&json!("mute")), "still registered: {names:?}");
}

fn wait_cycle_line() -> &'static str {
    "{\"id\":1,\"op\":\"state.wait\",\"state\":\"OPERATIONAL\"}\n{\"id\":2,\"op\":\"hello\"}\n"
}

fn attach_cycle_line() -> &'static str {
    "{\"id\":1,\"op\":\"attach\",\"state\":\"OPERATIONAL\",\"request\":{\"op\":\"state.wait\",\"state\":\"OPERATIONAL\"}}\n{\"id\":2,\"op\":\"hello\"}\n"
}

#[test]
fn a_closed_connection_releases_its_waits_at_once() {
    let d = at_context_created("");
    let mut admin = d.connect();
    // Ten connections each holding a wait that no commit will answer.
    let held: Vec<UnixStream> = (0..10)
        .map(|_| {
            let mut s = UnixStream::connect(d.socket()).unwrap();
            s.write_all(wait_cycle_line().as_bytes()).unwrap();
            s
        })
        .collect();
    info_until(&mut admin, "10 waiters", |i| i["waiters"] == 10 && i["clients"]["connected"] == 11);
    drop(held);
    info_until(&mut admin, "0 waiters", |i| i["waiters"] == 0 && i["clients"]["connected"] == 1);
}

#[test]
fn a_closed_connection_releases_its_subscription_at_once() {
    let d = at_context_created("");
    let mut admin = d.connect();
    for _ in 0..200 {
        let sub = "{\"id\":1,\"op\":\"subscribe\",\"events\":[\"state\"]}\n";
        assert_eq!(one_cycle(&d, sub, 1)["ok"], true);
    }
    // No event has come to sweep them, and the count does not sweep:
    // the last close at least removed its own (each new subscribe
    // sweeps the dead ones before it).
    info_until(&mut admin, "0 subscribers", |i| {
        i["clients"]["subscribers"] == 0 && i["clients"]["connected"] == 1
    });
}

#[test]
fn thousands_of_connect_wait_close_and_connect_attach_close_cycles_leave_nothing_behind() {
    let n = if slow() { 20_000 } else { 2_000 };
    let d = at_context_created("");
    let mut admin = d.connect();
    // Warm up allocator and runtime before the baseline.
    for _ in 0..50 {
        one_cycle(&d, wait_cycle_line(), 2);
        one_cycle(&d, attach_cycle_line(), 2);
    }
    info_until(&mut admin, "settled", |i| {
        i["waiters"] == 0 && i["clients"]["connected"] == 1 && i["attach"]["pending"] == 0
    });
    let (fds0, rss0) = (d.fd_count(), d.rss_kib());
    for _ in 0..n {
        one_cycle(&d, wait_cycle_line(), 2);
    }
    for _ in 0..n {
        assert_eq!(one_cycle(&d, attach_cycle_line(), 2)["ok"], true);
    }
    let info = info_until(&mut admin, "everything released", |i| {
        i["waiters"] == 0
            && i["clients"]["connected"] == 1
            && i["clients"]["attach_pending"] == 0
            && i["attach"]["pending"] == 0
    });
    // Every attach was cancelled by its connection's close, not run.
    assert!(info["attach"]["cancelled"].as_u64().unwrap() >= n, "{info}");
    assert_eq!(info["attach"]["run"], 0, "{info}");
    let fds = d.fd_count();
    assert!(fds <= fds0 + 2, "{fds} fds open after {n} cycles each, {fds0} before (bound +2)");
    let grown = d.rss_kib().saturating_sub(rss0);
    assert!(grown < 4 * 1024, "RSS grew {grown} KiB over {n} cycles each (bound 4 MiB)");
    // And the system still works: the state moves and a wait is answered.
    admin.ok("state.steps", json!({"target": "PRE_PRIV_DROP"}));
    assert_eq!(
        one_cycle(&d, wait_cycle_line().replace("OPERATIONAL", "PRE_PRIV_DROP").as_str(), 1)["ok"],
        true
    );
}

#[test]
fn an_idle_connection_is_closed_after_the_timeout_and_one_that_holds_something_is_not() {
    let mut d = at_context_created("[control]\nidle_timeout_secs = 1\n");
    let mut subscribed = d.connect();
    subscribed.ok("subscribe", json!({"events": ["state"]}));
    let mut waiting = d.connect();
    let wait_id = waiting.send("state.wait", json!({"state": "PRE_PRIV_DROP"}));
    // Connected last, so its timer is the last to fire: once it is closed
    // the others' timers have fired too.
    let mut idle = d.connect();
    idle.ok("hello", json!({}));
    let t0 = Instant::now();
    assert!(idle.closed(WAIT), "an idle connection was not closed within {WAIT:?}");
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(900), "closed after {took:?}, before the 1 s timeout");
    d.wait_log("idle connection closed");
    assert_eq!(subscribed.ok("hello", json!({}))["ok"], true);
    subscribed.ok("state.steps", json!({"target": "PRE_PRIV_DROP"}));
    assert_eq!(subscribed.event("state")["to"], "PRE_PRIV_DROP");
    assert_eq!(waiting.reply(&json!(wait_id))["state"], "PRE_PRIV_DROP");
}

#[test]
fn one_connection_or_one_uid_cannot_fill_the_attach_queue() {
    let d = at_context_created("[control]\nattach_per_client = 4\nattach_per_uid = 6\n");
    let uid = nix::unistd::getuid().as_raw();
    let attach = json!({"state": "OPERATIONAL", "request": {"op": "hello"}});
    let mut x = d.connect();
    for _ in 0..4 {
        x.send("attach", attach.clone());
    }
    let r = x.err("attach", attach.clone(), "busy");
    assert_eq!(r["error"]["message"], "this connection's attach quota (4) is full");
    let mut y = d.connect();
    y.send("attach", attach.clone());
    y.send("attach", attach.clone());
    let r = y.err("attach", attach.clone(), "busy");
    assert_eq!(r["error"]["message"], format!("uid {uid}'s attach quota (6) is full"));
    // Another party (here: after x hangs up) can attach again at once.
    let mut admin = d.connect();
    info_until(&mut admin, "6 attaches", |i| i["clients"]["attach_pending"] == 6);
    drop(x);
    info_until(&mut admin, "x's 4 released", |i| {
        i["clients"]["attach_pending"] == 2 && i["attach"]["pending"] == 2
    });
    let y3 = y.send("attach", attach.clone());
    let y4 = y.send("attach", attach.clone());
    // The queued ones run once the state is reached.
    admin.ok("state.steps", json!({"target": "OPERATIONAL"}));
    for id in [y3, y4] {
        assert_eq!(y.reply(&json!(id))["ok"], true);
    }
    info_until(&mut admin, "all answered", |i| i["clients"]["attach_pending"] == 0);
}

/// Let `OTHER` reach the socket (the daemon makes it 0600 in a 0700 dir).
fn open_up(d: &TestDaemon) {
    for p in [d.state_dir().parent().unwrap(), d.state_dir()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
}

/// `n` idle connections held by a process of `OTHER`: this test binary
/// running only [`hold_idle_connections`]. They send nothing and hold
/// nothing; they last until the child is killed.
fn idle_as_other(d: &TestDaemon, n: usize) -> Child {
    as_other(d, n, None)
}

/// Like [`idle_as_other`], but each connection first sends `line` 100
/// times, then never reads.
fn as_other(d: &TestDaemon, n: usize, line: Option<&str>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    if let Some(l) = line {
        cmd.env("LWSYS_HOLD_SEND", l);
    }
    cmd.args(["--exact", "hold_idle_connections", "--ignored", "--test-threads", "1"])
        .env("LWSYS_HOLD_SOCKET", d.socket())
        .env("LWSYS_HOLD_N", n.to_string())
        .uid(OTHER)
        .gid(OTHER)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Not a test of its own: the body of the child [`idle_as_other`] runs.
/// Connects, then waits for its stdin to close (never, until killed).
#[test]
#[ignore = "a helper process for other tests"]
fn hold_idle_connections() {
    let Some(path) = std::env::var_os("LWSYS_HOLD_SOCKET") else { return };
    let n: usize = std::env::var("LWSYS_HOLD_N").unwrap().parse().unwrap();
    let mut held: Vec<UnixStream> = (0..n).map(|_| UnixStream::connect(&path).unwrap()).collect();
    // A flood: the same line many times on each connection, never read.
    if let Some(line) = std::env::var_os("LWSYS_HOLD_SEND") {
        let line = format!("{}\n", line.to_str().unwrap()).repeat(100);
        for s in &mut held {
            // The daemon may hang up on a flooder before it has sent all.
            let _ = s.write_all(line.as_bytes());
        }
    }
    let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
    drop(held);
}

/// One `lwsysctl state` as `OTHER`: its exit status and stderr.
fn state_as_other(d: &TestDaemon) -> (bool, String) {
    let out = Command::new(bin_path("lwsysctl"))
        .arg("--socket")
        .arg(d.socket())
        .arg("state")
        .uid(OTHER)
        .gid(OTHER)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

struct Reap(Vec<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn read_only_clients_cannot_take_the_admin_reserve_and_root_can_still_shut_down() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root to run clients as another uid");
        return;
    }
    let mut d = TestDaemon::with(Options {
        config: Some(format!(
            "[control]\nreadonly_uids = [{OTHER}]\nmax_clients = 6\nadmin_reserve = 2\nmax_clients_per_uid = 6\n"
        )),
        ..Options::default()
    });
    open_up(&d);
    let mut root = d.connect();
    root.wait_state("OPERATIONAL");
    // 1 (root) + 3 read-only = 4 = max_clients - admin_reserve.
    let _idle = Reap(vec![idle_as_other(&d, 3)]);
    info_until(&mut root, "4 clients", |i| i["clients"]["connected"] == 4);
    let (ok, err) = state_as_other(&d);
    assert!(!ok, "a read-only client took a reserved slot");
    assert!(err.contains("the last 2 of 6 client slots are reserved for admins"), "{err}");
    // Root gets the two reserved slots, and uses them.
    let mut a = d.connect();
    let mut b = d.connect();
    assert!(a.ok("state.explain", json!({}))["state"].is_string());
    // All 6 slots taken: even root is refused now, with a reason.
    let s = UnixStream::connect(d.socket()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["error"]["code"], "busy", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("max_clients"), "{v}");
    drop(s);
    assert_eq!(b.ok("system.shutdown", json!({}))["state"], "CONTEXT_DESTROYING");
    assert_eq!(d.wait_exit().code(), Some(0));
}

#[test]
fn one_read_only_uid_is_held_to_its_own_connection_limit() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root to run clients as another uid");
        return;
    }
    let d = TestDaemon::with(Options {
        config: Some(format!("[control]\nreadonly_uids = [{OTHER}]\nmax_clients_per_uid = 2\n")),
        ..Options::default()
    });
    open_up(&d);
    let mut root = d.connect();
    let _idle = Reap(vec![idle_as_other(&d, 2)]);
    info_until(&mut root, "3 clients", |i| i["clients"]["connected"] == 3);
    let (ok, err) = state_as_other(&d);
    assert!(!ok, "uid {OTHER} got a third connection past max_clients_per_uid = 2");
    assert!(err.contains(&format!("uid {OTHER} has 2 connections")), "{err}");
    // Admins are not limited per uid.
    let more: Vec<Client> = (0..4).map(|_| d.connect()).collect();
    info_until(&mut root, "7 clients", |i| i["clients"]["connected"] == 7);
    drop(more);
}

#[test]
fn a_read_only_uids_connections_that_never_read_are_bounded_together() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root to run clients as another uid");
        return;
    }
    // Each client may queue 8 MiB (three replies of this 900 KiB blob);
    // the uid's 16 connections together only 16 MiB, not 16 x 8.
    let mut d = TestDaemon::with(Options {
        config: Some(format!("[control]\nreadonly_uids = [{OTHER}]\n")),
        ..Options::default()
    });
    open_up(&d);
    let mut root = d.connect();
    root.wait_state("OPERATIONAL");
    let blob = "x".repeat(900 << 10);
    root.ok("blob.set", json!({"kind": "DEVICE_TYPE", "data": blob}));
    let before = d.peak_rss_kib();
    let line = r#"{"op":"blob.get","kind":"DEVICE_TYPE"}"#;
    let _flood = Reap(vec![as_other(&d, 16, Some(line))]);
    // Every flooding connection is cut off (its own bound or the uid's).
    let deadline = Instant::now() + WAIT;
    loop {
        let info = root.ok("system.info", json!({}));
        if info["clients"]["connected"] == 1 && d.logs().matches("disconnecting").count() >= 16 {
            break;
        }
        assert!(Instant::now() < deadline, "flood not cut off: {info}\n{}", d.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let grown_mib = (d.peak_rss_kib() - before) / 1024;
    // 16 x 8 MiB would be 128 MiB; the uid's share is 16 MiB, plus the
    // replies being made (one at a time on the loop) and allocator slack.
    assert!(grown_mib < 48, "peak RSS grew {grown_mib} MiB");
    assert!(d.logs().contains("a read-only uid's clients are not reading"), "{}", d.logs());
    eprintln!("peak RSS growth under a 16-connection read-only flood: {grown_mib} MiB");
    // Root is served throughout.
    assert_eq!(root.ok("state.get", json!({}))["state"], "OPERATIONAL");
}
