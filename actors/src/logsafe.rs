//! `LogSafe`: client-chosen text made safe for a log line. With the term
//! format a newline or an escape sequence in a notifier's reason or an NTP
//! server name could forge a log line or drive the reader's terminal; the
//! JSON format escapes on its own, but both get the same text this way.

use std::fmt;

/// Shows a string with control characters escaped (`\n`, `\u{1b}`) and
/// cut to [`LogSafe::MAX`] bytes; text without them shows unchanged.
#[derive(Debug, Clone, Copy)]
pub struct LogSafe<'a>(pub &'a str);

impl LogSafe<'_> {
    /// Most bytes of the text a log line shows.
    pub const MAX: usize = 256;
}

impl fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = 0;
        for c in self.0.chars() {
            shown += c.len_utf8();
            if shown > Self::MAX {
                return f.write_str("…");
            }
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

impl slog::Value for LogSafe<'_> {
    fn serialize(
        &self,
        _record: &slog::Record<'_>,
        key: slog::Key,
        serializer: &mut dyn slog::Serializer,
    ) -> slog::Result {
        serializer.emit_arguments(key, &format_args!("{self}"))
    }
}

#[cfg(test)]
mod tests {
    use super::LogSafe;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_unchanged() {
        assert_eq!(LogSafe("waiting for ntp").to_string(), "waiting for ntp");
        assert_eq!(LogSafe("a\nINFO forged").to_string(), "a\\nINFO forged");
        assert_eq!(LogSafe("\u{1b}[31mred").to_string(), "\\u{1b}[31mred");
        assert_eq!(LogSafe("é\r").to_string(), "é\\r");
    }

    #[test]
    fn long_text_is_cut() {
        let long = "x".repeat(10_000);
        let shown = LogSafe(&long).to_string();
        assert_eq!(shown, format!("{}…", "x".repeat(LogSafe::MAX)));
    }
}
