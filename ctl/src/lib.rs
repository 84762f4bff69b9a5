//! `lwsysctl`, the command-line client of the control protocol: the clap
//! command line, and `run`, which turns one command into one request (or a
//! stream of events, for `watch`) and prints the answer.
//!
//! Output goes to writers handed in by the binary, so everything here is
//! testable and nothing prints behind the caller's back. Exit statuses:
//! [`EXIT_OK`], [`EXIT_ERROR_REPLY`] (the daemon answered with an error),
//! [`EXIT_USAGE`] (bad command line or no daemon to talk to).
//!
//! The client links none of the daemon: it speaks the protocol with
//! `lwsys-messages` (without its `actor` feature), finds the socket by
//! [`lwsys_messages::socket`]'s rules and signs OTA releases with
//! `lwsys-manifest`. [`ota_tools`] holds the `lwsysctl ota` pieces that
//! need no daemon (keygen, publish, verify, the progress bar).
#![forbid(unsafe_code)]

mod blob;
mod client;
mod clock;
pub mod fleet;
mod format;
mod generate;
mod ota;
pub mod ota_tools;
mod plot;
mod state;
mod system;
mod trust;
mod watch;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use lwsys_messages::protocol::Request;
use lwsys_messages::state::SystemState;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub use blob::BlobCommand;
pub use client::{ConnError, Connection};
pub use clock::ClockCommand;
pub use fleet::{FleetArgs, FleetCommand};
pub use format::Terminal;
pub use generate::{CompletionsArgs, ManArgs};
pub use ota::OtaCommand;
pub use trust::TrustCommand;

/// Exit status: the daemon answered `ok: true`.
pub const EXIT_OK: i32 = 0;
/// Exit status: the daemon answered with an error.
pub const EXIT_ERROR_REPLY: i32 = 1;
/// Exit status: bad command line, or the daemon could not be reached.
pub const EXIT_USAGE: i32 = 2;

/// The `lwsysctl` command line.
#[derive(Debug, Parser)]
#[command(name = "lwsysctl", version, about = "Control and inspect a running lwsysd")]
pub struct Cli {
    /// The daemon's control socket. Default: $LWSYS_SOCKET, else where
    /// lwsysd puts it ($RUNTIME_DIRECTORY/lwsys.sock, else
    /// `<state-dir>/lwsys.sock` with the state dir found as lwsysd finds it),
    /// else /run/lwsys/lwsys.sock if only that one exists.
    #[arg(long, value_name = "PATH", env = "LWSYS_SOCKET", global = true)]
    pub socket: Option<PathBuf>,
    /// Print the protocol's JSON reply (one line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands, one per protocol op (or group of ops).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The current state and since when (state.get).
    State,
    /// Walk one state at a time to TARGET (state.steps).
    Steps {
        /// The state to reach, such as OPERATIONAL.
        target: SystemState,
    },
    /// One atomic transition to TARGET (state.jump).
    Jump {
        /// The state to enter.
        target: SystemState,
    },
    /// Wait until the state is at or past STATE (state.wait).
    Wait {
        /// The state to wait for.
        state: SystemState,
        /// Give up after this many milliseconds (error `timeout`).
        #[arg(long, value_name = "N")]
        timeout_ms: Option<u64>,
    },
    /// Why the system is where it is: who holds the walk, and the last
    /// consent rounds with verdicts and latencies (state.explain).
    Explain,
    /// The journal as an SVG timeline, like `systemd-analyze plot`.
    Plot,
    /// Stream state and notifier events until interrupted or the daemon
    /// closes the connection.
    Watch,
    /// The registered notifiers, in consent order (from system.info).
    Notifiers,
    /// Version, state, pid and what the daemon offers (system.info).
    Info,
    /// Shut the daemon down through CONTEXT_DESTROYING (system.shutdown).
    Shutdown,
    /// Reboot the system after an orderly shutdown (system.reboot).
    Reboot,
    /// Policy changed: POLICY_INVALID, INITIALIZED, then on to OPERATIONAL
    /// (state.policy_invalidate).
    PolicyInvalidate,
    /// Enter MODAL_UPDATING through AWAITING_MODAL_UPDATING
    /// (state.enter_modal).
    EnterModal,
    /// Leave a modal update: back to OPERATIONAL (state.leave_modal).
    LeaveModal,
    /// Read and write system blobs (blob.*).
    #[command(subcommand)]
    Blob(BlobCommand),
    /// Read or set the time lwsys uses (clock.*).
    #[command(subcommand)]
    Clock(ClockCommand),
    /// Look up trusted CAs (trust.*).
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Firmware updates (ota.*).
    #[command(subcommand)]
    Ota(OtaCommand),
    /// Send one request line as given (an id is added if missing) and print
    /// the reply as JSON.
    Raw {
        /// The request, a JSON object such as '{"op":"state.get"}'.
        #[arg(value_name = "JSON")]
        request: String,
    },
    /// The fleet through its MQTT broker (no daemon needed): status,
    /// explain, send.
    Fleet(FleetArgs),
    /// Print the shell completion script (no daemon needed).
    Completions(CompletionsArgs),
    /// Print a man page as roff, e.g. `lwsysctl man | man -l -` (no daemon
    /// needed).
    Man(ManArgs),
}

/// Why a command could not even be sent.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The command line named something the client can check itself.
    #[error("{0}")]
    Usage(String),
    /// Talking to the daemon failed.
    #[error(transparent)]
    Conn(#[from] ConnError),
}

/// One request and how to show its successful reply to a person.
pub(crate) struct Call {
    /// The op.
    pub op: &'static str,
    /// Its parameters.
    pub params: Map<String, Value>,
    /// The reply as text (the whole reply object is passed).
    pub human: fn(&Value) -> String,
}

impl Call {
    /// `req` shown by `human`: the op name comes from the protocol's
    /// table, the parameters from the typed request.
    pub fn new(req: &Request, human: fn(&Value) -> String) -> Self {
        let params = match serde_json::to_value(req) {
            Ok(Value::Object(mut m)) => {
                m.remove("op");
                m
            }
            _ => Map::new(),
        };
        Self { op: req.op().name(), params, human }
    }
}

impl Call {
    /// The request object, `op` included (for calls made on a connection
    /// the caller keeps).
    pub fn with_op(self) -> Map<String, Value> {
        let mut req = self.params;
        req.insert("op".into(), Value::from(self.op));
        req
    }
}

/// A reply (or event) read as its protocol type; `None` when it is not
/// one (an older or newer daemon), which the callers show as nothing.
pub(crate) fn typed<T: DeserializeOwned>(r: &Value) -> Option<T> {
    serde_json::from_value(r.clone()).ok()
}

/// The socket used when `--socket` and `$LWSYS_SOCKET` are not given:
/// [`lwsys_messages::socket::client_socket`], the rule lwsysd follows.
pub fn default_socket(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    lwsys_messages::socket::client_socket(env, std::path::Path::exists)
}

/// Run `cli`, writing results to `out` and diagnostics to `err`, plain
/// text (no colour, no redrawing); returns the process exit status.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    run_on_terminal(cli, Terminal::plain(), out, err)
}

/// [`run`] for output that may be a terminal (`term`, from
/// [`Terminal::detect`]): colour and progress bars only where it says.
pub fn run_on_terminal(cli: Cli, term: Terminal, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let socket = cli.socket.clone().unwrap_or_else(|| default_socket(|k| std::env::var(k).ok()));
    let outcome = match run_on(&socket, cli, term, out) {
        Ok(o) => o,
        // Already says "cannot connect to <path>: <why>".
        Err(CtlError::Conn(e @ ConnError::Connect { .. })) => {
            Outcome::fail(EXIT_USAGE, e.to_string())
        }
        Err(e) => Outcome::fail(EXIT_USAGE, format!("lwsysctl: {e}")),
    };
    let _ = out.flush();
    if let Some(line) = outcome.err {
        let line = match line.strip_prefix("error:") {
            Some(rest) => {
                format!("{}{rest}", format::paint("error:", format::RED, term.colour_err))
            }
            None => line,
        };
        let _ = writeln!(err, "{line}");
    }
    outcome.code
}

fn run_on(
    socket: &std::path::Path,
    cli: Cli,
    term: Terminal,
    out: &mut dyn Write,
) -> Result<Outcome, CtlError> {
    let call = match cli.command {
        Command::Completions(a) => return Ok(generate::completions(&a, out)),
        Command::Man(a) => return generate::man(&a, out),
        Command::Watch => {
            let mut conn = Connection::open(socket)?;
            return watch::run(&mut conn, cli.json, out);
        }
        Command::Raw { request } => return system::raw(socket, &request, out),
        Command::Fleet(a) => return fleet::run(a, cli.json, out),
        Command::State => state::get(),
        Command::Steps { target } => state::walk(Request::StateSteps { target }),
        Command::Jump { target } => state::walk(Request::StateJump { target }),
        Command::Wait { state, timeout_ms } => state::wait(state, timeout_ms),
        Command::Explain => state::explain(),
        Command::Plot => plot::call(),
        Command::PolicyInvalidate => state::walk(Request::StatePolicyInvalidate {}),
        Command::EnterModal => state::walk(Request::StateEnterModal {}),
        Command::LeaveModal => state::walk(Request::StateLeaveModal {}),
        Command::Notifiers => system::notifiers_call(),
        Command::Info => system::info(),
        Command::Shutdown => system::shutdown(),
        Command::Reboot => system::reboot(),
        Command::Blob(c) => blob::call(c)?,
        Command::Clock(c) => clock::call(c),
        Command::Trust(c) => trust::call(c),
        Command::Ota(c) => match ota::run(c, socket, cli.json, term, out)? {
            ota::Next::Send(call) => call,
            ota::Next::Done(o) => return Ok(o),
        },
    };
    let mut conn = Connection::open(socket)?;
    let human = call.human;
    let reply = conn.call(call.with_op())?;
    Ok(show(&reply, cli.json, human, out))
}

/// What `run_on` decided: an exit status, and an error line for stderr.
pub(crate) struct Outcome {
    code: i32,
    err: Option<String>,
}

impl Outcome {
    /// Success.
    pub fn ok() -> Self {
        Self { code: EXIT_OK, err: None }
    }

    /// Failure with `code`, `line` for stderr.
    pub fn fail(code: i32, line: String) -> Self {
        Self { code, err: Some(line) }
    }
}

/// Print `reply`: JSON or text on success; on an error reply the JSON
/// still goes to `out` with `--json`, and the error line is kept for
/// stderr.
pub(crate) fn show(
    reply: &Value,
    json: bool,
    human: fn(&Value) -> String,
    out: &mut dyn Write,
) -> Outcome {
    if json {
        let _ = writeln!(out, "{reply}");
    }
    if reply.get("ok") == Some(&Value::Bool(true)) {
        if !json {
            let text = human(reply);
            let _ = write!(out, "{text}");
            if !text.is_empty() && !text.ends_with('\n') {
                let _ = writeln!(out);
            }
        }
        return Outcome::ok();
    }
    let e = reply.get("error").cloned().unwrap_or(Value::Null);
    let mut line = format!("error: {}: {}", format::text(&e, "code"), format::text(&e, "message"));
    // `denied` carries who refused beside the error.
    if let Some(by) = reply.get("by").and_then(Value::as_str) {
        line.push_str(&format!(" (by {by}, state {})", format::text(reply, "state")));
    }
    Outcome::fail(EXIT_ERROR_REPLY, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_socket_follows_the_daemons_state_dir_rule() {
        let none = |_: &str| None;
        assert_eq!(default_socket(none), PathBuf::from("lwsys-state/lwsys.sock"));
        let xdg = |k: &str| (k == "XDG_STATE_HOME").then(|| "/x".to_owned());
        assert_eq!(default_socket(xdg), PathBuf::from("/x/lwsys/lwsys.sock"));
        let sd = |k: &str| (k == "STATE_DIRECTORY").then(|| "/s:/t".to_owned());
        assert_eq!(default_socket(sd), PathBuf::from("/s/lwsys.sock"));
    }

    #[test]
    fn an_error_reply_is_exit_1_with_code_and_message() {
        let r = serde_json::json!({"id": 1, "ok": false,
            "error": {"code": "denied", "message": "n2 denied"}, "by": "n2", "state": "DHCP"});
        let mut out = Vec::new();
        let o = show(&r, false, |_| String::new(), &mut out);
        assert_eq!(o.code, EXIT_ERROR_REPLY);
        assert_eq!(o.err.as_deref(), Some("error: denied: n2 denied (by n2, state DHCP)"));
        assert!(out.is_empty());
    }
}
