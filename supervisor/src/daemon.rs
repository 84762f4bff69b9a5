//! The `lwsysd` daemon: config and state dir, the system, the control
//! socket (and stdio), signals, and an orderly exit through
//! CONTEXT_DESTROYING. `bin/lwsysd.rs` only parses and calls [`run`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lwsys_messages::state::SystemState;
use slog::{crit, info, Logger};
use tokio::signal::unix::{signal, SignalKind};

use crate::builder::Builder;
use crate::config::{self, Cli, Config};
use crate::control::{bind_socket, serve, ControlSession, Peer, SessionEnv};
use crate::logging::stderr_logger;

/// Exit code: clean shutdown.
pub const EXIT_OK: i32 = 0;
/// Exit code: bad command line or config (sysexits EX_USAGE).
pub const EXIT_USAGE: i32 = 64;
/// Exit code: internal failure (sysexits EX_SOFTWARE).
pub const EXIT_INTERNAL: i32 = 70;

/// How long final replies get to reach their clients at exit.
const DRAIN: Duration = Duration::from_secs(1);

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

/// Create the state dir (mode 0700) if it does not exist.
fn prepare_state_dir(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Run the daemon until it shuts down; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let cfg = match effective_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lwsysd: {e}");
            return EXIT_USAGE;
        }
    };
    if cli.print_config {
        print!("{}", cfg.to_toml());
        return EXIT_OK;
    }
    let (log, guard) = stderr_logger(cfg.log.format, &cfg.log.level);
    let state_dir = config::state_dir(&cli, |k| std::env::var(k).ok());
    if let Err(e) = prepare_state_dir(&state_dir) {
        crit!(log, "cannot create the state directory"; "path" => %state_dir.display(), "error" => %e);
        return EXIT_INTERNAL;
    }
    let socket = cli.socket.clone().unwrap_or_else(|| state_dir.join("lwsys.sock"));
    let system = actix::System::new();
    let code =
        system.block_on(serve_until_shutdown(cfg, log.clone(), state_dir, socket, cli.stdio));
    drop(log);
    drop(guard);
    // The runtime is not dropped: tokio's stdin reader sits in a blocking
    // read that would hold the exit until another line arrived.
    std::mem::forget(system);
    code
}

/// Resolves once the system is in CONTEXT_DESTROYING. `wait_for` alone is
/// not enough: the modal states (AWAITING_MODAL_UPDATING, MODAL_UPDATING)
/// sort after CONTEXT_DESTROYING, so while one is current it is looked at
/// again after a short pause instead.
async fn destroying(sys: &crate::SystemHandle) {
    loop {
        match sys.wait_for(SystemState::ContextDestroying, None).await {
            Ok(SystemState::ContextDestroying) | Err(_) => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn serve_until_shutdown(
    cfg: Config,
    log: Logger,
    state_dir: PathBuf,
    socket: PathBuf,
    stdio: bool,
) -> i32 {
    info!(log, "lwsysd starting"; "version" => env!("CARGO_PKG_VERSION"), "pid" => std::process::id(),
          "state_dir" => %state_dir.display(), "boot_target" => %cfg.supervisor.boot_target);
    // Bind before booting so a second daemon fails before it does anything.
    let listener = match bind_socket(&socket) {
        Ok(l) => l,
        Err(e) => {
            crit!(log, "cannot serve the control socket"; "error" => %e);
            return EXIT_INTERNAL;
        }
    };
    let sys = match Builder::new()
        .logger(log.clone())
        .consent_timeout(cfg.consent_timeout())
        .shutdown_grace(cfg.shutdown_grace())
        .boot_target(cfg.supervisor.boot_target)
        .journal_len(cfg.supervisor.journal_len)
        .services(cfg.services(&state_dir))
        .start()
    {
        Ok(s) => s,
        Err(e) => {
            crit!(log, "cannot start the system"; "error" => %e);
            return EXIT_INTERNAL;
        }
    };
    let unwritten = Arc::new(AtomicUsize::new(0));
    let env = SessionEnv {
        sys: sys.clone(),
        log: log.clone(),
        daemon_uid: nix::unistd::getuid().as_raw(),
        consent_timeout: cfg.consent_timeout(),
        queue: cfg.control.client_queue,
        unwritten: unwritten.clone(),
    };
    let server = serve(listener, socket, env.clone(), cfg.control.max_clients);
    if stdio {
        let me = Peer {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            pid: i32::try_from(std::process::id()).ok(),
        };
        let stdin = tokio::io::BufReader::new(tokio::io::stdin());
        ControlSession::start(env, me, stdin, tokio::io::stdout(), None);
    }
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        crit!(log, "cannot install signal handlers");
        return EXIT_INTERNAL;
    };
    tokio::select! {
        _ = term.recv() => info!(log, "SIGTERM received"),
        _ = int.recv() => info!(log, "SIGINT received"),
        _ = destroying(&sys) => {}
    }
    let _ = sys.shutdown().await;
    // Let the final replies (such as system.shutdown's) reach their
    // clients, bounded so a stuck client cannot hold the exit.
    let deadline = tokio::time::Instant::now() + DRAIN;
    while unwritten.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(server);
    info!(log, "lwsysd stopped");
    EXIT_OK
}
