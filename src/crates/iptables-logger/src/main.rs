//! `iptables-logger -config-file=<iptables-logger.json>`: exits 64 on a bad config, 1 when the
//! kernel log or the output log cannot be opened, 0 on SIGTERM/SIGINT.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use iptables_logger::{config::Config, follow::Follower, sink::RotatableSink, Processor};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cfg = match silk_ops::config::from_command_line(
        "cfnetworking.iptables-logger",
        "iptables-logger",
        "config-file",
        Config::parse,
    ) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // The component log is always at debug, as upstream sets its sink.
    silk_ops::log::init("cfnetworking", "iptables-logger", log::LevelFilter::Debug);
    silk_ops::log::info("starting", json!({}));
    let follower = match Follower::open_at_end(&cfg.kernel_log_file) {
        Ok(f) => f,
        Err(e) => return fatal("tail-input", format!("{}: {e}", cfg.kernel_log_file)),
    };
    silk_ops::log::info("started tailing file", json!({"file": cfg.kernel_log_file}));
    let sink = match RotatableSink::open(&cfg.output_log_file) {
        Ok(s) => s,
        Err(e) => {
            return fatal(
                "open-output-log-file",
                format!("{}: {e}", cfg.output_log_file),
            )
        }
    };
    let metrics = silk_ops::Metrics::with_agent("iptables-logger", Some(cfg.metron_address));
    silk_ops::metrics::spawn_emitter(metrics, Duration::from_secs(30), |_m| async {});

    let stop = Arc::new(AtomicBool::new(false));
    let processor = Processor::new(&cfg, sink);
    let worker = {
        let stop = stop.clone();
        std::thread::spawn(move || iptables_logger::follow_until(follower, processor, stop))
    };
    silk_ops::log::info("started", json!({}));
    let signal = silk_ops::shutdown::wait_for_signal().await;
    stop.store(true, Ordering::Relaxed);
    let _ = worker.join();
    silk_ops::log::info("exited", json!({"signal": signal.unwrap_or("none")}));
    ExitCode::SUCCESS
}

fn fatal(event: &str, error: String) -> ExitCode {
    silk_ops::log::fatal(event, json!({ "error": error }));
    ExitCode::from(1)
}
