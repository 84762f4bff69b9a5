//! Request/reply rate and latency of `state.get` over the control socket,
//! with 1 and 8 clients, against a real `lwsysd` (release build: run
//! through `scripts/bench`, which builds it first). Each client runs a
//! closed loop (one request in flight); figures are medians of several
//! runs, printed as JSON lines `{"metric", "value", "unit"}`.
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use lwsys_tests::TestDaemon;

fn client_loop(path: &std::path::Path, n: usize) -> Vec<Duration> {
    let s = UnixStream::connect(path).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut lat = Vec::with_capacity(n);
    let req = b"{\"id\":1,\"op\":\"state.get\"}\n";
    for _ in 0..n {
        let t = Instant::now();
        w.write_all(req).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        lat.push(t.elapsed());
    }
    assert!(line.contains("\"ok\":true"), "{line}");
    lat
}

fn run(d: &TestDaemon, clients: usize, per_client: usize) -> (f64, Duration, Duration) {
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let p = d.socket().to_owned();
            std::thread::spawn(move || client_loop(&p, per_client))
        })
        .collect();
    let mut all: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let wall = start.elapsed();
    all.sort();
    let rate = (clients * per_client) as f64 / wall.as_secs_f64();
    (rate, all[all.len() / 2], all[all.len() * 99 / 100])
}

/// The daemon's CPU time so far (utime + stime, from /proc/PID/stat), in
/// seconds: a figure per request that the shared machine's noise moves
/// far less than the rate does.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap_or(100);
    ticks as f64 / hz as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick =
        std::env::args().any(|a| a == "--quick") || std::env::var_os("LWSYS_BENCH_QUICK").is_some();
    let (runs, per_client) = if quick { (3, 5_000) } else { (5, 20_000) };
    let d = TestDaemon::start(&["--log-level", "warning"]);
    // Warm up.
    run(&d, 1, 2_000);
    for clients in [1usize, 8] {
        let mut rates = Vec::new();
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..runs {
            let before = cpu_secs(d.pid());
            let (r, a, b) = run(&d, clients, per_client);
            cpu.push((cpu_secs(d.pid()) - before) * 1e6 / (clients * per_client) as f64);
            rates.push(r);
            p50.push(a.as_secs_f64() * 1e6);
            p99.push(b.as_secs_f64() * 1e6);
        }
        println!("{{\"metric\": \"protocol_state_get_rate_{clients}_clients\", \"value\": {:.0}, \"unit\": \"req/s\"}}", median(rates));
        println!("{{\"metric\": \"protocol_state_get_p50_{clients}_clients\", \"value\": {:.1}, \"unit\": \"us\"}}", median(p50));
        println!("{{\"metric\": \"protocol_state_get_p99_{clients}_clients\", \"value\": {:.1}, \"unit\": \"us\"}}", median(p99));
        println!("{{\"metric\": \"protocol_state_get_daemon_cpu_{clients}_clients\", \"value\": {:.2}, \"unit\": \"us/req\"}}", median(cpu));
    }
}
