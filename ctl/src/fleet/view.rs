//! What `lwsysctl fleet` knows about each device, built from the retained
//! messages under the prefix, and how it is shown: the status table, the
//! `explain` grouping (who holds how many devices, and why), JSON.
//!
//! Everything here is pure and linear in the number of messages, so
//! `explain` over thousands of devices is a hash map pass and one sort of
//! the (few) groups.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use crate::format::{rfc3339, table};

/// The fleet's state name for a device whose walk is complete.
pub const OPERATIONAL: &str = "OPERATIONAL";

/// At most this many devices are tracked: past it new ids are dropped and
/// counted, so a broker with a runaway topic tree cannot exhaust memory.
pub const MAX_DEVICES: usize = 200_000;

/// Who holds a device's walk, from the `pending` object of its state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// The notifier holding it.
    pub by: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// The state the walk wants to reach.
    pub target: Option<String>,
    /// Since when (Unix µs).
    pub since_us: Option<u64>,
}

/// One device, as far as the broker's retained messages say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    /// The fleet id (the topic level after the prefix).
    pub id: String,
    /// `online` or `lost` (the last will), as published.
    pub status: Option<String>,
    /// The system state's name.
    pub state: Option<String>,
    /// When that state was entered (Unix µs).
    pub since_us: Option<u64>,
    /// Who holds the walk, when it is parked.
    pub pending: Option<Pending>,
    /// The firmware version, from the info topic.
    pub version: Option<String>,
}

impl Device {
    /// The broker says the device is gone (its last will fired).
    pub fn lost(&self) -> bool {
        self.status.as_deref() == Some("lost")
    }

    /// The device as one JSON object (the `--json` row).
    pub fn to_json(&self) -> Value {
        let pending = self.pending.as_ref().map(
            |p| json!({"by": p.by, "reason": p.reason, "target": p.target, "since_us": p.since_us}),
        );
        json!({
            "device": self.id,
            "status": self.status,
            "state": self.state,
            "since_us": self.since_us,
            "pending": pending,
            "version": self.version,
        })
    }
}

/// Which of a device's topics a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `<prefix>/<device>/status`.
    Status,
    /// `<prefix>/<device>/state`.
    State,
    /// `<prefix>/<device>/info`.
    Info,
}

/// The devices seen so far, by id.
#[derive(Debug, Default)]
pub struct Fleet {
    devices: HashMap<String, Device>,
    /// Messages dropped because [`MAX_DEVICES`] was reached.
    pub dropped: usize,
    /// Payloads that were not what the topic layout says (bad JSON,
    /// unknown status word): counted, and the device keeps what it had.
    pub malformed: usize,
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

impl Fleet {
    /// Take one retained message for `device`. An empty payload is a
    /// cleared retained message: that part of the device is forgotten.
    pub fn apply(&mut self, device: &str, kind: Kind, payload: &[u8]) {
        if !self.devices.contains_key(device) && self.devices.len() >= MAX_DEVICES {
            self.dropped += 1;
            return;
        }
        let d = self
            .devices
            .entry(device.to_owned())
            .or_insert_with(|| Device { id: device.to_owned(), ..Device::default() });
        let ok = match kind {
            Kind::Status => match std::str::from_utf8(payload).map(str::trim) {
                Ok("") => {
                    d.status = None;
                    true
                }
                Ok(s @ ("online" | "lost")) => {
                    d.status = Some(s.to_owned());
                    true
                }
                _ => false,
            },
            Kind::State if payload.is_empty() => {
                (d.state, d.since_us, d.pending) = (None, None, None);
                true
            }
            Kind::State => match serde_json::from_slice::<Value>(payload) {
                Ok(v) if v.get("state").is_some_and(Value::is_string) => {
                    d.state = str_field(&v, "state");
                    d.since_us = v.get("since_us").and_then(Value::as_u64);
                    d.pending = v.get("pending").filter(|p| p.is_object()).map(|p| Pending {
                        by: str_field(p, "by"),
                        reason: str_field(p, "reason"),
                        target: str_field(p, "target"),
                        since_us: p.get("since_us").and_then(Value::as_u64),
                    });
                    true
                }
                _ => false,
            },
            Kind::Info if payload.is_empty() => {
                d.version = None;
                true
            }
            Kind::Info => match serde_json::from_slice::<Value>(payload) {
                Ok(v) if v.is_object() => {
                    d.version = str_field(&v, "version");
                    true
                }
                _ => false,
            },
        };
        if !ok {
            self.malformed += 1;
        }
    }

    /// The devices, sorted by id.
    pub fn devices(&self) -> Vec<&Device> {
        let mut v: Vec<&Device> = self.devices.values().collect();
        v.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// How many devices are known.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// No device seen.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

/// Terminal control characters from the broker are shown escaped, so a
/// device id or reason cannot rewrite the operator's screen.
pub fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

fn or_dash(s: Option<&str>) -> String {
    s.map(clean).unwrap_or_else(|| "-".to_owned())
}

/// The `fleet status` table: one row per device.
pub fn status_table(devices: &[&Device]) -> String {
    let header = ["DEVICE", "STATUS", "STATE", "SINCE", "HELD BY", "REASON", "VERSION"];
    let rows: Vec<Vec<String>> = std::iter::once(header.map(str::to_owned).to_vec())
        .chain(devices.iter().map(|d| {
            let p = d.pending.as_ref();
            vec![
                clean(&d.id),
                or_dash(d.status.as_deref()),
                or_dash(d.state.as_deref()),
                d.since_us.map(rfc3339).unwrap_or_else(|| "-".into()),
                or_dash(p.and_then(|p| p.by.as_deref())),
                or_dash(p.and_then(|p| p.reason.as_deref())),
                or_dash(d.version.as_deref()),
            ]
        }))
        .collect();
    table(&rows)
}

/// One `explain` group: the devices not OPERATIONAL for the same cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The devices are lost (last will), whatever their last state.
    pub lost: bool,
    /// The notifier holding them (none: not parked, or no state yet).
    pub by: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// The devices, sorted.
    pub devices: Vec<String>,
}

/// Devices not OPERATIONAL, grouped by (held by, reason); lost devices form
/// their own group. Largest group first, ties in a stable order.
pub fn explain(devices: &[&Device]) -> Vec<Group> {
    let mut groups: BTreeMap<(bool, Option<String>, Option<String>), Vec<String>> = BTreeMap::new();
    for d in devices {
        let key = if d.lost() {
            (true, None, None)
        } else if d.state.as_deref() == Some(OPERATIONAL) {
            continue;
        } else {
            match &d.pending {
                Some(p) => (false, p.by.clone(), p.reason.clone()),
                None if d.state.is_none() => (false, None, Some("no state published".into())),
                None => (false, None, None),
            }
        };
        groups.entry(key).or_default().push(d.id.clone());
    }
    let mut out: Vec<Group> = groups
        .into_iter()
        .map(|((lost, by, reason), mut devices)| {
            devices.sort_unstable();
            Group { lost, by, reason, devices }
        })
        .collect();
    // Stable: equal counts keep the BTreeMap's key order.
    out.sort_by_key(|g| std::cmp::Reverse(g.devices.len()));
    out
}

/// How many device names a human `explain` line lists before "+N more".
const NAMES_SHOWN: usize = 5;

/// `explain` for a person.
pub fn explain_text(total: usize, groups: &[Group]) -> String {
    let held: usize = groups.iter().map(|g| g.devices.len()).sum();
    let mut s = format!("{held} of {total} devices not OPERATIONAL\n");
    for g in groups {
        let what = if g.lost {
            "lost (last will: the broker lost the device)".to_owned()
        } else {
            match (&g.by, &g.reason) {
                (Some(by), Some(r)) => format!("held by {}: {}", clean(by), clean(r)),
                (Some(by), None) => format!("held by {}", clean(by)),
                (None, Some(r)) => clean(r),
                (None, None) => "not held (walk stopped or in progress)".to_owned(),
            }
        };
        let mut names: Vec<String> = g.devices.iter().take(NAMES_SHOWN).map(|d| clean(d)).collect();
        if g.devices.len() > NAMES_SHOWN {
            names.push(format!("+{} more", g.devices.len() - NAMES_SHOWN));
        }
        s.push_str(&format!("{:>6}  {what}  ({})\n", g.devices.len(), names.join(", ")));
    }
    s
}

/// `explain --json`: totals and the groups.
pub fn explain_json(total: usize, groups: &[Group]) -> Value {
    let held: usize = groups.iter().map(|g| g.devices.len()).sum();
    let groups: Vec<Value> = groups
        .iter()
        .map(|g| {
            json!({"lost": g.lost, "by": g.by, "reason": g.reason,
                   "count": g.devices.len(), "devices": g.devices})
        })
        .collect();
    json!({"total": total, "not_operational": held, "groups": groups})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(s: &str, pending: Option<(&str, &str)>) -> Vec<u8> {
        let p = pending.map(|(by, reason)| {
            json!({"by": by, "reason": reason, "target": "OPERATIONAL", "since_us": 5})
        });
        json!({"state": s, "since_us": 1_764_000_000_000_000u64, "pending": p})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn explain_over_1000_devices_groups_by_holder_and_reason_largest_first() {
        let mut f = Fleet::default();
        for i in 0..1000 {
            let id = format!("dev-{i:04}");
            f.apply(&id, Kind::Status, b"online");
            let payload = match i % 100 {
                0..=19 => state("REGISTERED", Some(("fleet", "broker unreachable"))),
                20..=24 => state("TIME_VALID", Some(("sntp", "no answer"))),
                25 => state("DHCP", None),
                _ => state(OPERATIONAL, None),
            };
            f.apply(&id, Kind::State, &payload);
        }
        // Ten lost devices: lost wins over their last state.
        for i in 990..1000 {
            f.apply(&format!("dev-{i:04}"), Kind::Status, b"lost");
        }
        let devices = f.devices();
        assert_eq!(devices.len(), 1000);
        let g = explain(&devices);
        let summary: Vec<(bool, Option<&str>, usize)> =
            g.iter().map(|g| (g.lost, g.by.as_deref(), g.devices.len())).collect();
        // 200 held by fleet, 50 by sntp, 10 in DHCP not held, 10 lost.
        assert_eq!(
            summary,
            [
                (false, Some("fleet"), 200),
                (false, Some("sntp"), 50),
                (false, None, 10),
                (true, None, 10)
            ]
        );
        assert_eq!(g[0].reason.as_deref(), Some("broker unreachable"));
        let text = explain_text(devices.len(), &g);
        assert!(text.starts_with("270 of 1000 devices not OPERATIONAL\n"), "{text}");
        assert!(text.contains("   200  held by fleet: broker unreachable  (dev-0000, "), "{text}");
        assert!(text.contains("+195 more"), "{text}");
        let j = explain_json(devices.len(), &g);
        assert_eq!(j["not_operational"], 270);
        assert_eq!(j["groups"][3]["lost"], true);
    }

    #[test]
    fn a_device_with_status_but_no_state_is_its_own_group() {
        let mut f = Fleet::default();
        f.apply("a", Kind::Status, b"online");
        let g = explain(&f.devices());
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].reason.as_deref(), Some("no state published"));
    }

    #[test]
    fn bad_payloads_are_counted_and_change_nothing() {
        let mut f = Fleet::default();
        f.apply("a", Kind::State, &state("DHCP", None));
        f.apply("a", Kind::State, b"{not json");
        f.apply("a", Kind::State, br#"{"state": 7}"#);
        f.apply("a", Kind::Status, b"maybe");
        f.apply("a", Kind::Info, b"[]");
        assert_eq!(f.malformed, 4);
        assert_eq!(f.devices()[0].state.as_deref(), Some("DHCP"));
        assert_eq!(f.devices()[0].status, None);
        // An empty retained payload clears.
        f.apply("a", Kind::State, b"");
        assert_eq!(f.devices()[0].state, None);
    }

    #[test]
    fn the_status_table_has_one_row_per_device_and_escapes_control_characters() {
        let mut f = Fleet::default();
        f.apply("b", Kind::Status, b"online");
        f.apply(
            "b",
            Kind::State,
            &state("REGISTERED", Some(("fleet", "broker\x1b[2J unreachable"))),
        );
        f.apply("b", Kind::Info, br#"{"version": "1.2.3"}"#);
        f.apply("a", Kind::Status, b"lost");
        let t = status_table(&f.devices());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("DEVICE"), "{t}");
        assert!(lines[1].starts_with("a "), "sorted by id: {t}");
        assert!(lines[1].contains("lost"), "{t}");
        assert!(lines[2].contains("REGISTERED") && lines[2].contains("fleet"), "{t}");
        assert!(lines[2].contains("2025-11-24T16:00:00Z") && lines[2].contains("1.2.3"), "{t}");
        assert!(!t.contains('\x1b') && t.contains("\\u{1b}[2J"), "{t}");
        let j = f.devices()[1].to_json();
        assert_eq!(j["pending"]["by"], "fleet");
        assert_eq!(j["version"], "1.2.3");
    }

    #[test]
    fn past_the_device_bound_new_ids_are_dropped_and_counted() {
        let mut f = Fleet::default();
        for i in 0..MAX_DEVICES + 3 {
            f.apply(&i.to_string(), Kind::Status, b"online");
        }
        assert_eq!((f.len(), f.dropped), (MAX_DEVICES, 3));
    }
}
