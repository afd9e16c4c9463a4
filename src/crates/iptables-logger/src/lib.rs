//! iptables-logger (policy contract §5): follows the kernel log, picks the lines of silk's
//! iptables LOG rules, adds the container they concern from the container metadata store, and
//! appends one JSON line per packet to `iptables.log`.
//!
//! - [`parse`] holds the kernel LOG line and its packet fields;
//! - [`containers`] holds lookup by IP in the metadata store;
//! - [`record`] holds the merged output line in both lager timestamp formats;
//! - [`follow`] holds `tail -F` of the kernel log across rotation;
//! - [`sink`] holds the output file, reopened after logrotate.

pub mod config;
pub mod containers;
pub mod follow;
pub mod parse;
#[cfg(test)]
mod proptests;
pub mod record;
pub mod sink;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use config::Config;
use containers::ContainerRepo;
use follow::Follower;
use record::TimestampFormat;
use sink::RotatableSink;

/// How often the kernel log is polled (hpcloud/tail's poll interval).
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// Turns kernel log lines into output lines.
pub struct Processor {
    repo: ContainerRepo,
    sink: RotatableSink,
    host_ip: String,
    host_guid: String,
    format: TimestampFormat,
}

impl Processor {
    pub fn new(cfg: &Config, sink: RotatableSink) -> Self {
        Processor {
            repo: ContainerRepo::new(&cfg.container_metadata_file),
            sink,
            host_ip: cfg.host_ip.clone(),
            host_guid: cfg.host_guid.clone(),
            format: cfg.log_timestamp_format,
        }
    }

    /// Handles one kernel log line; lines not from silk's LOG rules are ignored. Failures are
    /// logged and the line dropped, as upstream's runner does.
    pub fn handle(&mut self, line: &str) {
        if !parse::is_iptables_log(line) {
            return;
        }
        let packet = parse::parse(line);
        let mut container = match self.repo.get_by_ip(record::lookup_ip(&packet)) {
            Ok(c) => c,
            Err(e) => {
                silk_ops::log::error(
                    "merge-kernel-logs",
                    json!({"error": format!("get container by ip: read all: {e}")}),
                );
                return;
            }
        };
        container.host_ip.clone_from(&self.host_ip);
        container.host_guid.clone_from(&self.host_guid);
        let (event, data) = record::merge(&packet, container);
        let line = record::render(self.format, silk_ops::log::line::now_nanos(), &event, &data);
        if let Err(e) = self.sink.write_line(&line) {
            silk_ops::log::error("write-iptables-log", json!({"error": e.to_string()}));
        }
    }
}

/// Follows the kernel log until `stop` is set, handing every line to `processor`.
pub fn follow_until(mut follower: Follower, mut processor: Processor, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = follower.poll(&mut |l| processor.handle(l)) {
            silk_ops::log::error("tail-kernel-logs", json!({"error": e.to_string()}));
        }
        std::thread::sleep(POLL_EVERY);
    }
}
