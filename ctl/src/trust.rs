//! The `trust.*` commands: look up trusted CAs by Subject Key Identifier.

use clap::Subcommand;
use lwsys_messages::protocol::Request;
use lwsys_messages::trust::TrustedCerts;
use serde_json::Value;

use super::format::table;
use super::{typed, Call};

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
        TrustCommand::Query { skid } => Call::new(&Request::TrustQuery { skid }, certs),
    }
}

fn certs(r: &Value) -> String {
    let list = typed::<TrustedCerts>(r).map(|t| t.certs).unwrap_or_default();
    let mut rows = vec![vec!["SUBJECT".to_owned(), "NOT AFTER".to_owned(), "EXPIRED".to_owned()]];
    for c in list {
        // Before 1970 (negative) is shown as the number it is.
        let not_after = u64::try_from(c.not_after).map_or_else(
            |_| c.not_after.to_string(),
            |s| super::format::rfc3339(s.saturating_mul(1_000_000)),
        );
        rows.push(vec![c.subject, not_after, c.expired.to_string()]);
    }
    table(&rows)
}
