//! Test harness for driving a real `lwsysd`: [`TestDaemon`] starts it on a
//! temporary state dir and socket, and [`Client`] speaks JSON lines to it
//! over the socket or the daemon's stdio.
//!
//! Waits are on events (a line arriving, a socket appearing, a process
//! exiting), each bounded so a broken daemon fails the test instead of
//! hanging it.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

pub mod chrony;
pub mod mosquitto;

pub use mosquitto::{Identity, Login, Message, Mosquitto, Subscriber, TestCa};

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long any single wait in the harness may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Path of a binary built from this workspace (`lwsysd`, `lwsysctl`, or an
/// example). `LWSYS_BIN_DIR` overrides where they are looked for.
pub fn bin_path(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("LWSYS_BIN_DIR") {
        return Path::new(&dir).join(name);
    }
    // Test executables live in target/<profile>/deps; binaries one up.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let p = dir.join(name);
    assert!(p.exists(), "{} not built; run `cargo build --workspace --bins` first", p.display());
    p
}

/// Runs lwsysd on `state` (its socket inside it) with `extra` to its exit,
/// for daemons expected to refuse to start: its exit code and stderr.
pub fn run_once(state: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin_path("lwsysd"))
        .arg("--state-dir")
        .arg(state)
        .arg("--socket")
        .arg(state.join("lwsys.sock"))
        .args(extra)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The workspace root (for `../shared/fixtures`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// How to start a daemon.
#[derive(Default, Clone)]
pub struct Options {
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// A config file's text, written to the state dir and passed with
    /// `--config`.
    pub config: Option<String>,
    /// Start with `--stdio` and keep its stdin/stdout for a client.
    pub stdio: bool,
    /// Reuse this state dir instead of a fresh one.
    pub state_dir: Option<PathBuf>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Start under this open-file limit: `(soft, hard)`.
    pub nofile: Option<(u64, u64)>,
    /// Run lwsysd with this umask instead of the test's.
    pub umask: Option<u32>,
}

/// A running `lwsysd` on a temporary state dir; killed on drop.
pub struct TestDaemon {
    child: Child,
    _dir: Option<tempfile::TempDir>,
    state_dir: PathBuf,
    socket: PathBuf,
    stdin: Option<ChildStdin>,
    stdout: Option<Receiver<String>>,
    stderr: Receiver<String>,
    log: Vec<String>,
}

impl TestDaemon {
    /// Start with default options plus `args`.
    pub fn start(args: &[&str]) -> Self {
        Self::with(Options {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Options::default()
        })
    }

    /// Start with `--stdio` plus `args`.
    pub fn start_stdio(args: &[&str]) -> Self {
        Self::with(Options {
            args: args.iter().map(|s| s.to_string()).collect(),
            stdio: true,
            ..Options::default()
        })
    }

    /// Start as `opts` says, and wait until the socket answers.
    pub fn with(opts: Options) -> Self {
        let mut d = Self::spawn(opts);
        d.wait_socket();
        d
    }

    /// Start on `state_dir` without waiting for the socket (for daemons
    /// expected to fail at start).
    pub fn with_no_wait(state_dir: &Path) -> Self {
        Self::spawn(Options { state_dir: Some(state_dir.to_owned()), ..Options::default() })
    }

    fn spawn(opts: Options) -> Self {
        let (dir, state_dir) = match &opts.state_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::tempdir().unwrap();
                let p = t.path().join("state");
                (Some(t), p)
            }
        };
        let existed = state_dir.exists();
        std::fs::create_dir_all(&state_dir).unwrap();
        // lwsysd refuses a state dir group or others can write (a umask of
        // 002 would make one); 0700 is what it creates itself.
        if !existed {
            std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let socket = state_dir.join("lwsys.sock");
        // No pre_exec (unsafe is forbidden): a shell sets the umask or limit
        // and execs lwsysd in its place, so the pid is still lwsysd's.
        let mut setup = Vec::new();
        if let Some(mask) = opts.umask {
            setup.push(format!("umask {mask:03o}"));
        }
        if let Some((soft, hard)) = opts.nofile {
            setup.push(format!("ulimit -Sn {soft} && ulimit -Hn {hard}"));
        }
        let mut cmd = if setup.is_empty() {
            Command::new(bin_path("lwsysd"))
        } else {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(format!("{} && exec \"$0\" \"$@\"", setup.join(" && ")));
            c.arg(bin_path("lwsysd"));
            c
        };
        cmd.arg("--state-dir").arg(&state_dir).arg("--socket").arg(&socket);
        if let Some(text) = &opts.config {
            let path = state_dir.join("test-config.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(path);
        }
        if opts.stdio {
            cmd.arg("--stdio");
        }
        cmd.args(&opts.args);
        cmd.envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.stdin(if opts.stdio { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(if opts.stdio { Stdio::piped() } else { Stdio::null() });
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(lines_of);
        let stderr = lines_of(child.stderr.take().unwrap());
        TestDaemon { child, _dir: dir, state_dir, socket, stdin, stdout, stderr, log: Vec::new() }
    }

    fn wait_socket(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("lwsysd exited early with {st}; log:\n{}", self.logs());
            }
            assert!(Instant::now() < deadline, "socket never appeared; log:\n{}", self.logs());
            // The socket file appearing is the event; poll it finely.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A new client on the control socket.
    pub fn connect(&self) -> Client {
        let s = UnixStream::connect(&self.socket).unwrap();
        let r = s.try_clone().unwrap();
        let mut c = Client::new(Box::new(s.try_clone().unwrap()), lines_of(r));
        c.sock = Some(s);
        c
    }

    /// A client on the daemon's stdin/stdout (started with `stdio`); only
    /// one can be taken.
    pub fn stdio(&mut self) -> Client {
        let w = self.stdin.take().expect("started without stdio or already taken");
        let r = self.stdout.take().unwrap();
        Client::new(Box::new(w), r)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The state dir.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Send `sig` to the daemon.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, sig);
    }

    /// Wait for the daemon to exit (bounded).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                self.read_log_to_eof(deadline);
                return st;
            }
            assert!(Instant::now() < deadline, "lwsysd did not exit; log:\n{}", self.logs());
            // Exit is the event; poll it finely.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kill with SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// After exit: every line up to stderr's EOF (the reader thread ends
    /// there), so no late line is missed; bounded by `deadline` in case a
    /// child process inherited stderr and keeps it open.
    fn read_log_to_eof(&mut self, deadline: Instant) {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(l) => self.log.push(l),
                Err(_) => return,
            }
        }
    }

    fn drain_log(&mut self) {
        while let Ok(l) = self.stderr.try_recv() {
            self.log.push(l);
        }
    }

    /// The daemon's resident set size in KiB (`VmRSS` of
    /// /proc/PID/status), for tests that bound its memory.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The daemon's peak resident set size so far in KiB (`VmHWM`): a
    /// bound that holds even for memory freed again before it was looked
    /// at.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// How many file descriptors the daemon has open (/proc/PID/fd), for
    /// tests that check connections are released.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap().count()
    }

    /// Everything logged so far.
    pub fn logs(&mut self) -> String {
        self.drain_log();
        self.log.join("\n")
    }

    /// Wait until `n` log lines (counting from the start) contain `needle`.
    pub fn wait_log_count(&mut self, needle: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.drain_log();
            if self.log.iter().filter(|l| l.contains(needle)).count() >= n {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(l) => self.log.push(l),
                Err(_) => {
                    panic!("not {n} log lines with {needle:?}; log:\n{}", self.log.join("\n"))
                }
            }
        }
    }

    /// Wait until a log line contains `needle`.
    pub fn wait_log(&mut self, needle: &str) -> String {
        if let Some(l) = self.log.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("no log line with {needle:?}; log:\n{}", self.log.join("\n")),
            }
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Lines read by a thread, so reads can time out whatever the source.
fn lines_of(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A JSON-lines client. Events that arrive while a reply is awaited are
/// kept for [`Client::event`].
pub struct Client {
    w: Box<dyn Write + Send>,
    r: Receiver<String>,
    next_id: u64,
    events: std::collections::VecDeque<Value>,
    replies: Vec<Value>,
    /// Shut down on drop, so the daemon sees the close even though the
    /// reader thread still holds a clone of the socket.
    sock: Option<UnixStream>,
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(s) = &self.sock {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Client {
    fn new(w: Box<dyn Write + Send>, r: Receiver<String>) -> Self {
        Self { w, r, next_id: 0, events: Default::default(), replies: Vec::new(), sock: None }
    }

    /// Write raw bytes (a newline is not added).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
        self.w.flush().unwrap();
    }

    /// Send `op` with `params` (an object) and a fresh id; returns the id.
    pub fn send(&mut self, op: &str, params: Value) -> u64 {
        self.next_id += 1;
        let mut m = match params {
            Value::Object(m) => m,
            Value::Null => Default::default(),
            other => panic!("params must be an object, got {other}"),
        };
        m.insert("id".into(), json!(self.next_id));
        m.insert("op".into(), json!(op));
        let mut line = Value::Object(m).to_string();
        line.push('\n');
        self.send_raw(line.as_bytes());
        self.next_id
    }

    /// The next line as JSON, or `None` after `timeout`.
    pub fn read(&mut self, timeout: Duration) -> Option<Value> {
        match self.r.recv_timeout(timeout) {
            Ok(l) => {
                Some(serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Whether the daemon closed the connection (waits up to `timeout`).
    pub fn closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.r.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(_) => continue,
                Err(RecvTimeoutError::Disconnected) => return true,
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    /// The reply with `id` (events and other replies that come first are
    /// kept).
    pub fn reply(&mut self, id: &Value) -> Value {
        if let Some(i) = self.replies.iter().position(|r| &r["id"] == id) {
            return self.replies.remove(i);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.read(left).unwrap_or_else(|| panic!("no reply to id {id}"));
            if v.get("event").is_some() {
                self.events.push_back(v);
            } else if &v["id"] == id {
                return v;
            } else {
                self.replies.push(v);
            }
        }
    }

    /// Send and wait for the reply.
    pub fn call(&mut self, op: &str, params: Value) -> Value {
        let id = self.send(op, params);
        self.reply(&json!(id))
    }

    /// Send, wait, and insist on `ok: true`.
    pub fn ok(&mut self, op: &str, params: Value) -> Value {
        let r = self.call(op, params);
        assert_eq!(r["ok"], true, "{op} failed: {r}");
        r
    }

    /// Send, wait, and insist on an error with `code`.
    pub fn err(&mut self, op: &str, params: Value, code: &str) -> Value {
        let r = self.call(op, params);
        assert_eq!(r["ok"], false, "{op} should fail with {code}: {r}");
        assert_eq!(r["error"]["code"], code, "{op}: {r}");
        r
    }

    /// The next event whose `event` is `name` (others are kept).
    pub fn event(&mut self, name: &str) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
            return self.events.remove(i).unwrap();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.read(left).unwrap_or_else(|| panic!("no {name:?} event"));
            if v["event"] == name {
                return v;
            }
            if v.get("event").is_some() {
                self.events.push_back(v);
            } else {
                self.replies.push(v);
            }
        }
    }

    /// Wait until the daemon reports a state at or past `state`.
    pub fn wait_state(&mut self, state: &str) -> Value {
        self.ok("state.wait", json!({"state": state, "timeout_ms": WAIT.as_millis() as u64}))
    }
}
