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

use lwsys_messages::fleet::{InfoPayload, LinkStatus, StatePayload, Topic};
use lwsys_messages::state::SystemState;

/// At most this many devices are tracked: past it new ids are dropped and
/// counted, so a broker with a runaway topic tree cannot exhaust memory.
pub const MAX_DEVICES: usize = 200_000;

/// One device, as far as the broker's retained messages say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The fleet id (the topic level after the prefix).
    pub id: String,
    /// `online`, or `lost` (the last will).
    pub status: Option<LinkStatus>,
    /// The retained `state`: state, since, who holds the walk.
    pub state: Option<StatePayload>,
    /// The retained `info`: version and variant.
    pub info: Option<InfoPayload>,
}

impl Device {
    fn new(id: &str) -> Self {
        Self { id: id.to_owned(), status: None, state: None, info: None }
    }

    /// The broker says the device is gone (its last will fired).
    pub fn lost(&self) -> bool {
        self.status == Some(LinkStatus::Lost)
    }

    /// The device as one JSON object (the `--json` row).
    pub fn to_json(&self) -> Value {
        let s = self.state.as_ref();
        let i = self.info.as_ref();
        json!({
            "device": self.id,
            "status": self.status.map(LinkStatus::as_str),
            "state": s.map(|s| s.state),
            "since_us": s.map(|s| s.since_us),
            "pending": s.and_then(|s| s.pending.as_ref()),
            "version": i.map(|i| &i.version),
            "variant": i.map(|i| &i.variant),
        })
    }
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

impl Fleet {
    /// The topics `apply` reads.
    pub const TOPICS: [Topic; 3] = [Topic::Status, Topic::State, Topic::Info];

    /// Take one retained message for `device`. An empty payload is a
    /// cleared retained message: that part of the device is forgotten.
    /// Other topics are ignored.
    pub fn apply(&mut self, device: &str, topic: Topic, payload: &[u8]) {
        if !Self::TOPICS.contains(&topic) {
            return;
        }
        if !self.devices.contains_key(device) && self.devices.len() >= MAX_DEVICES {
            self.dropped += 1;
            return;
        }
        let d = self.devices.entry(device.to_owned()).or_insert_with(|| Device::new(device));
        let ok = match topic {
            _ if payload.is_empty() => {
                match topic {
                    Topic::Status => d.status = None,
                    Topic::State => d.state = None,
                    _ => d.info = None,
                }
                true
            }
            Topic::Status => std::str::from_utf8(payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(|s| d.status = Some(s))
                .is_some(),
            Topic::State => serde_json::from_slice(payload).map(|s| d.state = Some(s)).is_ok(),
            _ => serde_json::from_slice(payload).map(|i| d.info = Some(i)).is_ok(),
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
            let s = d.state.as_ref();
            let p = s.and_then(|s| s.pending.as_ref());
            vec![
                clean(&d.id),
                or_dash(d.status.map(LinkStatus::as_str)),
                s.map(|s| s.state.to_string()).unwrap_or_else(|| "-".into()),
                s.map(|s| rfc3339(s.since_us)).unwrap_or_else(|| "-".into()),
                or_dash(p.map(|p| &*p.by)),
                or_dash(p.map(|p| p.reason.as_str())),
                or_dash(d.info.as_ref().map(|i| i.version.as_str())),
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
        } else {
            match &d.state {
                Some(s) if s.state == SystemState::Operational => continue,
                Some(StatePayload { pending: Some(p), .. }) => {
                    (false, Some(p.by.to_string()), Some(p.reason.clone()))
                }
                Some(_) => (false, None, None),
                None => (false, None, Some("no state published".into())),
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
            json!({"by": by, "reason": reason, "target": "OPERATIONAL", "since_us": 5u64})
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
            f.apply(&id, Topic::Status, b"online");
            let payload = match i % 100 {
                0..=19 => state("REGISTERED", Some(("fleet", "broker unreachable"))),
                20..=24 => state("TIME_VALID", Some(("sntp", "no answer"))),
                25 => state("DHCP", None),
                _ => state("OPERATIONAL", None),
            };
            f.apply(&id, Topic::State, &payload);
        }
        // Ten lost devices: lost wins over their last state.
        for i in 990..1000 {
            f.apply(&format!("dev-{i:04}"), Topic::Status, b"lost");
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
        f.apply("a", Topic::Status, b"online");
        let g = explain(&f.devices());
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].reason.as_deref(), Some("no state published"));
    }

    #[test]
    fn bad_payloads_are_counted_and_change_nothing() {
        let mut f = Fleet::default();
        f.apply("a", Topic::State, &state("DHCP", None));
        f.apply("a", Topic::State, b"{not json");
        f.apply("a", Topic::State, br#"{"state": "NOT_A_STATE", "since_us": 1, "pending": null}"#);
        f.apply("a", Topic::Status, b"maybe");
        f.apply("a", Topic::Info, b"[]");
        assert_eq!(f.malformed, 4);
        assert_eq!(f.devices()[0].state.as_ref().map(|s| s.state), Some(SystemState::Dhcp));
        assert_eq!(f.devices()[0].status, None);
        // An empty retained payload clears.
        f.apply("a", Topic::State, b"");
        assert_eq!(f.devices()[0].state, None);
    }

    #[test]
    fn the_status_table_has_one_row_per_device_and_escapes_control_characters() {
        let mut f = Fleet::default();
        f.apply("b", Topic::Status, b"online");
        f.apply(
            "b",
            Topic::State,
            &state("REGISTERED", Some(("fleet", "broker\x1b[2J unreachable"))),
        );
        f.apply(
            "b",
            Topic::Info,
            br#"{"version": "1.2.3", "variant": "v", "protocol": 1, "commands": "none"}"#,
        );
        f.apply("a", Topic::Status, b"lost");
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
            f.apply(&i.to_string(), Topic::Status, b"online");
        }
        assert_eq!((f.len(), f.dropped), (MAX_DEVICES, 3));
    }
}
