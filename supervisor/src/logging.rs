//! Log setup: slog to stderr, term or JSON, with a level filter.

use slog::{o, Drain, Level, Logger};

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Term,
    /// One JSON object per line.
    Json,
}

/// The slog level named `s` (critical, error, warning or warn, info, debug,
/// trace), in any case.
pub fn parse_level(s: &str) -> Option<Level> {
    match s.to_ascii_lowercase().as_str() {
        "critical" | "crit" => Some(Level::Critical),
        "error" => Some(Level::Error),
        "warning" | "warn" => Some(Level::Warning),
        "info" => Some(Level::Info),
        "debug" => Some(Level::Debug),
        "trace" => Some(Level::Trace),
        _ => None,
    }
}

/// Log records that may wait for stderr. The channel is allocated whole at
/// start, so this is resident memory (about 100 bytes a record); past it,
/// records are dropped and the drop is reported rather than the event
/// loop stalled.
const LOG_QUEUE: usize = 1024;

/// A logger writing to stderr in `format`, dropping records below `level`,
/// and the guard whose drop flushes what is queued.
/// Records go through a bounded async queue so logging never blocks the
/// event loop (`slog_async` drops records rather than stall if stderr
/// does).
pub fn stderr_logger(format: LogFormat, level: &str) -> (Logger, slog_async::AsyncGuard) {
    let level = parse_level(level).unwrap_or(Level::Info);
    match format {
        LogFormat::Term => {
            let d =
                slog_term::FullFormat::new(slog_term::PlainSyncDecorator::new(std::io::stderr()))
                    .build()
                    .fuse();
            let (d, guard) = slog_async::Async::new(d).chan_size(LOG_QUEUE).build_with_guard();
            (Logger::root(d.fuse().filter_level(level).fuse(), o!()), guard)
        }
        LogFormat::Json => {
            let d = slog_json::Json::new(std::io::stderr()).add_default_keys().build().fuse();
            let (d, guard) = slog_async::Async::new(d).chan_size(LOG_QUEUE).build_with_guard();
            (Logger::root(d.fuse().filter_level(level).fuse(), o!()), guard)
        }
    }
}
