//! Every rule of the update policy, with the time given.

use super::*;

/// 2030-01-01 00:00:00 UTC, a Tuesday; days after it are easy to add.
const DAY0: u64 = 1_893_456_000;

fn at(h: u64, m: u64) -> u64 {
    DAY0 + h * 3600 + m * 60
}

fn policy(windows: &[&str], offset: &str) -> UpdatePolicy {
    UpdatePolicy {
        windows: windows.iter().map(|w| w.parse().unwrap()).collect(),
        utc_offset_secs: parse_utc_offset(offset).unwrap(),
        ..UpdatePolicy::default()
    }
}

#[test]
fn windows_parse_strictly_and_print_back() {
    let w: Window = "02:00-04:30".parse().unwrap();
    assert_eq!(w.to_string(), "02:00-04:30");
    assert_eq!("22:00-24:00".parse::<Window>().unwrap().to_string(), "22:00-24:00");
    for bad in
        ["", "2:00-4:00", "02:00", "02:00-24:01", "24:00-02:00", "02:60-03:00", "ab:cd-01:00"]
    {
        assert!(bad.parse::<Window>().is_err(), "{bad}");
    }
    let e = "03:00-03:00".parse::<Window>().unwrap_err();
    assert!(e.contains("empty"), "{e}");
    let whole: Window = "00:00-24:00".parse().unwrap();
    assert!(whole.contains(0) && whole.contains(24 * 60 - 1));
}

#[test]
fn offsets_parse_within_fourteen_hours() {
    assert_eq!(parse_utc_offset("+01:00"), Ok(3600));
    assert_eq!(parse_utc_offset("-05:30"), Ok(-19_800));
    assert_eq!(parse_utc_offset("Z"), Ok(0));
    assert_eq!(parse_utc_offset("+14:00"), Ok(50_400));
    for bad in ["01:00", "+15:00", "+1:00", "", "+", "+01:00:00"] {
        assert!(parse_utc_offset(bad).is_err(), "{bad}");
    }
}

#[test]
fn no_windows_means_always_open() {
    let p = UpdatePolicy::default();
    assert!(p.window_open(at(13, 7)));
    assert_eq!(p.next_window(at(13, 7)), at(13, 7));
    let rec = ReleaseRecord::default().for_release(1000, at(13, 7));
    assert_eq!(p.decide(&rec, Urgency::Normal, at(13, 7)), Decision::Enter(Entry::Normal));
}

#[test]
fn a_utc_window_is_open_from_its_start_until_just_before_its_end() {
    let p = policy(&["02:00-04:00"], "Z");
    assert!(!p.window_open(at(1, 59)));
    assert!(p.window_open(at(2, 0)));
    assert!(p.window_open(at(3, 59)));
    assert!(!p.window_open(at(4, 0)));
    // At noon the next opening is 02:00 the next day.
    assert_eq!(p.next_window(at(12, 0)), at(26, 0));
    // At 01:30:20 it is 02:00 the same day.
    assert_eq!(p.next_window(at(1, 30) + 20), at(2, 0));
    let rec = ReleaseRecord::default().for_release(1000, at(12, 0));
    assert_eq!(
        p.decide(&rec, Urgency::Normal, at(12, 0)),
        Decision::Wait { until_unix: at(26, 0) }
    );
    assert_eq!(p.decide(&rec, Urgency::Normal, at(26, 30)), Decision::Enter(Entry::Normal));
}

#[test]
fn a_window_crossing_midnight_is_open_on_both_sides() {
    let p = policy(&["23:00-01:00"], "Z");
    assert!(p.window_open(at(23, 30)));
    assert!(p.window_open(at(24, 30)));
    assert!(!p.window_open(at(1, 0)));
    assert!(!p.window_open(at(22, 59)));
    assert_eq!(p.next_window(at(10, 0)), at(23, 0));
}

#[test]
fn an_offset_moves_the_windows_into_local_time() {
    // 02:00-04:00 at +01:00 is 01:00-03:00 UTC.
    let p = policy(&["02:00-04:00"], "+01:00");
    assert!(p.window_open(at(1, 0)));
    assert!(!p.window_open(at(3, 0)));
    assert_eq!(p.next_window(at(12, 0)), at(25, 0));
    // At -05:30, 02:00 local is 07:30 UTC.
    let p = policy(&["02:00-04:00"], "-05:30");
    assert!(p.window_open(at(7, 30)));
    assert!(!p.window_open(at(7, 29)));
    assert_eq!(p.next_window(at(0, 0)), at(7, 30));
}

#[test]
fn of_several_windows_the_next_to_open_is_chosen() {
    let p = policy(&["22:00-23:00", "02:00-03:00"], "Z");
    assert_eq!(p.next_window(at(12, 0)), at(22, 0));
    assert_eq!(p.next_window(at(23, 30)), at(26, 0));
    assert!(p.window_open(at(2, 15)) && p.window_open(at(22, 15)));
}

#[test]
fn the_budget_counts_deferrals_of_one_release_and_a_new_release_starts_afresh() {
    let p = UpdatePolicy { max_deferrals: Some(3), ..UpdatePolicy::default() };
    let mut rec = ReleaseRecord::default().for_release(1000, at(0, 0));
    for _ in 0..2 {
        rec.deferrals += 1;
        assert_eq!(p.decide(&rec, Urgency::Normal, at(0, 1)), Decision::Enter(Entry::Normal));
    }
    rec.deferrals += 1;
    assert!(p.budget_spent(&rec, at(0, 1)));
    assert_eq!(p.decide(&rec, Urgency::Normal, at(0, 1)), Decision::Enter(Entry::PastDefer));
    // The same release keeps its count; a newer one starts at zero.
    assert_eq!(rec.for_release(1000, at(5, 0)), rec);
    let next = rec.for_release(1001, at(5, 0));
    assert_eq!((next.deferrals, next.first_seen_unix), (0, at(5, 0)));
    assert_eq!(p.decide(&next, Urgency::Normal, at(5, 0)), Decision::Enter(Entry::Normal));
}

#[test]
fn a_sighting_before_the_clock_was_set_restarts_once_it_is() {
    let p = UpdatePolicy { max_defer_secs: Some(3600), ..UpdatePolicy::default() };
    let early = ReleaseRecord::default().for_release(1000, 42);
    let rec = early.for_release(1000, at(10, 0));
    assert_eq!(rec.first_seen_unix, at(10, 0));
    assert_eq!(p.decide(&rec, Urgency::Security, at(10, 0)), Decision::Enter(Entry::Normal));
}

#[test]
fn the_budget_runs_out_after_max_defer_secs_since_first_seen() {
    let p = UpdatePolicy { max_defer_secs: Some(3600), ..UpdatePolicy::default() };
    let rec = ReleaseRecord::default().for_release(1000, at(10, 0));
    assert_eq!(p.decide(&rec, Urgency::Normal, at(10, 59)), Decision::Enter(Entry::Normal));
    assert_eq!(p.decide(&rec, Urgency::Normal, at(11, 0)), Decision::Enter(Entry::PastDefer));
    assert_eq!(p.defer_until(&rec, Urgency::Normal), Some(at(11, 0)));
    // A clock stepped back before the first sighting spends nothing.
    assert_eq!(p.decide(&rec, Urgency::Normal, at(9, 0)), Decision::Enter(Entry::Normal));
}

#[test]
fn a_spent_budget_still_waits_for_a_window() {
    let p = UpdatePolicy { max_deferrals: Some(0), ..policy(&["02:00-04:00"], "Z") };
    let rec = ReleaseRecord::default().for_release(1000, at(12, 0));
    assert_eq!(
        p.decide(&rec, Urgency::Normal, at(12, 0)),
        Decision::Wait { until_unix: at(26, 0) }
    );
    assert_eq!(p.decide(&rec, Urgency::Normal, at(26, 0)), Decision::Enter(Entry::PastDefer));
}

#[test]
fn a_security_release_is_forced_at_its_deadline_even_outside_windows() {
    let p = UpdatePolicy { security_deadline_secs: 7200, ..policy(&["02:00-04:00"], "Z") };
    let rec = ReleaseRecord::default().for_release(1000, at(12, 0));
    // Before the deadline it waits, but never past the deadline.
    assert_eq!(
        p.decide(&rec, Urgency::Security, at(12, 0)),
        Decision::Wait { until_unix: at(14, 0) }
    );
    assert_eq!(p.decide(&rec, Urgency::Security, at(14, 0)), Decision::Enter(Entry::Forced));
    assert_eq!(p.defer_until(&rec, Urgency::Security), Some(at(14, 0)));
    // A normal release of the same age still waits for 02:00.
    assert_eq!(
        p.decide(&rec, Urgency::Normal, at(14, 0)),
        Decision::Wait { until_unix: at(26, 0) }
    );
}

#[test]
fn a_security_release_before_its_deadline_follows_the_budget() {
    let p = UpdatePolicy {
        max_deferrals: Some(1),
        security_deadline_secs: 3600,
        ..UpdatePolicy::default()
    };
    let mut rec = ReleaseRecord::default().for_release(1000, at(0, 0));
    assert_eq!(p.decide(&rec, Urgency::Security, at(0, 1)), Decision::Enter(Entry::Normal));
    rec.deferrals = 1;
    assert_eq!(p.decide(&rec, Urgency::Security, at(0, 1)), Decision::Enter(Entry::PastDefer));
    assert_eq!(p.decide(&rec, Urgency::Security, at(1, 0)), Decision::Enter(Entry::Forced));
    // The earlier of the budget's time and the deadline bounds the wait.
    let p = UpdatePolicy { max_defer_secs: Some(60), ..p };
    assert_eq!(p.defer_until(&rec, Urgency::Security), Some(at(0, 1)));
}
