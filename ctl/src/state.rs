//! The `state.*` commands: get, steps, jump, wait, explain and the
//! built-in cycles, with their text forms.

use lwsys_messages::protocol::{Request, WaitReply};
use lwsys_messages::state::{StateReading, SystemState};
use lwsys_messages::supervisor::{Pending, WalkReport};
use serde_json::Value;

use super::format::{num, rfc3339, rfc3339_ms, table, text, when};
use super::{typed, Call};

/// `state`: `OPERATIONAL (since 2026-11-24T16:00:00Z)`.
pub(crate) fn get() -> Call {
    Call::new(&Request::StateGet {}, |r| match typed::<StateReading>(r) {
        Some(s) => format!("{} (since {})", s.state, rfc3339(s.since_us)),
        None => String::new(),
    })
}

/// `steps` / `jump` and the built-in cycles, all answered as a walk.
pub(crate) fn walk(req: Request) -> Call {
    Call::new(&req, walk_text)
}

/// `wait STATE [--timeout-ms N]`.
pub(crate) fn wait(state: SystemState, timeout_ms: Option<u64>) -> Call {
    Call::new(&Request::StateWait { state, timeout_ms }, |r| {
        typed::<WaitReply>(r).map_or_else(String::new, |w| w.state.to_string())
    })
}

/// `explain`.
pub(crate) fn explain() -> Call {
    Call::new(&Request::StateExplain {}, explain_text)
}

/// A settled walk: where it is, and who holds it if it stopped short.
pub(crate) fn walk_text(r: &Value) -> String {
    let Some(w) = typed::<WalkReport>(r) else { return text(r, "state") };
    match &w.pending {
        Some(p) => format!("{} (held: {})", w.state, held_text(p)),
        None if w.reached => w.state.to_string(),
        None => format!("{} (target not reached)", w.state),
    }
}

fn held_text(p: &Pending) -> String {
    format!("{} deferred {} since {}: {}", p.by, p.target, rfc3339(p.since_us), p.reason)
}

fn pending_text(p: &Value) -> String {
    format!(
        "{} deferred {} since {}: {}",
        text(p, "by"),
        text(p, "target"),
        when(p, "since_us"),
        text(p, "reason")
    )
}

/// How many consent rounds `explain` shows.
const ROUNDS: usize = 10;

fn explain_text(r: &Value) -> String {
    let mut s = format!("state {} since {}\n", text(r, "state"), when(r, "since_us"));
    match r.get("pending") {
        Some(p) if p.is_object() => s.push_str(&format!("walk held: {}\n", pending_text(p))),
        _ => s.push_str("no walk is held\n"),
    }
    let parked = r.get("parked").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    for p in parked.iter().skip(1) {
        s.push_str(&format!("also parked: {}\n", pending_text(p)));
    }
    let journal = r.get("journal").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    if journal.is_empty() {
        s.push_str("no consent rounds yet\n");
        return s;
    }
    let first = journal.len().saturating_sub(ROUNDS);
    s.push_str(&format!("last {} consent round(s):\n", journal.len() - first));
    let mut rows = vec![vec![
        "AT".to_owned(),
        "TRANSITION".to_owned(),
        "OUTCOME".to_owned(),
        "VERDICTS".to_owned(),
    ]];
    for e in journal.iter().skip(first) {
        rows.push(vec![
            rfc3339_ms(num(e, "at_us")),
            format!("{} -> {}", text(e, "current"), text(e, "target")),
            outcome_text(e),
            verdicts_text(e),
        ]);
    }
    s.push_str(&table(&rows));
    s
}

fn outcome_text(e: &Value) -> String {
    let outcome = text(e, "outcome");
    match e.get("by").and_then(Value::as_str) {
        Some(by) => format!("{outcome} by {by}"),
        None => outcome,
    }
}

/// `name verdict [reason] latency` for each notifier asked, in order.
fn verdicts_text(e: &Value) -> String {
    let list = e.get("verdicts").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let mut parts: Vec<String> = list
        .iter()
        .map(|v| {
            let mut p = format!("{} {}", text(v, "name"), text(v, "verdict"));
            if let Some(reason) = v.get("reason").and_then(Value::as_str) {
                p.push_str(&format!(" {reason:?}"));
            }
            match v.get("latency_us").and_then(Value::as_u64) {
                Some(us) => p.push_str(&format!(" {us}us")),
                None => p.push_str(" inline"),
            }
            p
        })
        .collect();
    let inline_ns = num(e, "inline_ns");
    if inline_ns > 0 {
        parts.push(format!("(inline {inline_ns}ns)"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_held_walk_names_who_holds_it() {
        let r = json!({"ok": true, "state": "CPD_PRE_TIME", "reached": false,
            "pending": {"by": "n1", "reason": "ntp", "target": "TIME_VALID", "since_us": 0}});
        assert_eq!(
            walk_text(&r),
            "CPD_PRE_TIME (held: n1 deferred TIME_VALID since 1970-01-01T00:00:00Z: ntp)"
        );
        let r = json!({"ok": true, "state": "OPERATIONAL", "reached": true, "pending": null});
        assert_eq!(walk_text(&r), "OPERATIONAL");
    }

    #[test]
    fn explain_lists_rounds_with_verdicts_and_latency() {
        let r = json!({"ok": true, "state": "CPD_PRE_TIME", "since_us": 0, "pending": null,
            "parked": [], "journal": [{"at_us": 0, "current": "CPD_PRE_TIME",
            "target": "TIME_VALID", "verdicts": [{"name": "clock", "verdict": "allow",
            "latency_us": 48}, {"name": "n1", "verdict": "defer", "reason": "ntp",
            "latency_us": 288}], "inline_ns": 0, "outcome": "deferred", "by": "n1",
            "reason": "ntp"}]});
        let t = explain_text(&r);
        assert!(t.contains("no walk is held"), "{t}");
        assert!(t.contains("CPD_PRE_TIME -> TIME_VALID  deferred by n1"), "{t}");
        assert!(t.contains("clock allow 48us, n1 defer \"ntp\" 288us"), "{t}");
    }
}
