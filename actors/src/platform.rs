//! The platform ops of lwsys (upstream's `lws_system_ops_t`): one trait per
//! concern, each replaceable on the `Builder` and each with a default Linux
//! implementation, and [`Ops`], what `SystemHandle::ops()` returns (the
//! `lws_system_get_ops(context)` of lwsys).
//!
//! | upstream member   | lwsys                                   | default                    |
//! |-------------------|-----------------------------------------|----------------------------|
//! | `reboot`          | [`SystemOps::reboot`]                   | [`LinuxSystemOps`]: re-exec lwsysd, or run a command |
//! | `set_clock`       | [`SystemOps::set_clock`]                | [`LinuxClockOps`] (CLOCK_REALTIME or the soft clock) |
//! | `attach`          | built in (`SystemHandle::attach`)       | always present: Rust needs no platform lock around the queue |
//! | `jit_trust_query` | [`TrustQuery`], reached through the trust service | the configured TBLB / cert-dir store |
//! | `ota_ops`         | [`OtaOps`]                              | `ota::SlotDir` (A/B slot directory), when configured |
//! | `wake_latency_us` | [`SystemOps::wake_latency_us`]          | config `[system] wake_latency_us`, 0 |
//!
//! Upstream's wrappers "handle NULL members or no ops struct set at all
//! cleanly"; so does [`Ops`]: a missing op is [`OpError::NotProvided`],
//! never a panic.
//!
//! # Wake latency
//! `wake_latency_us` is the time the device needs to wake from suspend.
//! Every timer lwsys arms for a deadline it must meet is armed that much
//! earlier ([`arm_early`]), so the work is done on time even when the timer
//! has to wake the device first: the clock service's SNTP re-sync and retry
//! timers (`ClockConfig::wake_latency`, set from the same config key) and
//! the OTA service's periodic checks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Recipient;
use lwsys_messages::trust::{QueryTrust, TrustedCerts};
use lwsys_messages::ErrorCode;

pub use crate::clock::{ClockOps, LinuxClockOps, SetOutcome, SoftClock};
pub use crate::ota::OtaOps;
pub use crate::trust::TrustQuery;

/// The names [`Ops::present`] can list, in this order.
pub const OP_NAMES: [&str; 5] = ["reboot", "set_clock", "attach", "jit_trust_query", "ota"];

/// How long a reboot command may run before it is killed and reported as
/// failed (`systemctl reboot` returns at once; a hung command must not
/// leave the daemon in CONTEXT_DESTROYING for good).
pub const REBOOT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a platform op could not be called or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The platform does not provide this op (upstream: a NULL member).
    #[error("op {0:?} is not provided on this platform")]
    NotProvided(&'static str),
    /// The op ran and failed.
    #[error("{op} failed: {message}")]
    Failed {
        /// The op's name, as in [`OP_NAMES`].
        op: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The op was refused for a reason its own service gives (such as a
    /// trust query that found nothing).
    #[error("{op}: {message}")]
    Refused {
        /// The op's name.
        op: &'static str,
        /// The service's protocol code.
        code: ErrorCode,
        /// The service's message.
        message: String,
    },
}

impl OpError {
    /// The protocol error code: an op that is not provided is `not_found`
    /// (the op named does not exist here), a failure is `io`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotProvided(_) => ErrorCode::NotFound,
            Self::Failed { .. } => ErrorCode::Io,
            Self::Refused { code, .. } => *code,
        }
    }

    fn failed(op: &'static str, message: impl Into<String>) -> Self {
        Self::Failed { op, message: message.into() }
    }
}

/// The system ops (upstream's `reboot`, `set_clock` and `wake_latency_us`).
/// Called from a blocking thread, never from the event loop, so an
/// implementation may block (run a command, write flash).
pub trait SystemOps: Send + Sync {
    /// Reboot the device. Called once the system has passed through
    /// CONTEXT_DESTROYING and the durable store is flushed. An op that
    /// replaces the process (exec) or powers off does not return.
    fn reboot(&self) -> Result<(), OpError>;

    /// Set the system clock to `unix_us` (Unix time in microseconds). A
    /// platform that cannot returns [`OpError::NotProvided`].
    fn set_clock(&self, unix_us: u64) -> Result<SetOutcome, OpError>;

    /// The time the device needs to wake from suspend, µs (see the module
    /// docs: deadline timers are armed that much earlier).
    fn wake_latency_us(&self) -> u64;
}

/// What the default reboot op does (config `[system] reboot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebootAction {
    /// Re-execute this program with the same arguments (`"exec"`): the
    /// same pid, the same stdin/stdout; safe on a developer's machine.
    Exec,
    /// Run this command line, without a shell (e.g. `systemctl reboot`).
    Command(Vec<String>),
}

impl RebootAction {
    /// `"exec"`, or a command line split on whitespace (no shell, so no
    /// quoting: a program needing arguments with spaces belongs in a
    /// script). Blank is refused.
    pub fn parse(s: &str) -> Result<Self, OpError> {
        let argv: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
        match argv.as_slice() {
            [] => Err(OpError::failed("reboot", "the reboot setting is empty")),
            [one] if one == "exec" => Ok(Self::Exec),
            _ => Ok(Self::Command(argv)),
        }
    }
}

/// The default Linux system ops: reboot as [`RebootAction`] says,
/// `set_clock` through a [`LinuxClockOps`] (CLOCK_REALTIME when permitted
/// and configured, else the soft clock), and a configured wake latency.
pub struct LinuxSystemOps {
    action: RebootAction,
    clock: Arc<dyn ClockOps>,
    wake_latency_us: u64,
    command_timeout: Duration,
}

impl Default for LinuxSystemOps {
    /// Exec reboot, the process-wide soft clock, no wake latency.
    fn default() -> Self {
        Self::new(
            RebootAction::Exec,
            Arc::new(LinuxClockOps::new(false, SoftClock::global().clone())),
            0,
        )
    }
}

impl LinuxSystemOps {
    /// Ops that reboot by `action`, set the clock through `clock`, and
    /// report `wake_latency_us`.
    pub fn new(action: RebootAction, clock: Arc<dyn ClockOps>, wake_latency_us: u64) -> Self {
        Self { action, clock, wake_latency_us, command_timeout: REBOOT_COMMAND_TIMEOUT }
    }

    /// How long a reboot command may run (default
    /// [`REBOOT_COMMAND_TIMEOUT`]).
    pub fn command_timeout(mut self, d: Duration) -> Self {
        self.command_timeout = d;
        self
    }

    /// What reboot does.
    pub fn action(&self) -> &RebootAction {
        &self.action
    }
}

impl SystemOps for LinuxSystemOps {
    fn reboot(&self) -> Result<(), OpError> {
        match &self.action {
            RebootAction::Exec => Err(exec_self()),
            RebootAction::Command(argv) => run_command(argv, self.command_timeout),
        }
    }

    fn set_clock(&self, unix_us: u64) -> Result<SetOutcome, OpError> {
        self.clock.set_clock(unix_us).map_err(|e| OpError::Refused {
            op: "set_clock",
            code: e.code(),
            message: e.to_string(),
        })
    }

    fn wake_latency_us(&self) -> u64 {
        self.wake_latency_us
    }
}

/// Replace this process with a fresh run of the same program and
/// arguments (`execv`): the pid and every descriptor not marked
/// close-on-exec (stdin, stdout, stderr) survive, so a `--stdio` client
/// keeps talking to the new image. Everything the Rust runtime, tokio and
/// the store open is close-on-exec, so the control socket is re-bound cleanly
/// and the store's lock is released. Returns only on failure.
///
/// If the binary was replaced since start (an upgrade), `/proc/self/exe`
/// reads `"<path> (deleted)"`; the path without that suffix is run, which
/// is the new binary.
pub fn exec_self() -> OpError {
    use std::ffi::CString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};

    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return OpError::failed("reboot", format!("cannot find this program: {e}")),
    };
    let bytes = exe.as_os_str().as_bytes();
    let bytes = bytes.strip_suffix(b" (deleted)").unwrap_or(bytes);
    let Ok(path) = CString::new(bytes) else {
        return OpError::failed("reboot", "program path contains NUL");
    };
    let mut args = Vec::new();
    for a in std::env::args_os() {
        match CString::new(a.into_vec()) {
            Ok(c) => args.push(c),
            Err(_) => return OpError::failed("reboot", "an argument contains NUL"),
        }
    }
    match nix::unistd::execv(&path, &args) {
        Err(e) => OpError::failed("reboot", format!("exec {}: {e}", exe.display())),
        Ok(never) => match never {},
    }
}

/// Run `argv` without a shell, stdin from /dev/null and stdout sent to
/// stderr (stdout may be a `--stdio` client's protocol stream). Success is
/// exit status 0 within `timeout`; after it the command is killed.
fn run_command(argv: &[String], timeout: Duration) -> Result<(), OpError> {
    use std::os::fd::AsFd;
    use std::process::{Command, Stdio};

    let [prog, args @ ..] = argv else {
        return Err(OpError::failed("reboot", "empty command line"));
    };
    let out =
        std::io::stderr().as_fd().try_clone_to_owned().map_or_else(|_| Stdio::null(), Stdio::from);
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .spawn()
        .map_err(|e| OpError::failed("reboot", format!("cannot run {prog:?}: {e}")))?;
    let pid = child.id();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(st)) if st.success() => Ok(()),
        Ok(Ok(st)) => Err(OpError::failed("reboot", format!("{prog:?} exited with {st}"))),
        Ok(Err(e)) => Err(OpError::failed("reboot", format!("waiting for {prog:?}: {e}"))),
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err(OpError::failed("reboot", format!("{prog:?} did not finish in {timeout:?}")))
        }
    }
}

/// `delay` shortened by the wake latency (never below zero): how every
/// deadline timer in lwsys is armed. See the module docs.
pub fn arm_early(delay: Duration, wake_latency_us: u64) -> Duration {
    delay.saturating_sub(Duration::from_micros(wake_latency_us))
}

/// Where a reboot is, for whoever must not exit under it (the daemon).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebootStatus {
    /// No reboot asked for.
    Idle,
    /// Shutting down, flushing, or in the op.
    Pending,
    /// The op returned success (a command such as `systemctl reboot` was
    /// accepted; the machine is going down).
    Done,
    /// The op failed, or the shutdown before it did.
    Failed(OpError),
}

/// Where the trust service is now, asked at each query: a supervised trust
/// service may be restarted under a new address.
pub type TrustLocator = Arc<dyn Fn() -> Option<Recipient<QueryTrust>> + Send + Sync>;

/// The OTA ops, shared: they are called from one worker at a time.
pub type SharedOtaOps = Arc<Mutex<Box<dyn OtaOps>>>;

/// The platform ops of a running system: which are provided, and calls to
/// them. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Ops {
    system: Option<Arc<dyn SystemOps>>,
    trust: Option<TrustLocator>,
    ota: Option<SharedOtaOps>,
    reboot: Arc<tokio::sync::watch::Sender<RebootStatus>>,
    started: Instant,
}

impl Ops {
    /// Ops with only the built-in attach: every other op is not provided.
    pub fn none() -> Self {
        Self {
            system: None,
            trust: None,
            ota: None,
            reboot: Arc::new(tokio::sync::watch::Sender::new(RebootStatus::Idle)),
            started: Instant::now(),
        }
    }

    /// Ops with these system ops.
    pub fn new(system: Arc<dyn SystemOps>) -> Self {
        Self { system: Some(system), ..Self::none() }
    }

    /// The trust query op, answered by the trust service at `to` (which
    /// runs the configured [`TrustQuery`]).
    pub fn with_trust(self, to: Recipient<QueryTrust>) -> Self {
        self.with_trust_located(Arc::new(move || Some(to.clone())))
    }

    /// The trust query op, answered by whichever trust service `locate`
    /// names at each query.
    pub fn with_trust_located(mut self, locate: TrustLocator) -> Self {
        self.trust = Some(locate);
        self
    }

    /// The OTA ops.
    pub fn with_ota(mut self, ota: Box<dyn OtaOps>) -> Self {
        self.ota = Some(Arc::new(Mutex::new(ota)));
        self
    }

    /// The ops provided, by name, in [`OP_NAMES`] order ("attach" always).
    pub fn present(&self) -> Vec<&'static str> {
        OP_NAMES.into_iter().filter(|n| self.provides(n)).collect()
    }

    /// Whether the op `name` is provided.
    pub fn provides(&self, name: &str) -> bool {
        match name {
            "reboot" | "set_clock" => self.system.is_some(),
            "attach" => true,
            "jit_trust_query" => self.trust.is_some(),
            "ota" => self.ota.is_some(),
            _ => false,
        }
    }

    /// The system ops.
    pub fn system(&self) -> Result<&Arc<dyn SystemOps>, OpError> {
        self.system.as_ref().ok_or(OpError::NotProvided("reboot"))
    }

    /// Call the reboot op now, on this thread, with no orderly shutdown
    /// first: `SystemHandle::reboot` is the way that shuts down first.
    pub fn reboot_now(&self) -> Result<(), OpError> {
        self.system()?.reboot()
    }

    /// Call the set_clock op.
    pub fn set_clock(&self, unix_us: u64) -> Result<SetOutcome, OpError> {
        self.system.as_ref().ok_or(OpError::NotProvided("set_clock"))?.set_clock(unix_us)
    }

    /// The wake latency, µs (0 without system ops).
    pub fn wake_latency_us(&self) -> u64 {
        self.system.as_ref().map_or(0, |s| s.wake_latency_us())
    }

    /// Ask the trust query op for every trusted CA with this SKID.
    pub async fn jit_trust_query(&self, skid: &[u8]) -> Result<TrustedCerts, OpError> {
        let locate = self.trust.as_ref().ok_or(OpError::NotProvided("jit_trust_query"))?;
        let to = locate()
            .ok_or_else(|| OpError::failed("jit_trust_query", "the trust service is down"))?;
        match to.send(QueryTrust { skid: skid.to_vec() }).await {
            Ok(Ok(certs)) => Ok(certs),
            Ok(Err(e)) => Err(OpError::Refused {
                op: "jit_trust_query",
                code: e.code(),
                message: e.to_string(),
            }),
            Err(e) => Err(OpError::failed("jit_trust_query", e.to_string())),
        }
    }

    /// Run `f` with the OTA ops (exclusive while it runs).
    pub fn with_ota_ops<R>(&self, f: impl FnOnce(&mut dyn OtaOps) -> R) -> Result<R, OpError> {
        let ota = self.ota.as_ref().ok_or(OpError::NotProvided("ota"))?;
        let mut g = ota.lock().map_err(|_| OpError::failed("ota", "an earlier OTA op panicked"))?;
        Ok(f(g.as_mut()))
    }

    /// How long since these ops (the system) were built.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Where a reboot is now.
    pub fn reboot_status(&self) -> RebootStatus {
        self.reboot.borrow().clone()
    }

    /// Record where a reboot is (`SystemHandle::reboot` does this).
    pub fn set_reboot_status(&self, s: RebootStatus) {
        self.reboot.send_replace(s);
    }

    /// Wait until no reboot is pending; returns how it settled.
    pub async fn reboot_settled(&self) -> RebootStatus {
        let mut rx = self.reboot.subscribe();
        let settled = match rx.wait_for(|s| *s != RebootStatus::Pending).await {
            Ok(s) => s.clone(),
            // The sender lives in `self`, so it cannot be gone.
            Err(_) => RebootStatus::Idle,
        };
        settled
    }
}

#[cfg(test)]
mod tests;
