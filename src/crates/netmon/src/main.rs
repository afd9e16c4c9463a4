//! `netmon -config-file=<netmon.json>`: exits 64 on a bad config, 1 when the telemetry log
//! cannot be created, 0 on SIGTERM/SIGINT.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use netmon::{config::Config, stats::SystemStats};
use serde_json::json;

#[derive(Parser)]
#[command(name = "netmon")]
struct Args {
    /// Path to netmon.json.
    #[arg(long = "config-file")]
    config_file: String,
    /// Where the telemetry lines go (upstream's fixed path; changed only by tests and labs).
    #[arg(long = "telemetry-log-file", hide = true, default_value = netmon::TELEMETRY_LOG)]
    telemetry_log_file: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse_from(silk_ops::flags::normalize(std::env::args()));
    let cfg = match silk_ops::config::load_or_report(
        "cfnetworking.netmon",
        &args.config_file,
        Config::parse,
    ) {
        Ok(c) => c,
        Err(code) => return code,
    };
    silk_ops::log::init(&cfg.log_prefix, "netmon", cfg.level_filter());
    silk_ops::log::info(
        "parsed-config",
        json!({"config": {
            "metron_address": cfg.metron_address.to_string(),
            "poll_interval": cfg.poll_interval.as_secs(),
            "interface_name": cfg.interface_name,
            "log_level": cfg.log_level,
            "iptables_lock_file": cfg.iptables_lock_file,
            "telemetry_enabled": cfg.telemetry.is_some(),
            "telemetry_interval": cfg.telemetry.map(|t| t.as_secs()).unwrap_or(0),
        }}),
    );
    let stats = Arc::new(SystemStats::new(&cfg.iptables_lock_file));
    let metrics = silk_ops::Metrics::with_agent("netmon", Some(cfg.metron_address));
    match netmon::run(cfg, stats, metrics, args.telemetry_log_file.into()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            silk_ops::log::fatal("run", json!({"error": format!("{e:#}")}));
            ExitCode::from(1)
        }
    }
}
