//! The `trust.*` commands: look up trusted CAs by Subject Key Identifier.

use clap::Subcommand;
use serde_json::{json, Value};

use super::format::{table, text};
use super::Call;

/// `lwsysctl trust ...`
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Every trusted CA with this Subject Key Identifier (trust.query).
    Query {
        /// The SKID in hex (pairs may be separated by `:`).
        skid: String,
    },
}

/// The request for `c`.
pub(crate) fn call(c: TrustCommand) -> Call {
    match c {
        TrustCommand::Query { skid } => Call::new("trust.query", json!({"skid": skid}), certs),
    }
}

fn certs(r: &Value) -> String {
    let list = r.get("certs").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let mut rows = vec![vec!["SUBJECT".to_owned(), "NOT AFTER".to_owned(), "EXPIRED".to_owned()]];
    for c in list {
        let not_after = c
            .get("not_after")
            .and_then(Value::as_u64)
            .map_or_else(|| text(c, "not_after"), |s| super::format::rfc3339(s * 1_000_000));
        rows.push(vec![text(c, "subject"), not_after, text(c, "expired")]);
    }
    table(&rows)
}
