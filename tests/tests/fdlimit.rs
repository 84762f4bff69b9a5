//! The open-file limit against a flood of clients: lwsysd raises its soft
//! limit to the hard one, and cuts `max_clients` to what fits beside its
//! own descriptors, so a flood meets the client limit (and is refused
//! cleanly) before accept could fail for everyone with EMFILE.
#![allow(clippy::unwrap_used)]

use lwsys_tests::{Options, TestDaemon, WAIT};
use serde_json::json;

fn nofile_of(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let n: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (n[0], n[1])
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let d = TestDaemon::with(Options { nofile: Some((100, 4096)), ..Options::default() });
    assert_eq!(nofile_of(d.pid()), (4096, 4096));
}

#[test]
fn a_client_flood_under_a_low_limit_is_refused_without_starving_accept() {
    // 200 descriptors: the default max_clients (1024) is cut to 200 - 64.
    let mut d = TestDaemon::with(Options { nofile: Some((200, 200)), ..Options::default() });
    d.wait_log("control.max_clients cut to fit the open-file limit");
    let mut flood = Vec::new();
    let mut served = 0;
    for _ in 0..300 {
        let Ok(s) = std::os::unix::net::UnixStream::connect(d.socket()) else { continue };
        flood.push(s);
    }
    for s in &flood {
        use std::io::{BufRead, BufReader, Write};
        let mut w = s.try_clone().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        if w.write_all(b"{\"id\":1,\"op\":\"hello\"}\n").is_err() {
            continue;
        }
        let mut line = String::new();
        if BufReader::new(s.try_clone().unwrap()).read_line(&mut line).unwrap_or(0) > 0
            && line.contains("\"ok\":true")
        {
            served += 1;
        }
    }
    assert!((1..=136).contains(&served), "{served} of 300 flood clients served");
    drop(flood);
    // Once the flood is gone, a client is served again.
    let mut c = d.connect();
    c.ok("hello", json!({}));
    let logs = d.logs();
    assert!(!logs.contains("accept failed"), "accept ran out of descriptors:\n{logs}");
}
