//! `vxlan-policy-agent -config-file=<vxlan-policy-agent.json>`: exits 1 on a bad config or a
//! start-up error (as upstream), 0 on SIGTERM/SIGINT, leaving its iptables rules in place.

use std::process::ExitCode;

use clap::Parser;
use vxlan_policy_agent::config::Config;

#[derive(Parser)]
#[command(name = "vxlan-policy-agent")]
struct Args {
    /// Path to vxlan-policy-agent.json.
    #[arg(long = "config-file")]
    config_file: String,
}

/// Go's flag package accepts `-name=value`; clap wants `--name=value`.
fn normalize(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            if i > 0 && a.starts_with('-') && !a.starts_with("--") && a.len() > 2 {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

#[actix_web::main]
async fn main() -> ExitCode {
    let args = Args::parse_from(normalize(std::env::args()));
    let cfg = match std::fs::read_to_string(&args.config_file)
        .map_err(anyhow::Error::from)
        .and_then(|t| Ok(Config::parse(&t)?))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "cfnetworking: could not read config file {}: {e:#}",
                args.config_file
            );
            return ExitCode::from(1);
        }
    };
    let level = silk_ops::log::parse_level(&cfg.log_level)
        .map(|(_, l)| l)
        .unwrap_or(log::LevelFilter::Info);
    silk_ops::log::init(&cfg.log_prefix, "vxlan-policy-agent", level);
    match vxlan_policy_agent::agent::run(cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            silk_ops::log::error(
                "vxlan-policy-agent",
                serde_json::json!({ "error": e.to_string() }),
            );
            eprintln!("cfnetworking.vxlan-policy-agent error: {e}");
            ExitCode::from(1)
        }
    }
}
