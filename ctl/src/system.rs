//! The `system.*` commands (info, notifiers, shutdown, reboot) and `raw`.

use std::io::Write;
use std::path::Path;

use lwsys_messages::protocol::Request;
use serde_json::Value;

use super::client::Connection;
use super::format::{table, text};
use super::state::walk_text;
use super::{Call, CtlError, Outcome, EXIT_ERROR_REPLY};

/// `info`: the known fields first, then whatever else the daemon reports.
pub(crate) fn info() -> Call {
    Call::new(&Request::SystemInfo {}, |r| {
        let mut s = format!(
            "lwsysd {} (protocol {}), pid {}\nstate {}\n",
            text(r, "version"),
            text(r, "protocol"),
            text(r, "pid"),
            text(r, "state")
        );
        s.push_str(&format!("notifiers: {}\n", notifier_list(r)));
        const SHOWN: [&str; 7] = ["id", "ok", "version", "protocol", "pid", "state", "notifiers"];
        if let Value::Object(m) = r {
            for (k, v) in m.iter().filter(|(k, _)| !SHOWN.contains(&k.as_str())) {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                s.push_str(&format!("{k}: {v}\n"));
            }
        }
        s
    })
}

fn notifiers(r: &Value) -> &[Value] {
    r.get("notifiers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn notifier_list(r: &Value) -> String {
    let list = notifiers(r);
    if list.is_empty() {
        return "none".into();
    }
    let names: Vec<String> =
        list.iter().map(|n| format!("{} ({})", text(n, "name"), text(n, "kind"))).collect();
    names.join(", ")
}

/// `notifiers`: a table of the registry, in consent order.
pub(crate) fn notifiers_call() -> Call {
    Call::new(&Request::SystemInfo {}, |r| {
        let list = notifiers(r);
        if list.is_empty() {
            return "no notifiers\n".into();
        }
        let mut rows = vec![vec!["NAME".to_owned(), "KIND".to_owned()]];
        rows.extend(list.iter().map(|n| vec![text(n, "name"), text(n, "kind")]));
        table(&rows)
    })
}

/// `shutdown`: answered once CONTEXT_DESTROYING is committed.
pub(crate) fn shutdown() -> Call {
    Call::new(&Request::SystemShutdown {}, walk_text)
}

/// `reboot`.
pub(crate) fn reboot() -> Call {
    Call::new(&Request::SystemReboot {}, |r| match r.get("state") {
        Some(_) => format!("rebooting ({})", walk_text(r)),
        None => "rebooting".into(),
    })
}

/// `raw JSON`: the line as given (plus an id if it has none); the reply
/// printed as JSON whatever `--json` says.
pub(crate) fn raw(socket: &Path, line: &str, out: &mut dyn Write) -> Result<Outcome, CtlError> {
    let req = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(CtlError::Usage("raw: the request must be a JSON object".into())),
        Err(e) => return Err(CtlError::Usage(format!("raw: not JSON: {e}"))),
    };
    let mut conn = Connection::open(socket)?;
    let reply = conn.call(req)?;
    let _ = writeln!(out, "{reply}");
    if reply.get("ok") == Some(&Value::Bool(true)) {
        Ok(Outcome::ok())
    } else {
        let e = reply.get("error").cloned().unwrap_or(Value::Null);
        let line = format!("error: {}: {}", text(&e, "code"), text(&e, "message"));
        Ok(Outcome::fail(EXIT_ERROR_REPLY, line))
    }
}
