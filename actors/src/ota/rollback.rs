//! The durable rollback record ([`RollbackRecord`]) as the slot state
//! file keeps it: built for each cause, and read back from either the
//! record or the plain string older lwsysd versions wrote under the same
//! key, so an upgrade never loses (or chokes on) the last reason.

use lwsys_messages::ota::{RollbackCause, RollbackRecord};
use serde::{Deserialize, Deserializer};

/// The longest `check` or `message` kept: the check names a command line
/// or a notifier from config or a client, and the record is shown and
/// stored for ever.
pub const MAX_TEXT: usize = 512;

/// `s` cut to [`MAX_TEXT`] bytes at a character boundary.
pub fn bounded(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_owned();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", s.get(..end).unwrap_or_default())
}

/// A record of `cause` for `release` at `at_unix`, with `message` for
/// people and the `check` or `state` involved, if any.
pub fn record(
    cause: RollbackCause,
    release: u64,
    at_unix: u64,
    check: Option<&str>,
    state: Option<&str>,
    message: &str,
) -> RollbackRecord {
    RollbackRecord {
        cause,
        check: check.map(bounded),
        state: state.map(bounded),
        release_unixtime: release,
        at_unix,
        message: bounded(message),
    }
}

/// The two forms the state file may hold.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Record(RollbackRecord),
    Text(String),
}

/// Deserializes `last_rollback`: a record, or the old plain string (kept
/// as the message, cause `unknown`), or null.
pub fn string_or_record<'de, D>(d: D) -> Result<Option<RollbackRecord>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(match Option::<Stored>::deserialize(d)? {
        None => None,
        Some(Stored::Record(r)) => Some(r),
        Some(Stored::Text(message)) => {
            Some(RollbackRecord { message: bounded(&message), ..RollbackRecord::default() })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        #[serde(default, alias = "last_rollback_reason", deserialize_with = "string_or_record")]
        last_rollback: Option<RollbackRecord>,
    }

    #[test]
    fn the_old_string_form_reads_as_an_unknown_cause_with_its_message() {
        let h: Holder =
            serde_json::from_str(r#"{"last_rollback_reason": "slot b reported bad"}"#).unwrap();
        let r = h.last_rollback.unwrap();
        assert_eq!((r.cause, r.message.as_str()), (RollbackCause::Unknown, "slot b reported bad"));
        let h: Holder = serde_json::from_str(r#"{"last_rollback_reason": null}"#).unwrap();
        assert!(h.last_rollback.is_none());
        let h: Holder = serde_json::from_str("{}").unwrap();
        assert!(h.last_rollback.is_none());
    }

    #[test]
    fn a_slot_state_from_an_older_lwsysd_keeps_its_reason_and_a_confirm_clears_it() {
        use crate::ota::{OtaOps, SlotDir};
        use lwsys_messages::ota::SlotStatus;
        let dir = tempfile::tempdir().unwrap();
        let log = slog::Logger::root(slog::Discard, slog::o!());
        drop(SlotDir::open(dir.path(), &log).unwrap());
        // As an older version wrote it: a trial in b, a plain-string reason.
        let old = r#"{"version": 1, "selected": "b",
            "slots": [{"status": "good", "unixtime": 0}, {"status": "trial", "unixtime": 1000}],
            "boot_attempts": 1, "attempted_unixtime": 1000, "confirmed_unixtime": 0,
            "rolled_back_unixtime": 0, "last_rollback_reason": "slot b reported bad",
            "bootloader_slot": "b"}"#;
        std::fs::write(dir.path().join("ota/state.json"), old).unwrap();
        let mut slots = SlotDir::open(dir.path(), &log).unwrap();
        let s = slots.status();
        assert_eq!(s.last_rollback_reason.as_deref(), Some("slot b reported bad"));
        assert_eq!(s.last_rollback.as_ref().map(|r| r.cause), Some(RollbackCause::Unknown));
        // A rollback through the ops records the structured reason...
        let r = record(RollbackCause::HealthCheck, 1000, 9, Some("/bin/false"), None, "failed");
        OtaOps::roll_back(&mut slots, r.clone()).unwrap();
        assert_eq!(slots.state().last_rollback, Some(r.clone()));
        assert_eq!(slots.state().slots[1].status, SlotStatus::Bad);
        let again = SlotDir::open(dir.path(), &log).unwrap();
        assert_eq!(again.state().last_rollback, Some(r));
        // ...and a good slot is not "rolled back" by a health verdict.
        let mut slots = again;
        let e = OtaOps::roll_back(&mut slots, RollbackRecord::default()).unwrap_err();
        assert!(e.to_string().contains("not a trial"), "{e}");
        // A confirmed update clears the record.
        let mut next = slots.state().clone();
        next.selected = "b".into();
        next.slots[1].status = SlotStatus::Trial;
        std::fs::write(dir.path().join("ota/state.json"), serde_json::to_vec(&next).unwrap())
            .unwrap();
        let mut slots = SlotDir::open(dir.path(), &log).unwrap();
        slots.confirm().unwrap();
        assert_eq!(slots.state().last_rollback, None);
        assert!(slots.status().last_rollback_reason.is_none());
    }

    #[test]
    fn a_record_round_trips_and_long_texts_are_bounded() {
        let long = "x".repeat(5000);
        let r = record(RollbackCause::HealthCheck, 1000, 7, Some(&long), None, "failed");
        assert_eq!(r.check.as_ref().map(String::len), Some(MAX_TEXT + 3));
        let j = serde_json::json!({ "last_rollback": r });
        let h: Holder = serde_json::from_value(j).unwrap();
        assert_eq!(h.last_rollback, Some(r));
        assert_eq!(bounded("é".repeat(400).as_str()).len(), 512 + 3);
    }
}
