//! `lwsysctl watch`: subscribe to the state and notifier topics and print
//! each event as it arrives, until the daemon closes the connection (or
//! the user interrupts, which simply ends the process).

use std::io::Write;

use lwsys_messages::protocol::{Event, Request, Topic};
use serde_json::Value;

use super::client::Connection;
use super::format::rfc3339_ms;
use super::{show, typed, Call, CtlError, Outcome};

/// The topics `watch` follows.
const TOPICS: [Topic; 2] = [Topic::State, Topic::Notifier];

/// Subscribe on `conn` and stream events to `out`.
pub(crate) fn run(
    conn: &mut Connection,
    json: bool,
    out: &mut dyn Write,
) -> Result<Outcome, CtlError> {
    let req = Call::new(&Request::Subscribe { events: TOPICS.to_vec() }, |_| String::new());
    let reply = conn.call(req.with_op())?;
    if reply.get("ok") != Some(&Value::Bool(true)) {
        return Ok(show(&reply, json, |_| String::new(), out));
    }
    while let Some(v) = conn.next_line()? {
        if v.get("event").is_none() {
            continue;
        }
        let line = if json { v.to_string() } else { event_text(&v) };
        // A reader that went away (`| head`) ends the watch quietly.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    Ok(Outcome::ok())
}

/// One event as a line of text.
pub(crate) fn event_text(v: &Value) -> String {
    match typed::<Event>(v) {
        Some(Event::State { from, to, at_us }) => {
            format!("{} state {from} -> {to}", rfc3339_ms(at_us))
        }
        Some(Event::Notifier { kind, name, reason }) => {
            let kind = serde_json::to_value(kind).unwrap_or(Value::Null);
            let mut s = format!("notifier {} {name}", kind.as_str().unwrap_or("-"));
            if let Some(r) = reason {
                s.push_str(&format!(" ({r})"));
            }
            s
        }
        _ => {
            // Other events, and ones this client does not know yet: name
            // and fields.
            let mut s = super::format::text(v, "event");
            if let Value::Object(m) = v {
                for (k, val) in m.iter().filter(|(k, _)| *k != "event") {
                    let val = val.as_str().map_or_else(|| val.to_string(), str::to_owned);
                    s.push_str(&format!(" {k}={val}"));
                }
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_read_as_one_line_each() {
        let e =
            json!({"event": "state", "from": "OPERATIONAL", "to": "POLICY_INVALID", "at_us": 0});
        assert_eq!(event_text(&e), "1970-01-01T00:00:00.000Z state OPERATIONAL -> POLICY_INVALID");
        let e =
            json!({"event": "notifier", "kind": "unregistered", "name": "n1", "reason": "closed"});
        assert_eq!(event_text(&e), "notifier unregistered n1 (closed)");
        let e = json!({"event": "clock", "kind": "synced", "offset_us": 5});
        assert_eq!(event_text(&e), "clock kind=synced offset_us=5");
    }
}
