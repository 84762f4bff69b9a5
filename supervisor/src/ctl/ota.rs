//! The `ota.*` commands: update status, a forced check, and reporting
//! whether the running firmware is good.

use clap::Subcommand;
use serde_json::{json, Value};

use super::format::{table, text};
use super::Call;

/// `lwsysctl ota ...`
#[derive(Debug, Subcommand)]
pub enum OtaCommand {
    /// Phase, progress and the A/B slots (ota.status).
    Status,
    /// Check for an update now (ota.check).
    Check,
    /// Confirm the running firmware, or with --bad reject it and roll back
    /// (ota.report_current).
    ReportCurrent {
        /// The running firmware is bad.
        #[arg(long)]
        bad: bool,
    },
}

/// The request for `c`.
pub(crate) fn call(c: OtaCommand) -> Call {
    match c {
        OtaCommand::Status => Call::new("ota.status", json!({}), status),
        OtaCommand::Check => Call::new("ota.check", json!({}), |_| "check started".into()),
        OtaCommand::ReportCurrent { bad } => {
            Call::new("ota.report_current", json!({"bad": bad}), status)
        }
    }
}

fn status(r: &Value) -> String {
    if r.get("phase").is_none() {
        return String::new();
    }
    let mut s = format!(
        "phase {} {}% ({} bytes), next boot slot {}\n",
        text(r, "phase"),
        text(r, "percent"),
        text(r, "bytes"),
        text(r, "selected")
    );
    let slots = r.get("slots").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    if !slots.is_empty() {
        let mut rows = vec![vec!["SLOT".to_owned(), "STATUS".to_owned(), "UNIXTIME".to_owned()]];
        rows.extend(
            slots.iter().map(|x| vec![text(x, "name"), text(x, "status"), text(x, "unixtime")]),
        );
        s.push_str(&table(&rows));
    }
    for key in ["last_error", "last_rollback_reason"] {
        if let Some(v) = r.get(key).and_then(Value::as_str) {
            s.push_str(&format!("{key}: {v}\n"));
        }
    }
    s
}
