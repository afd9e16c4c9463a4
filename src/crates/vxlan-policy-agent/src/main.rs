//! `vxlan-policy-agent -config-file=<vxlan-policy-agent.json>`: exits 1 on a bad config or a
//! start-up error (as upstream), 0 on SIGTERM/SIGINT, leaving its iptables rules in place.

use std::process::ExitCode;

use vxlan_policy_agent::config::Config;

#[actix_web::main]
async fn main() -> ExitCode {
    let path = silk_ops::flags::config_path("vxlan-policy-agent", "config-file", std::env::args())
        .unwrap_or_else(|e| e.exit());
    let cfg = match silk_ops::config::load(&path, Config::parse) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cfnetworking: could not read config file {path}: {e}");
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
