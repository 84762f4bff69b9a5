//! The `lwsysd` daemon: config and state dir, the system, the control
//! socket (and stdio), signals, and an orderly exit through
//! CONTEXT_DESTROYING. `bin/lwsysd.rs` only parses and calls [`run`].
//!
//! Start-up refuses (exit 70) a state dir that is not the daemon's alone
//! and a durable store that is damaged, unless `--recover-store` moves it
//! aside: see `docs/config.md`, "State directory rules".
//!
//! Reboot (`system.reboot`, `SystemHandle::reboot`): the system passes
//! through CONTEXT_DESTROYING, the store is flushed, then the reboot op of
//! [`DaemonOps`] runs. With `[system] reboot = "exec"` the daemon finishes
//! like a shutdown (final replies written, socket removed, logs flushed)
//! and [`run`] re-executes lwsysd with the same arguments: same pid, same
//! stdin/stdout. A command is run as is; if it succeeds the daemon exits 0
//! (the machine is going down). If the reboot fails, the daemon comes back
//! up the same way as an exec reboot: it re-executes itself, so it never
//! stays in CONTEXT_DESTROYING (the state machine does not leave it, and a
//! fresh process is the one clean way back). Only if that exec fails too
//! does it exit 70, for a service manager to restart it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lwsys_actors::clock::{LinuxClockOps, SetOutcome, SoftClock};
use lwsys_actors::platform::{
    self, LinuxSystemOps, OpError, RebootAction, RebootStatus, SystemOps, REBOOT_COMMAND_TIMEOUT,
};
use lwsys_actors::store::{self, Store, StoreError};
use slog::{crit, error, info, warn, Logger};
use tokio::signal::unix::{signal, SignalKind};

use crate::builder::Builder;
use crate::config::{self, Cli, Config};
use crate::control::{
    bind_socket, serve, AccessPolicy, ControlSession, Limits, Peer, Role, SessionEnv,
};
use crate::logging::stderr_logger;

/// Exit code: clean shutdown.
pub const EXIT_OK: i32 = 0;
/// Exit code: bad command line or config (sysexits EX_USAGE).
pub const EXIT_USAGE: i32 = 64;
/// Exit code: internal failure (sysexits EX_SOFTWARE).
pub const EXIT_INTERNAL: i32 = 70;

/// How long final replies get to reach their clients at exit.
const DRAIN: Duration = Duration::from_secs(1);

/// How long the daemon waits, once in CONTEXT_DESTROYING, for a reboot op
/// to return (a command is killed after [`REBOOT_COMMAND_TIMEOUT`]).
const REBOOT_SETTLE: Duration = REBOOT_COMMAND_TIMEOUT.saturating_add(Duration::from_secs(10));

/// How a served system ended.
enum End {
    /// Exit with this code.
    Exit(i32),
    /// Re-execute lwsysd (an exec reboot, or coming back up after a failed
    /// reboot).
    Reexec,
}

/// The daemon's system ops: [`LinuxSystemOps`] as configured, except that
/// an exec reboot is handed to [`run`], which execs once the runtime has
/// stopped, the final replies are written and the logs flushed.
pub struct DaemonOps {
    linux: LinuxSystemOps,
    exec: AtomicBool,
}

impl DaemonOps {
    /// The ops `[system]` and `[time]` in `cfg` describe.
    pub fn from_config(cfg: &Config) -> Result<Self, OpError> {
        let action = RebootAction::parse(&cfg.system.reboot)?;
        let clock = LinuxClockOps::new(cfg.time.set_system_clock, SoftClock::global().clone());
        let linux = LinuxSystemOps::new(action, Arc::new(clock), cfg.system.wake_latency_us);
        Ok(Self { linux, exec: AtomicBool::new(false) })
    }

    /// Whether an exec reboot was asked for.
    fn exec_requested(&self) -> bool {
        self.exec.load(Ordering::SeqCst)
    }
}

impl SystemOps for DaemonOps {
    fn reboot(&self) -> Result<(), OpError> {
        match self.linux.action() {
            RebootAction::Exec => {
                self.exec.store(true, Ordering::SeqCst);
                Ok(())
            }
            RebootAction::Command(_) => self.linux.reboot(),
        }
    }

    fn set_clock(&self, unix_us: u64) -> Result<SetOutcome, OpError> {
        self.linux.set_clock(unix_us)
    }

    fn wake_latency_us(&self) -> u64 {
        self.linux.wake_latency_us()
    }
}

/// Load the config named on the command line (or the embedded defaults)
/// with the flags applied.
pub fn effective_config(cli: &Cli) -> Result<Config, config::ConfigError> {
    let mut cfg = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    cfg.apply_cli(cli)?;
    Ok(cfg)
}

/// Create the state dir (mode 0700) if it does not exist; refuse one that
/// is not ours alone: owned by another user, or writable by group or
/// others (like sshd's StrictModes), since whoever can write it could swap
/// the durable store or the socket under us.
fn prepare_state_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if !dir.exists() {
        store::create_private_dir(dir).map_err(|e| e.to_string())?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    let me = nix::unistd::getuid().as_raw();
    if meta.uid() != me {
        return Err(format!("owned by uid {}, not by this daemon's uid {me}", meta.uid()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "mode {mode:04o} lets group or others write it; it must not (chmod go-w, 0700 advised)"
        ));
    }
    Ok(())
}

/// Runs `f` with the panic hook silenced: redb (only in a build with the
/// `redb-import` feature, importing an old store) asserts on some damaged
/// files, the store turns that into an error, and the start-up check logs
/// it as one line instead of a panic report. Only called before the system
/// starts, while no other thread of ours can panic.
fn without_panic_report<T>(f: impl FnOnce() -> T) -> T {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = f();
    std::panic::set_hook(previous);
    out
}

/// Whether a store that failed with `e` may be moved aside: not when it is
/// open in another process (a live daemon's), not when the fault is the
/// system's (a full disk: the store may be sound), not when it is a
/// symlink (someone planted it; an admin should look), and not for an old
/// `lwsys.redb` that was not imported (it is not the store moved aside,
/// and may hold the device's only secrets).
fn recoverable(e: &StoreError, path: &Path) -> bool {
    let symlink = std::fs::symlink_metadata(path).map(|m| m.file_type().is_symlink());
    !e.in_use()
        && !e.environmental()
        && !matches!(e, StoreError::Legacy { .. })
        && !matches!(symlink, Ok(true))
}

/// The keys of the blobs table that can still be read from a damaged
/// store (none when it does not open).
fn readable_keys(state_dir: &Path) -> Vec<String> {
    let Ok(store) = Store::open(state_dir) else { return Vec::new() };
    let mut rows = Vec::new();
    let _ = store.scan(store::BLOBS_TABLE, &mut rows);
    rows.into_iter().map(|(k, _)| String::from_utf8_lossy(&k).into_owned()).collect()
}

/// The bytes in the store directory's entries (what a recovery sets
/// aside), not following links; 0 where it cannot be listed.
fn stored_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
}

/// Moves a broken store at `path` aside, to `<path>.broken-<unix time>`
/// (with `-N` appended if taken), 0600 (0700 for a directory); the new path.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = format!("{}.broken-{now}", path.display());
    let mut aside = PathBuf::from(&base);
    let mut n = 1;
    while std::fs::symlink_metadata(&aside).is_ok() {
        aside = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &aside)?;
    let meta = std::fs::symlink_metadata(&aside)?;
    let mode = if meta.is_dir() { store::PRIVATE_DIR_MODE } else { store::PRIVATE_FILE_MODE };
    std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(mode))?;
    Ok(aside)
}

/// Opens the durable store (importing an old `lwsys.redb` first, in a
/// build with `redb-import`), verifies every record's checksum and reads
/// all of it before anything starts, so that a damaged store stops the
/// daemon with one clear line (exit 70) rather than later, mid-boot. With
/// `recover`, a damaged store directory is moved aside whole and an empty
/// one created, logging what was lost. A store directory or record file
/// with loose modes is tightened to 0700 / 0600, with a warning.
fn check_store(state_dir: &Path, recover: bool, log: &Logger) -> Result<(), i32> {
    let path = state_dir.join(store::STORE_DIR);
    let had_legacy = state_dir.join(store::LEGACY_FILE).exists();
    let opened = without_panic_report(|| {
        let s = Store::open(state_dir)?;
        s.check_integrity()?;
        s.load_blobs()?;
        Ok::<_, StoreError>(s)
    });
    let fault = match opened {
        Ok(s) => {
            if let Some(mode) = s.tightened_from() {
                warn!(log, "the store was readable or writable by others; tightened to 0600 (0700 for its directory)";
                    "file" => %path.display(), "mode_was" => format!("{mode:04o}"));
            }
            if s.temp_removed() > 0 {
                info!(log, "removed the temporary files of interrupted store writes (their keys kept their old values)";
                    "dir" => %path.display(), "count" => s.temp_removed());
            }
            if had_legacy {
                warn!(log, "imported the old store into the store directory";
                    "from" => %state_dir.join(store::LEGACY_FILE).display(),
                    "kept_as" => %state_dir.join(store::LEGACY_DONE).display(),
                    "to" => %path.display());
            }
            return Ok(());
        }
        Err(e) => e,
    };
    if !recover || !recoverable(&fault, &path) {
        let symlink = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        let hint = if fault.in_use() {
            "left as is: it is open in another process (another lwsysd on this state dir?)"
        } else if fault.environmental() {
            "left as is: the system failed, not the file (disk full, read-only, out of memory); \
             fix that and start again"
        } else if symlink {
            "left as is: a symbolic link is never followed nor moved; remove it after checking who made it"
        } else if matches!(fault, StoreError::Legacy { .. }) {
            "left as is: the old store lwsys.redb holds the durable blobs of the version before; \
             start once a build with the redb-import feature to import it (or move it away to \
             start without them); --recover-store never moves it"
        } else {
            "left as is; start once with --recover-store to move it aside and start empty"
        };
        crit!(log, "the durable store is unusable"; "file" => %path.display(),
            "fault" => %fault, "action" => hint);
        return Err(EXIT_INTERNAL);
    }
    let keys = without_panic_report(|| readable_keys(state_dir));
    let size = stored_bytes(&path);
    let aside = match move_aside(&path) {
        Ok(a) => a,
        Err(e) => {
            crit!(log, "cannot move the broken store aside"; "file" => %path.display(),
                "fault" => %fault, "error" => %e);
            return Err(EXIT_INTERNAL);
        }
    };
    warn!(log, "recovering: the broken store was moved aside; starting with an empty store";
        "file" => %path.display(), "fault" => %fault, "moved_to" => %aside.display(),
        "size" => size, "readable_keys" => ?keys);
    match Store::open(state_dir) {
        Ok(_) => Ok(()),
        Err(e) => {
            crit!(log, "cannot create a new store"; "file" => %path.display(), "error" => %e);
            Err(EXIT_INTERNAL)
        }
    }
}

/// `lwsysd --man`: the daemon's own man page, from the same clap
/// definitions the parser uses (lwsysctl cannot render it: it does not link
/// the daemon). Needs no config, so a broken one does not hide the page.
fn print_man() -> i32 {
    use clap::CommandFactory as _;
    use std::io::Write as _;
    let mut page = Vec::new();
    if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut page) {
        eprintln!("lwsysd: cannot render the man page: {e}");
        return EXIT_INTERNAL;
    }
    // The page is the command's output; a reader that went away (`| head`)
    // is no failure.
    let _ = std::io::stdout().lock().write_all(&page);
    EXIT_OK
}

/// Run the daemon until it shuts down; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    if cli.man {
        return print_man();
    }
    let cfg = match effective_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lwsysd: {e}");
            return EXIT_USAGE;
        }
    };
    if cli.print_config {
        // The user asked for this on stdout: it is the command's output.
        #[allow(clippy::print_stdout)]
        {
            print!("{}", cfg.to_toml());
        }
        return EXIT_OK;
    }
    let (log, guard) = stderr_logger(cfg.log.format, &cfg.log.level);
    let state_dir = config::state_dir(&cli, |k| std::env::var(k).ok());
    if let Err(e) = prepare_state_dir(&state_dir) {
        crit!(log, "refusing the state directory"; "path" => %state_dir.display(), "error" => %e);
        return EXIT_INTERNAL;
    }
    let mut cfg = cfg;
    cfg.control.max_clients = crate::fdlimit::fit_clients(&log, cfg.control.max_clients);
    let socket = config::socket_path(&cli, &state_dir, |k| std::env::var(k).ok());
    let system = actix::System::new();
    let end = system.block_on(serve_until_shutdown(
        cfg.clone(),
        log.clone(),
        state_dir,
        socket,
        cli.stdio,
        cli.recover_store,
    ));
    drop(log);
    drop(guard);
    // The runtime is not dropped: tokio's stdin reader sits in a blocking
    // read that would hold the exit until another line arrived. (An exec
    // ends that thread without it consuming anything.)
    std::mem::forget(system);
    match end {
        End::Exit(code) => code,
        End::Reexec => {
            let e = platform::exec_self();
            let (log, _guard) = stderr_logger(cfg.log.format, &cfg.log.level);
            crit!(log, "cannot re-execute lwsysd"; "error" => %e);
            EXIT_INTERNAL
        }
    }
}

async fn serve_until_shutdown(
    cfg: Config,
    log: Logger,
    state_dir: PathBuf,
    socket: PathBuf,
    stdio: bool,
    recover_store: bool,
) -> End {
    info!(log, "lwsysd starting"; "version" => env!("CARGO_PKG_VERSION"), "pid" => std::process::id(),
          "state_dir" => %state_dir.display(), "socket" => %socket.display(), "boot_target" => %cfg.supervisor.boot_target);
    // Bind before booting so a second daemon fails before it does anything.
    let listener = match bind_socket(&socket) {
        Ok(l) => l,
        Err(e) => {
            crit!(log, "cannot serve the control socket"; "error" => %e);
            return End::Exit(EXIT_INTERNAL);
        }
    };
    // After the bind: a second daemon on this state dir has failed by now,
    // so the store it would find locked is never taken for a broken one.
    if let Err(code) = check_store(&state_dir, recover_store, &log) {
        return End::Exit(code);
    }
    let ops = match DaemonOps::from_config(&cfg) {
        Ok(o) => Arc::new(o),
        Err(e) => {
            crit!(log, "bad system ops settings"; "error" => %e);
            return End::Exit(EXIT_USAGE);
        }
    };
    let fleet = cfg.fleet_settings();
    // The gate is a build-time notifier, so the boot walk meets it.
    let gate = fleet.as_ref().and_then(|f| f.gate_state).map(crate::fleet::FleetGate::new);
    let sys = match Builder::new()
        .logger(log.clone())
        .notifiers(
            gate.clone()
                .map(|g| crate::notifier::NotifierSpec::inline(crate::fleet::GATE_NOTIFIER, g)),
        )
        .consent_timeout(cfg.consent_timeout())
        .shutdown_grace(cfg.shutdown_grace())
        .boot_target(cfg.supervisor.boot_target)
        .journal_len(cfg.supervisor.journal_len)
        .restart_limits(cfg.restart_limits())
        .services(cfg.services(&state_dir))
        .system_ops(ops.clone())
        .start()
    {
        Ok(s) => s,
        Err(e) => {
            crit!(log, "cannot start the system"; "error" => %e);
            return End::Exit(EXIT_INTERNAL);
        }
    };
    let _systemd = crate::systemd::SystemdNotifier::start_if_wanted(&sys, &log);
    let unwritten = Arc::new(AtomicUsize::new(0));
    let env = SessionEnv {
        sys: sys.clone(),
        log: log.clone(),
        access: Arc::new(AccessPolicy::from_config(nix::unistd::getuid().as_raw(), &cfg.control)),
        consent_timeout: cfg.consent_timeout(),
        limits: Limits::from_config(&cfg.control, cfg.blobs.max_bytes),
        counts: Default::default(),
        unwritten: unwritten.clone(),
    };
    let server = serve(listener, socket, env.clone());
    let _fleet = fleet.map(|f| crate::fleet::FleetService::start(f, env.clone(), gate));
    if stdio {
        let me = Peer {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            pid: i32::try_from(std::process::id()).ok(),
        };
        let stdin = tokio::io::BufReader::new(tokio::io::stdin());
        // Whoever holds our stdio started us: an admin.
        ControlSession::start(env, me, Role::Admin, stdin, tokio::io::stdout(), None);
    }
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        crit!(log, "cannot install signal handlers");
        return End::Exit(EXIT_INTERNAL);
    };
    tokio::select! {
        _ = term.recv() => info!(log, "SIGTERM received"),
        _ = int.recv() => info!(log, "SIGINT received"),
        _ = sys.shutdown_begun() => {}
    }
    let _ = sys.shutdown().await;
    let end = match sys.failure() {
        // The supervisor gave up on a service: exit non-zero so the init
        // system restarts the whole daemon.
        Some(why) => {
            crit!(log, "the system failed"; "reason" => &why);
            End::Exit(EXIT_INTERNAL)
        }
        None => reboot_outcome(&sys, &ops, &log).await,
    };
    // Let the final replies (such as system.shutdown's) reach their
    // clients, bounded so a stuck client cannot hold the exit.
    let deadline = tokio::time::Instant::now() + DRAIN;
    while unwritten.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(server);
    match end {
        End::Exit(_) => info!(log, "lwsysd stopped"),
        End::Reexec => info!(log, "lwsysd re-executing"; "pid" => std::process::id()),
    }
    end
}

/// How the daemon ends once in CONTEXT_DESTROYING: after a reboot, as its
/// op settled; otherwise a plain exit.
async fn reboot_outcome(sys: &crate::SystemHandle, ops: &DaemonOps, log: &Logger) -> End {
    if sys.ops().reboot_status() == RebootStatus::Idle {
        return End::Exit(EXIT_OK);
    }
    let settled = tokio::time::timeout(REBOOT_SETTLE, sys.ops().reboot_settled()).await;
    match settled {
        Ok(RebootStatus::Done) if ops.exec_requested() => End::Reexec,
        Ok(RebootStatus::Done) => {
            info!(log, "reboot command accepted; exiting");
            End::Exit(EXIT_OK)
        }
        Ok(RebootStatus::Failed(e)) => {
            error!(log, "reboot failed; coming back up"; "error" => %e);
            // Give the session that asked a turn to queue its
            // `reboot_failed` event before the final drain.
            tokio::time::sleep(Duration::from_millis(20)).await;
            End::Reexec
        }
        Ok(RebootStatus::Idle | RebootStatus::Pending) | Err(_) => {
            error!(log, "reboot did not settle; coming back up";
                   "waited_s" => REBOOT_SETTLE.as_secs());
            End::Reexec
        }
    }
}
