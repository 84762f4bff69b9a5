//! Small text helpers for `lwsysctl`'s human output: timestamps, field
//! access that never panics on a reply of unexpected shape, tables, and
//! colour, which is only ever used on a terminal.

use std::io::IsTerminal as _;

use serde_json::Value;

/// What the output streams are: decided once by the binary, so library
/// callers writing to buffers always get plain text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Terminal {
    /// stdout is a terminal (progress is redrawn in place).
    pub out_tty: bool,
    /// Colour on stdout: a terminal, and `$NO_COLOR` unset or empty.
    pub colour_out: bool,
    /// Colour on stderr, likewise.
    pub colour_err: bool,
}

impl Terminal {
    /// No terminal: plain text, one line per update.
    pub fn plain() -> Self {
        Self::default()
    }

    /// From the process's own stdout and stderr and `$NO_COLOR`.
    pub fn detect() -> Self {
        let no_colour = std::env::var_os("NO_COLOR");
        Self::decide(
            std::io::stdout().is_terminal(),
            std::io::stderr().is_terminal(),
            no_colour.as_deref(),
        )
    }

    /// The rule (<https://no-color.org>): colour only on a terminal, and
    /// never when `NO_COLOR` is set to anything non-empty.
    pub fn decide(out_tty: bool, err_tty: bool, no_colour: Option<&std::ffi::OsStr>) -> Self {
        let allowed = no_colour.is_none_or(|v| v.is_empty());
        Self { out_tty, colour_out: out_tty && allowed, colour_err: err_tty && allowed }
    }
}

/// SGR bold red (errors, a failed update).
pub const RED: &str = "1;31";
/// SGR green (a finished update).
pub const GREEN: &str = "32";

/// `s` wrapped in the SGR `code` when `on`, else unchanged.
pub fn paint(s: &str, code: &str, on: bool) -> String {
    if on {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_owned()
    }
}

/// `unix_us` as an RFC 3339 UTC timestamp, to the second
/// (`2026-11-24T16:00:00Z`).
pub fn rfc3339(unix_us: u64) -> String {
    let secs = unix_us / 1_000_000;
    let (y, mo, d) = civil_from_days(secs / 86_400);
    let s = secs % 86_400;
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

/// `unix_us` as an RFC 3339 UTC timestamp with milliseconds.
pub fn rfc3339_ms(unix_us: u64) -> String {
    let base = rfc3339(unix_us);
    let ms = unix_us / 1000 % 1000;
    format!("{}.{ms:03}Z", base.trim_end_matches('Z'))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// `v[key]` as text: strings bare, other values as JSON, absent as `-`.
pub fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// `v[key]` as a number, 0 when absent or not a number.
pub fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// `v[key]` as a time, or `-` when absent.
pub fn when(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_u64).map_or_else(|| "-".into(), rfc3339)
}

/// Rows laid out in columns as wide as their widest cell, two spaces
/// apart, the last column unpadded.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let w = widths.get(c).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_536_000_000_000), "2026-11-24T16:00:00Z");
        assert_eq!(rfc3339_ms(1_795_536_000_123_456), "2026-11-24T16:00:00.123Z");
    }

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        let t = Terminal::decide(true, false, None);
        assert_eq!((t.colour_out, t.colour_err), (true, false));
        let t = Terminal::decide(true, true, Some(std::ffi::OsStr::new("1")));
        assert_eq!((t.out_tty, t.colour_out, t.colour_err), (true, false, false));
        assert!(Terminal::decide(true, true, Some(std::ffi::OsStr::new(""))).colour_out);
        assert!(!Terminal::decide(false, false, None).colour_out);
        assert_eq!(paint("x", RED, false), "x");
        assert_eq!(paint("x", RED, true), "\x1b[1;31mx\x1b[0m");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&[vec!["a".into(), "bb".into(), "c".into()], vec!["aaa".into(), "b".into()]]);
        assert_eq!(t, "a    bb  c\naaa  b\n");
    }
}
