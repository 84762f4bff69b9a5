//! Log setup: slog to stderr, term or JSON, with a level filter.

use slog::{o, Drain, Level, Logger};

use crate::config::LogFormat;

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

/// A logger writing to stderr in `format`, dropping records below `level`.
/// Records go through a bounded async queue so logging never blocks the
/// event loop; the guard-free `slog_async` drops (and counts) records if
/// stderr stalls.
pub fn stderr_logger(format: LogFormat, level: &str) -> Logger {
    let level = parse_level(level).unwrap_or(Level::Info);
    let drain = match format {
        LogFormat::Term => {
            let d =
                slog_term::FullFormat::new(slog_term::PlainSyncDecorator::new(std::io::stderr()))
                    .build()
                    .fuse();
            slog_async::Async::new(d)
                .chan_size(4096)
                .build()
                .fuse()
                .filter_level(level)
                .fuse()
                .boxed()
        }
        LogFormat::Json => {
            let d = slog_json::Json::new(std::io::stderr()).add_default_keys().build().fuse();
            slog_async::Async::new(d)
                .chan_size(4096)
                .build()
                .fuse()
                .filter_level(level)
                .fuse()
                .boxed()
        }
    };
    Logger::root(drain, o!("daemon" => "lwsysd"))
}

/// Extension so both arms of [`stderr_logger`] have one type.
trait Boxed {
    fn boxed(self) -> Box<dyn Drain<Ok = (), Err = slog::Never> + Send>;
}

impl<D: Drain<Ok = (), Err = slog::Never> + Send + 'static> Boxed for D {
    fn boxed(self) -> Box<dyn Drain<Ok = (), Err = slog::Never> + Send> {
        Box::new(self)
    }
}
