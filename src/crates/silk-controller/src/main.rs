//! silk-controller: `silk-controller -config=<path>` (also `--config <path>`).
//! Invalid config exits 64 before anything is bound; start-up failures exit 1 with one line
//! `<log_prefix>.silk-controller error: <error>` on stderr, as upstream.

use anyhow::Context;
use silk_controller::config::{Config, ConfigError};

fn config_path() -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        for prefix in ["-config=", "--config="] {
            if let Some(p) = arg.strip_prefix(prefix) {
                return Some(p.to_string());
            }
        }
        if arg == "-config" || arg == "--config" {
            return args.next();
        }
    }
    None
}

fn load() -> anyhow::Result<Config> {
    let path = config_path().context("usage: silk-controller -config=<path>")?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("read config {path}"))?;
    Config::parse(&text).map_err(|e| match e {
        ConfigError::Invalid(problems) => {
            anyhow::anyhow!("invalid config {path}:\n  - {}", problems.join("\n  - "))
        }
        other => anyhow::Error::new(other).context(format!("config {path}")),
    })
}

#[actix_web::main]
async fn main() {
    let config = match load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cfnetworking.silk-controller error: {e:#}");
            std::process::exit(64);
        }
    };
    silk_ops::log::init(
        &config.log_prefix,
        "silk-controller",
        log::LevelFilter::Info,
    );
    silk_ops::log::info("starting", serde_json::json!({}));
    let running = match silk_controller::server::start(&config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}.silk-controller error: {e}", config.log_prefix);
            std::process::exit(1);
        }
    };
    let signal = silk_ops::shutdown::wait_for_signal()
        .await
        .unwrap_or("signal-error");
    silk_ops::log::info("stopping", serde_json::json!({ "signal": signal }));
    running.stop().await;
    silk_ops::log::info("exited", serde_json::json!({}));
}
