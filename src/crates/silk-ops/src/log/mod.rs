//! Lager-shaped JSON-lines logging behind the `log` facade.
//!
//! Every line has the shape Cloud Foundry's lager writes, keys in lager's order:
//! `{"timestamp":"2026-01-02T03:04:05.123456789Z","level":"info","source":"cfnetworking.silk-controller",
//! "message":"cfnetworking.silk-controller.lease-acquired","data":{...}}`.
//!
//! Structured events go through [`debug`], [`info`], [`warn`], [`error`] and [`fatal`]:
//! `silk_ops::log::info("lease-acquired", json!({"lease": lease}))`. Plain `log::info!("...")`
//! calls from any crate also end up here: a message without spaces becomes the event name,
//! otherwise the event is the record's target and the text goes to `data.message`.
//!
//! Levels: lager knows debug, info, error and fatal. `warn` records are written as `"error"`
//! (they are failures, retried); `fatal` is written at `log::Level::Error` with level `"fatal"`.
//! The filter is `log::max_level()`, changed at runtime by the debug server's `/log-level`.
//!
//! Lines are rendered by [`line::render`], the one lager renderer of the release, in the
//! RFC 3339 format by default or in lager's older epoch format ([`init_with`]).

pub mod line;

pub use line::{epoch_at, render, rfc3339_at, timestamp_now, Format, Level as LagerLevel};

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use log::{Level, LevelFilter, Log, Metadata, Record};
use serde_json::Value;

/// Where lines go; stdout unless a test installs a buffer.
type Sink = Box<dyn Write + Send>;

struct LagerLogger {
    /// `<log_prefix>.<job>`, e.g. `cfnetworking.silk-controller`.
    source: String,
    format: Format,
    sink: Mutex<Sink>,
}

static LOGGER: OnceLock<LagerLogger> = OnceLock::new();

/// Installs the logger for `job` with `prefix` (`cfnetworking` in every silk job) writing to
/// stdout, at `level`. Calling it again keeps the first installation and only sets the level.
pub fn init(prefix: &str, job: &str, level: LevelFilter) {
    init_with_sink(prefix, job, level, Box::new(std::io::stdout()));
}

/// As [`init`], writing to `sink` (tests, files).
pub fn init_with_sink(prefix: &str, job: &str, level: LevelFilter, sink: Box<dyn Write + Send>) {
    init_with(prefix, job, level, Format::Rfc3339, sink);
}

/// As [`init_with_sink`], in `format`: the programs whose upstream twin logs through
/// `lager.NewWriterSink` (cni-teardown, silk-datastore-syncer) write [`Format::Epoch`].
pub fn init_with(
    prefix: &str,
    job: &str,
    level: LevelFilter,
    format: Format,
    sink: Box<dyn Write + Send>,
) {
    let logger = LOGGER.get_or_init(|| LagerLogger {
        format,
        // An empty prefix leaves the bare component name, as lager programs that are not
        // cfnetworking jobs (the healthchecker) write it.
        source: if prefix.is_empty() {
            job.to_string()
        } else {
            format!("{prefix}.{job}")
        },
        sink: Mutex::new(sink),
    });
    // A second init (tests in one process) finds the logger already set; that is fine.
    let _ = log::set_logger(logger);
    log::set_max_level(level);
}

/// Parses a level the way newer lager's debug server does: trimmed, case-insensitive
/// `0|d|debug`, `1|i|info`, `2|w|warn`, `3|e|error`, `4|f|fatal`. Returns the canonical name
/// and the filter to install (`fatal` keeps error records, the closest `log` has).
pub fn parse_level(text: &str) -> Option<(&'static str, LevelFilter)> {
    match text.trim().to_ascii_lowercase().as_str() {
        "0" | "d" | "debug" => Some(("debug", LevelFilter::Debug)),
        "1" | "i" | "info" => Some(("info", LevelFilter::Info)),
        "2" | "w" | "warn" => Some(("warn", LevelFilter::Warn)),
        "3" | "e" | "error" => Some(("error", LevelFilter::Error)),
        "4" | "f" | "fatal" => Some(("fatal", LevelFilter::Error)),
        _ => None,
    }
}

pub fn debug(event: &str, data: Value) {
    emit(Level::Debug, LagerLevel::Debug, event, data);
}

pub fn info(event: &str, data: Value) {
    emit(Level::Info, LagerLevel::Info, event, data);
}

/// A failure that will be retried; written with lager level `"error"`.
pub fn warn(event: &str, data: Value) {
    emit(Level::Warn, LagerLevel::Error, event, data);
}

pub fn error(event: &str, data: Value) {
    emit(Level::Error, LagerLevel::Error, event, data);
}

/// The last line before a process gives up; written with lager level `"fatal"`.
pub fn fatal(event: &str, data: Value) {
    emit(Level::Error, LagerLevel::Fatal, event, data);
}

fn emit(level: Level, lager: LagerLevel, event: &str, data: Value) {
    if level > log::max_level() {
        return;
    }
    if let Some(logger) = LOGGER.get() {
        logger.write(lager, event, &data);
    }
}

// === impl LagerLogger ===

impl LagerLogger {
    fn write(&self, level: LagerLevel, event: &str, data: &Value) {
        let mut line = line::render_now(self.format, level, &self.source, event, data);
        line.push('\n');
        if let Ok(mut sink) = self.sink.lock() {
            // Nothing sensible to do when stdout is gone.
            let _ = sink.write_all(line.as_bytes());
            let _ = sink.flush();
        }
    }
}

impl Log for LagerLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error | Level::Warn => LagerLevel::Error,
            Level::Info => LagerLevel::Info,
            Level::Debug | Level::Trace => LagerLevel::Debug,
        };
        let text = record.args().to_string();
        if !text.is_empty() && !text.contains(char::is_whitespace) {
            self.write(level, &text, &Value::Null);
        } else {
            let event = record.target().replace("::", ".");
            self.write(level, &event, &serde_json::json!({ "message": text }));
        }
    }

    fn flush(&self) {
        if let Ok(mut sink) = self.sink.lock() {
            let _ = sink.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_like_newer_lager() {
        assert_eq!(parse_level(" DEBUG\n"), Some(("debug", LevelFilter::Debug)));
        assert_eq!(parse_level("d"), Some(("debug", LevelFilter::Debug)));
        assert_eq!(parse_level("1"), Some(("info", LevelFilter::Info)));
        assert_eq!(parse_level("W"), Some(("warn", LevelFilter::Warn)));
        assert_eq!(parse_level("error"), Some(("error", LevelFilter::Error)));
        assert_eq!(parse_level("4"), Some(("fatal", LevelFilter::Error)));
        assert_eq!(parse_level(""), None);
        assert_eq!(parse_level("5"), None);
        assert_eq!(parse_level("verbose"), None);
    }
}
