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

#[actix_web::main]
async fn main() -> ExitCode {
    let args = Args::parse_from(silk_ops::flags::normalize(std::env::args()));
    let cfg = match silk_ops::config::load(&args.config_file, Config::parse) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "cfnetworking: could not read config file {}: {e}",
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
