//! Load (issue 10): 256 socket clients issue mixed requests while 16 socket
//! notifiers answer consent (some deferring, then resuming) for a driver
//! that keeps cycling the system through POLICY_INVALID and
//! MODAL_UPDATING. Checked: every request answered exactly once with a
//! documented answer, every client finishes its quota, every consent round
//! a notifier was asked (per the journal) is one it saw and answered, the
//! daemon ends alive at OPERATIONAL, and its RSS growth is bounded.
//!
//! `LWSYS_SLOW=1` runs a longer soak (more requests per client, more
//! cycles), where a leak has more room to show.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use lwsys_tests::{Client, Options, TestDaemon, WAIT};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const CLIENTS: usize = 256;
const NOTIFIERS: usize = 16;
/// Notifiers `0..DEFERRERS` sometimes defer, then resume.
const DEFERRERS: usize = 4;
/// Targets a deferrer may defer: all inside the steps leg of the policy
/// cycle, so the resumed walk still ends at OPERATIONAL.
const DEFERRABLE: [&str; 3] = ["TIME_VALID", "REGISTERED", "AUTH2"];
/// Non-durable blob kinds with one slot each, shared by all clients.
const BLOB_KINDS: [&str; 3] = ["MQTT_CLIENT_ID", "MQTT_USERNAME", "DEVICE_FW_VERSION"];
/// ISRG Root X1, in the Mozilla TBLB fixture.
const ISRG_SKID: &str = "79b459e67bb6e5e40173800888c81a58f6e99b6e";
/// The journal is read after every cycle; it must hold a whole cycle.
const JOURNAL_LEN: usize = 128;

fn slow() -> bool {
    std::env::var_os("LWSYS_SLOW").is_some_and(|v| v == "1")
}

/// The Mozilla TBLB fixture beside the workspace (as tests/tests/trust.rs).
fn fixture_path() -> std::path::PathBuf {
    let root = lwsys_tests::workspace_root();
    root.ancestors()
        .map(|a| a.join("shared/fixtures/mozilla-trust.tblb"))
        .chain([root.join("../shared/fixtures/mozilla-trust.tblb")])
        .find(|p| p.is_file())
        .expect("shared/fixtures/mozilla-trust.tblb beside the workspace")
}

/// A `/proc/PID/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The soft open-files limit of this process.
fn nofile_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// A blob value that says who wrote it and checks itself: the run of `x`
/// is as long as `(client + seq) % 61`, so a torn or mixed value fails.
fn blob_value(client: usize, seq: usize) -> String {
    format!("c{client}-{seq}-{}", "x".repeat((client + seq) % 61))
}

fn blob_value_ok(s: &str) -> bool {
    if s.is_empty() {
        return true; // not written yet
    }
    let mut parts = s.splitn(3, '-');
    let (Some(c), Some(n), Some(xs)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let (Some(c), Ok(n)) =
        (c.strip_prefix('c').and_then(|c| c.parse::<usize>().ok()), n.parse::<usize>())
    else {
        return false;
    };
    xs.len() == (c + n) % 61 && xs.bytes().all(|b| b == b'x')
}

/// What a client expects of one request's reply.
enum Expect {
    Ok,
    State,
    Blob,
    Size(u64),
    Clock,
    TrustHit,
    NotFound,
    Info(u32),
}

/// One random request for client `me`, `seq`th of its quota.
fn pick(rng: &mut impl Rng, me: usize, seq: usize, pid: u32) -> (&'static str, Value, Expect) {
    let kind = BLOB_KINDS[rng.gen_range(0..BLOB_KINDS.len())];
    match rng.gen_range(0..100) {
        0..=17 => ("state.get", json!({}), Expect::State),
        18..=27 => ("system.info", json!({}), Expect::Info(pid)),
        28..=30 => ("state.explain", json!({}), Expect::State),
        31..=45 => {
            let data = blob_value(me, seq);
            let n = data.len() as u64;
            ("blob.set", json!({"kind": kind, "data": data}), Expect::Size(n))
        }
        46..=62 => ("blob.get", json!({"kind": kind}), Expect::Blob),
        63..=67 => ("blob.size", json!({"kind": kind}), Expect::Ok),
        68..=77 => ("clock.get", json!({}), Expect::Clock),
        // The lowest state a cycle passes through is INITIALIZED: always
        // at or past PRE_PRIV_DROP.
        78..=85 => {
            ("state.wait", json!({"state": "PRE_PRIV_DROP", "timeout_ms": 20_000}), Expect::State)
        }
        86..=90 => ("trust.query", json!({"skid": ISRG_SKID}), Expect::TrustHit),
        91..=92 => ("trust.query", json!({"skid": "00112233"}), Expect::NotFound),
        93..=96 => (
            "attach",
            json!({"state": "INITIALIZED", "request": {"op": "state.get"}}),
            Expect::State,
        ),
        _ => ("hello", json!({}), Expect::State),
    }
}

fn check_reply(op: &str, r: &Value, e: &Expect) -> Result<(), String> {
    let bad = || Err(format!("{op}: unexpected reply {r}"));
    if r["ok"] == false {
        // `busy` is a documented answer to load; retrying is the client's
        // business, and it still counts as answered.
        let code = r["error"]["code"].as_str().unwrap_or("");
        return match (code, e) {
            ("busy", _) => Ok(()),
            ("not_found", Expect::NotFound) => Ok(()),
            _ => bad(),
        };
    }
    let good = match e {
        Expect::Ok => true,
        Expect::State => r["state"].as_str().is_some_and(|s| !s.is_empty()),
        Expect::Blob => r["data"].as_str().is_some_and(blob_value_ok),
        Expect::Size(n) => r["size"].as_u64() == Some(*n),
        Expect::Clock => r["valid"] == true && r["unix_us"].as_u64().is_some(),
        Expect::TrustHit => r["certs"].as_array().is_some_and(|c| {
            c.iter().any(|c| c["subject"].as_str().is_some_and(|s| s.contains("ISRG Root X1")))
        }),
        Expect::NotFound => false,
        Expect::Info(pid) => r["pid"].as_u64() == Some(u64::from(*pid)),
    };
    if good {
        Ok(())
    } else {
        bad()
    }
}

/// What one load client did.
struct ClientRun {
    elapsed: Duration,
    served: usize,
    /// `busy` answers, by op and message.
    busy: BTreeMap<String, usize>,
}

/// Issue `quota` requests in small pipelined batches; every id must be
/// answered exactly once.
fn run_client(mut c: Client, me: usize, quota: usize, pid: u32) -> Result<ClientRun, String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(me as u64);
    // A quarter of the clients pipeline deeper.
    let max_batch = if me % 4 == 0 { 16 } else { 4 };
    let started = Instant::now();
    let (mut served, mut busy, mut seq) = (0, BTreeMap::new(), 0);
    while seq < quota {
        let batch = rng.gen_range(1..=max_batch).min(quota - seq);
        let mut outstanding: HashMap<u64, (&'static str, Expect)> = HashMap::new();
        for _ in 0..batch {
            let (op, params, expect) = pick(&mut rng, me, seq, pid);
            let id = c.send(op, params);
            outstanding.insert(id, (op, expect));
            seq += 1;
        }
        while !outstanding.is_empty() {
            let v = c.read(WAIT).ok_or_else(|| {
                format!("client {me}: no reply to ids {:?}", outstanding.keys().collect::<Vec<_>>())
            })?;
            if v.get("event").is_some() {
                continue;
            }
            let id =
                v["id"].as_u64().ok_or_else(|| format!("client {me}: reply without id {v}"))?;
            let (op, expect) = outstanding
                .remove(&id)
                .ok_or_else(|| format!("client {me}: reply to unknown or answered id {id}: {v}"))?;
            check_reply(op, &v, &expect).map_err(|e| format!("client {me}: {e}"))?;
            if v["ok"] == false && v["error"]["code"] == "busy" {
                *busy.entry(format!("{op}: {}", v["error"]["message"])).or_default() += 1;
            }
            served += 1;
        }
    }
    let elapsed = started.elapsed();
    // Anything still arriving before this reply is a duplicate.
    let id = c.send("hello", json!({}));
    loop {
        let v = c.read(WAIT).ok_or_else(|| format!("client {me}: no reply to the last hello"))?;
        if v.get("event").is_some() {
            continue;
        }
        if v["id"] == id {
            break;
        }
        return Err(format!("client {me}: duplicate or stray reply {v}"));
    }
    Ok(ClientRun { elapsed, served, busy })
}

/// What one notifier saw.
#[derive(Default, Debug)]
struct NotifierRun {
    consents: usize,
    defers: usize,
    resumes: usize,
}

/// Answer consent until `done` and nothing is outstanding. Deferrers defer
/// some rounds for [`DEFERRABLE`] targets, then resume once the defer is
/// acknowledged; a round asked again for the same transition is allowed.
fn run_notifier(mut n: Client, k: usize, done: &AtomicBool) -> Result<NotifierRun, String> {
    let name = format!("n{k:02}");
    let mut run = NotifierRun::default();
    let mut outstanding: HashMap<u64, &'static str> = HashMap::new();
    let mut defer_reply: Option<u64> = None;
    let mut last_deferred: Option<(String, String)> = None;
    let mut eligible = 0usize;
    loop {
        let Some(v) = n.read(Duration::from_millis(100)) else {
            if done.load(Ordering::SeqCst) && outstanding.is_empty() {
                return Ok(run);
            }
            continue;
        };
        if v["event"] == "consent" {
            run.consents += 1;
            let pair = (v["current"].to_string(), v["target"].to_string());
            let target = v["target"].as_str().unwrap_or("");
            let mut verdict = "allow";
            if k < DEFERRERS && DEFERRABLE.contains(&target) {
                if last_deferred.as_ref() == Some(&pair) {
                    last_deferred = None;
                } else {
                    eligible += 1;
                    if eligible % 5 == k % 5 {
                        verdict = "defer";
                        last_deferred = Some(pair);
                    }
                }
            }
            let id = n.send(
                "consent.reply",
                json!({"ticket": v["ticket"], "verdict": verdict, "reason": "load"}),
            );
            outstanding.insert(id, "consent.reply");
            if verdict == "defer" {
                run.defers += 1;
                defer_reply = Some(id);
            }
        } else if v.get("event").is_some() {
            // changed / aborted: nothing to answer.
        } else {
            let id = v["id"].as_u64().ok_or_else(|| format!("{name}: reply without id {v}"))?;
            let op = outstanding
                .remove(&id)
                .ok_or_else(|| format!("{name}: reply to unknown or answered id {id}: {v}"))?;
            if v["ok"] != true {
                return Err(format!("{name}: {op} failed: {v}"));
            }
            if op == "notifier.resume" && v["resumed"] != true {
                return Err(format!("{name}: resume found no walk to resume: {v}"));
            }
            if defer_reply == Some(id) {
                defer_reply = None;
                let id = n.send("notifier.resume", json!({"name": name}));
                outstanding.insert(id, "notifier.resume");
                run.resumes += 1;
            }
        }
    }
}

/// Send `op` on the driver and read until its reply and a `state` event
/// to OPERATIONAL have both arrived (a deferred walk replies before it
/// ends; the resumed walk's end is the event).
fn drive(d: &mut Client, op: &str) -> Value {
    let id = json!(d.send(op, json!({})));
    let (mut reply, mut operational) = (None, false);
    while reply.is_none() || !operational {
        let v = d.read(WAIT).unwrap_or_else(|| panic!("{op}: settled never (reply {reply:?})"));
        if v["event"] == "state" {
            operational |= v["to"] == "OPERATIONAL";
        } else if v["id"] == id {
            reply = Some(v);
        }
    }
    reply.unwrap()
}

/// Journal rounds keyed by (at_us, current, target) so fetches can be merged.
type Journal = BTreeMap<(u64, String, String), Value>;

fn merge_journal(d: &mut Client, into: &mut Journal) {
    let e = d.ok("state.explain", json!({}));
    let fetched: Journal = e["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let key = (
                r["at_us"].as_u64().unwrap(),
                r["current"].as_str().unwrap().to_owned(),
                r["target"].as_str().unwrap().to_owned(),
            );
            (key, r.clone())
        })
        .collect();
    // The newest round of the last read must still be there, or rounds in
    // between were dropped unseen.
    if let Some(last) = into.keys().next_back() {
        assert!(fetched.contains_key(last), "the journal overflowed between reads");
    }
    into.extend(fetched);
}

#[test]
fn many_clients_and_notifiers_under_transitions_lose_nothing() {
    let quota = if slow() { 2000 } else { 160 };
    let min_cycles = if slow() { 40 } else { 4 };
    // Each test-side connection holds three descriptors (socket, reader,
    // writer).
    let need = 3 * (CLIENTS + NOTIFIERS + 8) as u64 + 64;
    assert!(nofile_limit() >= need, "ulimit -n is {}; this test needs {need}", nofile_limit());

    let config = format!(
        "[supervisor]\njournal_len = {JOURNAL_LEN}\n[log]\nlevel = \"warning\"\n\
         [trust]\nblob_files = [\"{}\"]\n",
        fixture_path().display()
    );
    let mut d = TestDaemon::with(Options { config: Some(config), ..Options::default() });
    let pid = d.pid();
    let mut driver = d.connect();
    driver.wait_state("OPERATIONAL");
    driver.ok("subscribe", json!({"events": ["state"]}));
    let mut watcher = d.connect();
    watcher.ok("subscribe", json!({"events": ["notifier"]}));

    let done = Arc::new(AtomicBool::new(false));
    let notifiers: Vec<_> = (0..NOTIFIERS)
        .map(|k| {
            let mut n = d.connect();
            n.ok("notifier.register", json!({"name": format!("n{k:02}")}));
            let done = done.clone();
            std::thread::spawn(move || run_notifier(n, k, &done))
        })
        .collect();
    let mut journal = Journal::new();
    merge_journal(&mut driver, &mut journal);
    let journal_start = journal.keys().next_back().cloned();

    let rss_before = status_kib(pid, "VmRSS");
    let hwm_before = status_kib(pid, "VmHWM");

    // All clients connect first, then start together.
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let finished = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|me| {
            let c = d.connect();
            let (barrier, finished) = (barrier.clone(), finished.clone());
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    barrier.wait();
                    let r = run_client(c, me, quota, pid);
                    finished.fetch_add(1, Ordering::SeqCst);
                    r
                })
                .unwrap()
        })
        .collect();
    barrier.wait();
    let started = Instant::now();

    // Cycle while the clients run (and at least `min_cycles` times).
    let mut cycles = 0;
    while cycles < min_cycles || finished.load(Ordering::SeqCst) < CLIENTS {
        assert!(started.elapsed() < Duration::from_secs(if slow() { 600 } else { 60 }));
        if cycles % 4 == 3 {
            let r = driver.ok("state.enter_modal", json!({}));
            assert_eq!(r["state"], "MODAL_UPDATING", "{r}");
            let r = drive(&mut driver, "state.leave_modal");
            assert_eq!(r["ok"], true, "{r}");
        } else {
            let r = drive(&mut driver, "state.policy_invalidate");
            assert_eq!(r["ok"], true, "{r}");
        }
        merge_journal(&mut driver, &mut journal);
        cycles += 1;
    }
    let load_time = started.elapsed();

    let runs: Vec<ClientRun> = clients
        .into_iter()
        .enumerate()
        .map(|(me, h)| h.join().unwrap().unwrap_or_else(|e| panic!("client {me}: {e}")))
        .collect();
    done.store(true, Ordering::SeqCst);
    let seen: Vec<NotifierRun> =
        notifiers.into_iter().map(|h| h.join().unwrap().unwrap()).collect();

    // Every client finished its quota, every request answered once.
    let total: usize = runs.iter().map(|r| r.served).sum();
    let mut busy: BTreeMap<String, usize> = BTreeMap::new();
    for (k, n) in runs.iter().flat_map(|r| r.busy.iter()) {
        *busy.entry(k.clone()).or_default() += n;
    }
    assert!(runs.iter().all(|r| r.served == quota));
    let mut times: Vec<Duration> = runs.iter().map(|r| r.elapsed).collect();
    times.sort();
    println!(
        "{CLIENTS} clients x {quota} requests in {load_time:.2?} ({:.0} req/s), busy {busy:?}; \
         per-client completion min {:.2?} median {:.2?} max {:.2?}; {cycles} cycles",
        total as f64 / load_time.as_secs_f64(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
    );

    // Each notifier saw exactly the rounds the journal says it was asked,
    // and none timed out.
    let mut asked: HashMap<String, usize> = HashMap::new();
    let mut rounds = 0;
    let start = journal_start.unwrap();
    for (key, r) in journal.range(start.clone()..) {
        if *key == start {
            continue;
        }
        rounds += 1;
        for v in r["verdicts"].as_array().unwrap() {
            assert_ne!(v["reason"], "timeout", "a notifier missed its deadline: {r}");
            *asked.entry(v["name"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    let defers: usize = seen.iter().map(|s| s.defers).sum();
    println!("{rounds} consent rounds, {defers} deferred and resumed; notifiers saw {seen:?}");
    assert!(defers > 0, "no notifier deferred: the defer/resume path was not exercised");
    for (k, s) in seen.iter().enumerate() {
        let name = format!("n{k:02}");
        assert_eq!(s.consents, asked.get(&name).copied().unwrap_or(0), "{name}: {s:?}");
        assert_eq!(s.defers, s.resumes, "{name}");
    }
    assert!(seen[0].consents >= rounds, "n00 is asked first in every round");
    let timeouts: Vec<Value> = std::iter::from_fn(|| watcher.read(Duration::ZERO))
        .filter(|e| e["kind"] == "timeout")
        .collect();
    assert!(timeouts.is_empty(), "{timeouts:?}");

    // Alive, at OPERATIONAL, and memory bounded.
    let mut c = d.connect();
    assert_eq!(c.ok("state.get", json!({}))["state"], "OPERATIONAL");
    let rss_after = status_kib(pid, "VmRSS");
    let hwm_after = status_kib(pid, "VmHWM");
    println!(
        "lwsysd RSS {rss_before} -> {rss_after} KiB, HWM {hwm_before} -> {hwm_after} KiB \
         (growth {} KiB)",
        rss_after.saturating_sub(rss_before)
    );
    assert!(
        rss_after.saturating_sub(rss_before) < 64 << 10,
        "RSS grew by {} KiB",
        rss_after - rss_before
    );
    let slow_clients = d.logs().lines().filter(|l| l.contains("not reading")).count();
    assert_eq!(slow_clients, 0, "a client was disconnected as slow");
}
