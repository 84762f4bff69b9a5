//! `lwsysctl plot`: the consent journal (`state.explain`) drawn as an SVG
//! timeline, as `systemd-analyze plot` draws a boot. One group of rows per
//! state the walk went for: a header row (the state, when it was entered
//! relative to the first round, and the span from the first ask to the
//! commit), then a row per notifier asked with a bar for the time its
//! consent took, its deferrals (with their reasons) and denials.
//!
//! The SVG is written by hand: it is plain text, and every string that
//! came from a client (notifier names, reasons) goes through `esc`,
//! because a name like `</text><script>` must stay a name.

use std::collections::HashMap;

use lwsys_messages::protocol::Request;
use lwsys_messages::state::{JournalEntry, RoundOutcome, SystemState, Verdict};
use serde_json::Value;

use super::Call;

mod draw;

/// `plot`: ask for the journal, print it as SVG (`--json` prints the
/// reply as is).
pub(crate) fn call() -> Call {
    Call::new(&Request::StateExplain {}, |r| render_svg(r, Some(now_us())))
}

fn now_us() -> u64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The journal as an SVG document. `reply` is a `state.explain` reply;
/// `now_us` ends deferrals that still hold the walk (without it they end
/// at the last thing the journal knows). Entries that do not parse are
/// skipped and counted on the page.
pub(crate) fn render_svg(reply: &Value, now_us: Option<u64>) -> String {
    let list = reply.get("journal").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let rounds: Vec<JournalEntry> =
        list.iter().filter_map(|e| serde_json::from_value(e.clone()).ok()).collect();
    let skipped = list.len() - rounds.len();
    let pending = reply.get("parked").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let held: Vec<(String, String)> = pending
        .iter()
        .map(|p| (field(p, "target"), field(p, "by")))
        .chain(
            reply
                .get("pending")
                .filter(|p| p.is_object())
                .map(|p| (field(p, "target"), field(p, "by"))),
        )
        .collect();
    let since_us = reply.get("since_us").and_then(Value::as_u64);
    let model = Model::build(&rounds, &held, since_us, now_us);
    model.svg(&field(reply, "state"), skipped)
}

fn field(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// What one notifier did in one group: consent bars, inline marks,
/// deferrals and denials, in time order.
#[derive(Debug, Default)]
struct Lane {
    name: String,
    inline: bool,
    marks: Vec<Mark>,
}

#[derive(Debug)]
enum Mark {
    /// An actor notifier's consent, `[start, end)` in Unix µs.
    Consent { start: u64, end: u64, verdict: &'static str },
    /// An inline notifier's answer (no time of its own).
    Inline { at: u64 },
    /// The walk held by this notifier from `start` to `end`.
    Deferred { start: u64, end: u64, reason: String, open: bool },
    /// A denial at `at`.
    Denied { at: u64, reason: String },
}

/// The rounds that went for one target, until it was entered or given up.
#[derive(Debug)]
struct Group {
    target: SystemState,
    /// When the first round for it started (`None`: the state the journal
    /// starts in, entered before it).
    first_at: Option<u64>,
    entered: Option<u64>,
    /// When a denial ended it.
    denied_at: Option<u64>,
    status: &'static str,
    lanes: Vec<Lane>,
    /// Rounds in the group, to end deferrals at the next one.
    round_starts: Vec<u64>,
}

struct Model {
    groups: Vec<Group>,
    t0: u64,
    t_end: u64,
    /// Per notifier: consent time and deferred time, in µs.
    held: HashMap<String, (u64, u64)>,
    longest: Option<String>,
}

impl Model {
    fn build(
        rounds: &[JournalEntry],
        held: &[(String, String)],
        since_us: Option<u64>,
        now_us: Option<u64>,
    ) -> Self {
        let mut groups: Vec<Group> = Vec::new();
        if let Some(first) = rounds.first() {
            groups.push(Group {
                target: first.current,
                first_at: None,
                entered: None,
                denied_at: None,
                status: "start",
                lanes: Vec::new(),
                round_starts: Vec::new(),
            });
        }
        // A health round (current == target) moves the system nowhere: it
        // is not a step of the timeline.
        for e in rounds.iter().filter(|e| e.current != e.target) {
            // A round for a target whose walk is still open continues it
            // (a resumed walk asks again).
            let gi = match groups.iter().rposition(|g| g.target == e.target && g.status == "open") {
                Some(i) => i,
                None => {
                    groups.push(Group {
                        target: e.target,
                        first_at: Some(e.at_us),
                        entered: None,
                        denied_at: None,
                        status: "open",
                        lanes: Vec::new(),
                        round_starts: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
            let Some(g) = groups.get_mut(gi) else { continue };
            g.round_starts.push(e.at_us);
            let mut t = e.at_us;
            for v in &e.verdicts {
                let li = match g.lanes.iter().position(|l| l.name == *v.name) {
                    Some(i) => i,
                    None => {
                        g.lanes.push(Lane { name: v.name.to_string(), ..Lane::default() });
                        g.lanes.len() - 1
                    }
                };
                let Some(lane) = g.lanes.get_mut(li) else { continue };
                let verdict = match &v.verdict {
                    Verdict::Allow => "allow",
                    Verdict::Defer { .. } => "defer",
                    Verdict::Deny { .. } => "deny",
                };
                match v.latency_us {
                    Some(l) => {
                        lane.marks.push(Mark::Consent { start: t, end: t + l, verdict });
                        t += l;
                    }
                    None => {
                        lane.inline = true;
                        lane.marks.push(Mark::Inline { at: t });
                    }
                }
                match &v.verdict {
                    // Ended below, once the next round is known.
                    Verdict::Defer { reason } => lane.marks.push(Mark::Deferred {
                        start: t,
                        end: t,
                        reason: reason.clone(),
                        open: true,
                    }),
                    Verdict::Deny { reason } => {
                        lane.marks.push(Mark::Denied { at: t, reason: reason.clone() })
                    }
                    Verdict::Allow => {}
                }
            }
            let done = t + e.inline_ns / 1000;
            match &e.outcome {
                RoundOutcome::Committed => (g.entered, g.status) = (Some(done), "entered"),
                RoundOutcome::Forced => (g.entered, g.status) = (Some(done), "forced"),
                RoundOutcome::Denied { .. } => (g.denied_at, g.status) = (Some(done), "denied"),
                RoundOutcome::Deferred { .. } => {}
            }
        }
        let mut t_end = rounds.iter().map(|e| e.at_us).max().unwrap_or(0);
        for g in &groups {
            for l in &g.lanes {
                for m in &l.marks {
                    if let Mark::Consent { end, .. } = m {
                        t_end = t_end.max(*end);
                    }
                }
            }
            t_end = t_end.max(g.entered.unwrap_or(0));
        }
        let t0 = rounds.first().map_or(0, |e| e.at_us);
        if let Some(s) = since_us.filter(|s| *s >= t0) {
            t_end = t_end.max(s);
        }
        let still_held = groups.iter().any(|g| g.status == "open");
        if let Some(now) = now_us.filter(|n| still_held && *n > t_end) {
            t_end = now;
        }
        // The last group entered is the current state: its time is exact.
        if let (Some(s), Some(g)) =
            (since_us, groups.iter_mut().rev().find(|g| g.entered.is_some()))
        {
            if s >= t0 && g.entered.is_some_and(|e| e <= s) {
                g.entered = Some(s);
            }
        }
        let all_starts: Vec<u64> = rounds.iter().map(|e| e.at_us).collect();
        for g in &mut groups {
            if g.status == "open" {
                let by_held = held.iter().any(|(t, _)| t == g.target.name());
                g.status = if by_held { "held" } else { "not reached" };
            }
            let (starts, status) = (g.round_starts.clone(), g.status);
            for l in &mut g.lanes {
                for m in &mut l.marks {
                    if let Mark::Deferred { start, end, open, .. } = m {
                        // Held until the next round for the same target;
                        // else, if still parked, until now; else until the
                        // next round of any walk.
                        let next = starts.iter().find(|s| **s >= *start).copied();
                        let any = all_starts.iter().find(|s| **s >= *start).copied();
                        (*end, *open) = match (next, status) {
                            (Some(n), _) => (n, false),
                            (None, "held") => (t_end, true),
                            (None, _) => (any.unwrap_or(t_end), false),
                        };
                    }
                }
            }
        }
        let mut held_by: HashMap<String, (u64, u64)> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        for l in groups.iter().flat_map(|g| &g.lanes) {
            if !held_by.contains_key(&l.name) {
                order.push(l.name.clone());
            }
            let h = held_by.entry(l.name.clone()).or_default();
            for m in &l.marks {
                match m {
                    Mark::Consent { start, end, .. } => h.0 += end - start,
                    Mark::Deferred { start, end, .. } => h.1 += end.saturating_sub(*start),
                    _ => {}
                }
            }
        }
        let mut longest: Option<(String, u64)> = None;
        for name in order {
            let total = held_by.get(&name).map_or(0, |(c, d)| c + d);
            if total > 0 && longest.as_ref().is_none_or(|(_, best)| total > *best) {
                longest = Some((name, total));
            }
        }
        Self { groups, t0, t_end, held: held_by, longest: longest.map(|(n, _)| n) }
    }
}

/// µs as milliseconds, with fewer decimals as the number grows.
fn ms(us: u64) -> String {
    let v = us as f64 / 1000.0;
    if us == 0 {
        "0 ms".to_owned()
    } else if v >= 10_000.0 {
        format!("{:.1} s", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

/// At most `n` characters of `s`, with an ellipsis when cut.
fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// `s` clipped to `n` characters, safe as XML text or attribute value:
/// markup characters escaped, and characters XML 1.0 forbids (controls,
/// U+FFFE/U+FFFF) replaced, since a client may send any of them.
fn esc(s: &str, n: usize) -> String {
    let mut out = String::with_capacity(s.len());
    for c in clip(s, n).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round(at: u64, cur: &str, tgt: &str, verdicts: Value, outcome: Value) -> Value {
        let mut e = json!({"at_us": at, "current": cur, "target": tgt, "verdicts": verdicts, "inline_ns": 0});
        for (k, v) in outcome.as_object().unwrap() {
            e[k] = v.clone();
        }
        e
    }

    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.to_owned()))
            .collect()
    }

    #[test]
    fn an_empty_journal_is_still_a_document() {
        let svg = render_svg(&json!({"ok": true, "state": "CONTEXT_CREATED", "journal": []}), None);
        assert!(svg.starts_with("<?xml"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(svg.contains("no consent rounds yet"), "{svg}");
        assert!(svg.contains("viewBox=\"0 0 "), "{svg}");
    }

    #[test]
    fn a_deferral_is_drawn_until_the_resumed_round_and_its_notifier_held_longest() {
        let r = json!({"ok": true, "state": "TIME_VALID", "since_us": 1_500_400, "pending": null,
            "parked": [], "journal": [
            round(1_000_000, "CPD_PRE_TIME", "TIME_VALID", json!([
                {"name": "clock", "verdict": "allow", "latency_us": 50},
                {"name": "ntp", "verdict": "defer", "reason": "waiting ntp", "latency_us": 200}]),
                json!({"outcome": "deferred", "by": "ntp", "reason": "waiting ntp"})),
            round(1_500_000, "CPD_PRE_TIME", "TIME_VALID", json!([
                {"name": "clock", "verdict": "allow", "latency_us": 50},
                {"name": "ntp", "verdict": "allow", "latency_us": 300}]),
                json!({"outcome": "committed"}))]});
        let svg = render_svg(&r, None);
        let t = texts(&svg);
        for want in ["CPD_PRE_TIME", "TIME_VALID", "clock", "ntp", "deferred: waiting ntp"] {
            assert!(t.iter().any(|x| x == want), "{want} missing from {t:?}");
        }
        // Entered at since_us: 500.4 ms after the first round.
        assert!(t.iter().any(|x| x == "+500 ms"), "{t:?}");
        // Deferred from 1_000_250 to the next round at 1_500_000.
        assert!(svg.contains("ntp deferred for 500 ms: waiting ntp"), "{svg}");
        assert!(svg.contains("<text class=\"notifier longest\" x=\"26\" y=\""), "{svg}");
        assert!(svg.contains("id=\"longest\">ntp</tspan>"), "{svg}");
    }

    #[test]
    fn a_walk_still_held_runs_to_now_and_a_denial_is_marked() {
        let r = json!({"ok": true, "state": "DHCP", "since_us": 1_000_100,
            "pending": {"by": "net", "reason": "no link", "target": "CPD_PRE_TIME", "since_us": 2_000_000},
            "parked": [{"by": "net", "reason": "no link", "target": "CPD_PRE_TIME", "since_us": 2_000_000}],
            "journal": [
            round(1_000_000, "IFACE_COLDPLUG", "DHCP", json!([{"name": "gate", "verdict": "allow", "latency_us": null}]),
                json!({"outcome": "committed"})),
            round(1_500_000, "DHCP", "OPERATIONAL", json!([{"name": "gate", "verdict": "deny", "reason": "busy", "latency_us": null}]),
                json!({"outcome": "denied", "by": "gate", "reason": "busy"})),
            round(2_000_000, "DHCP", "CPD_PRE_TIME", json!([{"name": "net", "verdict": "defer", "reason": "no link", "latency_us": 10}]),
                json!({"outcome": "deferred", "by": "net", "reason": "no link"}))]});
        let svg = render_svg(&r, Some(3_000_000));
        let t = texts(&svg);
        assert!(t.iter().any(|x| x == "denied: busy"), "{t:?}");
        assert!(t.iter().any(|x| x == "held"), "{t:?}");
        assert!(t.iter().any(|x| x == "denied"), "{t:?}");
        assert!(t.iter().any(|x| x == "inline"), "{t:?}");
        assert!(svg.contains("net deferred for 1000 ms (still held): no link"), "{svg}");
        assert!(svg.contains("id=\"longest\">net</tspan>"), "{svg}");
    }

    #[test]
    fn client_strings_are_escaped_and_forbidden_characters_replaced() {
        let evil = "</text><script>alert(1)</script>&\"'\u{1}";
        let r = json!({"ok": true, "state": "<b>", "journal": [
            round(10, "CONTEXT_CREATED", "INITIALIZED", json!([
                {"name": evil, "verdict": "deny", "reason": evil, "latency_us": 5}]),
                json!({"outcome": "denied", "by": evil, "reason": evil}))]});
        let svg = render_svg(&r, None);
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(!svg.contains("<b>"), "{svg}");
        assert!(!svg.contains('\u{1}'), "{svg}");
        assert!(svg.contains(
            "&lt;/text&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&apos;\u{FFFD}"
        ));
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }

    #[test]
    fn long_names_are_clipped_on_char_boundaries() {
        let long = "é".repeat(100);
        assert_eq!(clip(&long, 3), "ééé…");
        assert_eq!(esc("a<b", 2), "a&lt;…");
        assert_eq!(ms(250), "0.25 ms");
        assert_eq!(ms(12_345_678), "12.3 s");
    }

    #[test]
    fn unreadable_entries_are_skipped_and_counted() {
        let r = json!({"ok": true, "state": "DHCP", "journal": [{"at_us": "soon"}]});
        let svg = render_svg(&r, None);
        assert!(svg.contains("1 journal entries unreadable"), "{svg}");
    }
}
