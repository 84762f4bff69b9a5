//! Where `lwsysd` puts its socket and durable store under systemd's
//! `$RUNTIME_DIRECTORY` / `$STATE_DIRECTORY` (first of a colon-separated
//! list), that `--state-dir` / `--socket` still win, and that `lwsysctl`
//! finds the socket by the same rule. The real binaries, started without
//! the harness (which always passes both flags), in a scratch working
//! directory so a stray `./lwsys-state` would be seen.
#![allow(clippy::unwrap_used)] // a test that cannot set itself up should fail loudly

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

use lwsys_tests::{bin_path, WAIT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The variables that choose the directories, cleared so the test's own
/// environment cannot leak in.
const DIR_VARS: [&str; 5] =
    ["STATE_DIRECTORY", "RUNTIME_DIRECTORY", "XDG_STATE_HOME", "LWSYS_SOCKET", "NOTIFY_SOCKET"];

struct Daemon {
    child: Child,
    lines: Receiver<String>,
    log: Vec<String>,
}

impl Daemon {
    fn start(cwd: &Path, args: &[&str], env: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(bin_path("lwsysd"));
        cmd.current_dir(cwd).args(args).stdin(Stdio::null()).stderr(Stdio::piped());
        for v in DIR_VARS {
            cmd.env_remove(v);
        }
        cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let mut child = cmd.spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Self { child, lines, log: Vec::new() };
        d.wait_log("to: OPERATIONAL");
        d
    }

    fn wait_log(&mut self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(deadline - Instant::now()) {
                let hit = l.contains(needle);
                self.log.push(l);
                if hit {
                    return;
                }
            }
        }
        panic!("no {needle:?} from lwsysd; log:\n{}", self.log.join("\n"));
    }

    fn stop(mut self) {
        kill(Pid::from_raw(i32::try_from(self.child.id()).unwrap()), Signal::SIGTERM).unwrap();
        let st = self.child.wait().unwrap();
        assert!(st.success(), "lwsysd exited {st}; log:\n{}", self.log.join("\n"));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_socket(p: &Path) -> bool {
    std::fs::symlink_metadata(p).map(|m| m.file_type().is_socket()).unwrap_or(false)
}

/// `lwsysctl state` from `cwd` with only `env` set; its stdout.
fn ctl_state(cwd: &Path, env: &[(&str, String)]) -> String {
    let mut cmd = Command::new(bin_path("lwsysctl"));
    cmd.current_dir(cwd).arg("state");
    for v in DIR_VARS {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "lwsysctl state: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

struct Scratch {
    _t: tempfile::TempDir,
    root: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_owned();
        for d in ["cwd", "run", "run2"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        Self { _t: t, root }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn s(&self, rel: &str) -> String {
        self.p(rel).to_str().unwrap().to_owned()
    }
}

#[test]
fn systemd_directories_hold_the_socket_and_the_store() {
    let x = Scratch::new();
    let env = [
        ("RUNTIME_DIRECTORY", format!("{}:{}", x.s("run"), x.s("run2"))),
        ("STATE_DIRECTORY", format!("{}:{}", x.s("state"), x.s("state2"))),
    ];
    let d = Daemon::start(&x.p("cwd"), &[], &env);
    assert!(is_socket(&x.p("run/lwsys.sock")), "no socket in $RUNTIME_DIRECTORY");
    assert!(x.p("state/store").is_dir(), "no store in $STATE_DIRECTORY");
    assert!(!x.p("state/lwsys.sock").exists(), "socket also in the state dir");
    assert!(!x.p("run2").join("lwsys.sock").exists() && !x.p("state2").exists());
    assert!(!x.p("cwd/lwsys-state").exists(), "fell back to ./lwsys-state");
    // lwsysctl under the same environment (another process of the unit)
    // finds the socket by the same rule.
    assert!(ctl_state(&x.p("cwd"), &env[..1]).contains("OPERATIONAL"));
    d.stop();
    assert!(!x.p("run/lwsys.sock").exists(), "socket left behind");
}

#[test]
fn flags_win_over_the_systemd_directories() {
    let x = Scratch::new();
    let env = [("RUNTIME_DIRECTORY", x.s("run")), ("STATE_DIRECTORY", x.s("state"))];
    let (flag_dir, flag_sock) = (x.s("flag-state"), x.s("flag.sock"));
    let d = Daemon::start(&x.p("cwd"), &["--state-dir", &flag_dir, "--socket", &flag_sock], &env);
    assert!(is_socket(&x.p("flag.sock")));
    assert!(x.p("flag-state/store").is_dir());
    assert!(!x.p("run/lwsys.sock").exists() && !x.p("state").exists());
    d.stop();
}

#[test]
fn a_state_dir_flag_leaves_the_socket_in_the_runtime_directory() {
    let x = Scratch::new();
    let env = [("RUNTIME_DIRECTORY", x.s("run")), ("STATE_DIRECTORY", x.s("state"))];
    let flag_dir = x.s("flag-state");
    let d = Daemon::start(&x.p("cwd"), &["--state-dir", &flag_dir], &env);
    assert!(is_socket(&x.p("run/lwsys.sock")));
    assert!(x.p("flag-state/store").is_dir());
    assert!(!x.p("flag-state/lwsys.sock").exists() && !x.p("state").exists());
    d.stop();
}

#[test]
fn without_the_variables_the_design_defaults_hold() {
    let x = Scratch::new();
    let d = Daemon::start(&x.p("cwd"), &[], &[]);
    assert!(is_socket(&x.p("cwd/lwsys-state/lwsys.sock")));
    assert!(x.p("cwd/lwsys-state/store").is_dir());
    // lwsysctl from the same directory needs no flag either.
    assert!(ctl_state(&x.p("cwd"), &[]).contains("OPERATIONAL"));
    d.stop();
}
