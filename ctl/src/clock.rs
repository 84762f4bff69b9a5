//! The `clock.*` commands: read the time lwsys uses, or set it.

use clap::Subcommand;
use lwsys_messages::clock::ClockReading;
use lwsys_messages::protocol::Request;
use serde_json::Value;

use super::format::rfc3339_ms;
use super::{typed, Call};

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
        ClockCommand::Get => Call::new(&Request::ClockGet {}, reading),
        ClockCommand::Set { unix_us } => Call::new(&Request::ClockSet { unix_us }, reading),
    }
}

fn reading(r: &Value) -> String {
    let Some(r) = typed::<ClockReading>(r) else { return String::new() };
    let valid = if r.valid { "valid" } else { "not valid" };
    format!("{} {valid} (source {})", rfc3339_ms(r.unix_us), r.source.as_str())
}
