//! silk-controller: `silk-controller -config=<path>` (also `--config <path>`).
//! Invalid config exits 64 before anything is bound; start-up failures exit 1 with one line
//! `<log_prefix>.silk-controller error: <error>` on stderr, as upstream.

use clap::Parser;

/// mimalloc: a `GET /leases` body is one large buffer per request, which glibc maps and faults
/// in afresh each time (above its mmap threshold); mimalloc reuses it. Built with cc alone.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use silk_controller::config::{Config, ConfigError};
use silk_ops::config::LoadError;

#[derive(Parser)]
#[command(name = "silk-controller")]
struct Args {
    /// Path to the rendered silk-controller.json.
    #[arg(long)]
    config: String,
}

fn load() -> anyhow::Result<Config> {
    let args = Args::try_parse_from(silk_ops::flags::normalize(std::env::args()))
        .map_err(|e| anyhow::anyhow!("usage: silk-controller -config=<path>\n{e}"))?;
    let path = args.config;
    silk_ops::config::load(&path, Config::parse).map_err(|e| match e {
        LoadError::Read { source, .. } => anyhow::anyhow!("read config {path}: {source}"),
        LoadError::Config(ConfigError::Invalid(problems)) => {
            anyhow::anyhow!("invalid config {path}:\n  - {}", problems.join("\n  - "))
        }
        LoadError::Config(other) => anyhow::Error::new(other).context(format!("config {path}")),
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
