//! The `clock.*` commands: read the time lwsys uses, or set it.

use clap::Subcommand;
use serde_json::{json, Value};

use super::format::{num, rfc3339_ms, text};
use super::Call;

/// `lwsysctl clock ...`
#[derive(Debug, Subcommand)]
pub enum ClockCommand {
    /// The time, whether it is valid, and where it came from (clock.get).
    Get,
    /// Set the time (clock.set); needs the daemon's uid.
    Set {
        /// The time in Unix microseconds.
        unix_us: u64,
    },
}

/// The request for `c`.
pub(crate) fn call(c: ClockCommand) -> Call {
    match c {
        ClockCommand::Get => Call::new("clock.get", json!({}), reading),
        ClockCommand::Set { unix_us } => {
            Call::new("clock.set", json!({"unix_us": unix_us}), reading)
        }
    }
}

fn reading(r: &Value) -> String {
    if r.get("unix_us").is_none() {
        return String::new();
    }
    let valid = if r.get("valid") == Some(&Value::Bool(true)) { "valid" } else { "not valid" };
    format!("{} {valid} (source {})", rfc3339_ms(num(r, "unix_us")), text(r, "source"))
}
