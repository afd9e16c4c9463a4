//! `cni-teardown --config <path>` (also `-config=<path>`, as Go's flag package reads it): the
//! silk-cni job's pre-start cleanup (cni.md §5.1). A config that cannot be read or is invalid
//! is logged (`read-config-file`) and exits 1 before anything is touched, as upstream.

use std::process::Command;

use clap::Parser;
use cni_wrapper_plugin::netrules::{ASG_CHAIN_PREFIXES, CONTAINER_CHAIN_PREFIXES};
use cni_wrapper_plugin::plugin::sweep_rules;
use cni_wrapper_plugin::teardown::{container_veths, legacy_ifbs, TeardownConfig};
use serde_json::json;
use silk_dataplane::iptables::{Family, SystemIptables};
use silk_ops::log::{error, info};

#[derive(Parser)]
#[command(name = "cni-teardown")]
struct Args {
    /// Path to teardown-config.json.
    #[arg(long)]
    config: String,
}

fn main() {
    let args = Args::parse_from(silk_ops::flags::normalize(std::env::args()));
    // Upstream logs through lager.NewWriterSink: the epoch format, at info.
    silk_ops::log::init_with(
        "cfnetworking",
        "cni-teardown",
        log::LevelFilter::Info,
        silk_ops::log::Format::Epoch,
        Box::new(std::io::stdout()),
    );
    info("starting", json!({}));
    let config = match silk_ops::config::load(&args.config, TeardownConfig::parse) {
        Ok(c) => c,
        Err(e) => {
            error("read-config-file", json!({"error": e.to_string()}));
            std::process::exit(1);
        }
    };
    let links = match Command::new("ip")
        .args(["-j", "-d", "link", "show"])
        .output()
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => {
            error("list-links-failed", json!({"error": e.to_string()}));
            String::new()
        }
    };
    for ifb in legacy_ifbs(&links) {
        let st = Command::new("ip").args(["link", "del", &ifb]).status();
        if !st.is_ok_and(|s| s.success()) {
            error("delete-ifb-failed", json!({"device": ifb}));
        }
    }
    sweep_stale_chains(&config, &links);
    for p in &config.paths_to_delete {
        match std::fs::remove_dir_all(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => error(
                "remove-path-failed",
                json!({"path": p, "error": e.to_string()}),
            ),
        }
    }
    info("complete", json!({}));
}

/// The chains of containers that vanished without DEL, with their jumps and MASQUERADE rules,
/// when no container veth exists (the links could not be listed: nothing is swept).
fn sweep_stale_chains(config: &TeardownConfig, links: &str) {
    if links.is_empty() {
        return;
    }
    let live = container_veths(links);
    if !live.is_empty() {
        info(
            "skip-iptables-sweep",
            json!({"container_veths": live.len()}),
        );
        return;
    }
    if let Some(dir) = std::path::Path::new(&config.iptables_lock_file).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let ipt = SystemIptables::new(&config.iptables_lock_file);
    let prefixes: Vec<&str> = CONTAINER_CHAIN_PREFIXES
        .iter()
        .chain(ASG_CHAIN_PREFIXES)
        .copied()
        .collect();
    for (family, name) in [(Family::V4, "ipv4"), (Family::V6, "ipv6")] {
        match sweep_rules(&ipt, family, &prefixes, &[]) {
            Ok(n) => info(
                "iptables-sweep",
                json!({"family": name, "chains_removed": n}),
            ),
            Err(e) => error(
                "iptables-sweep-failed",
                json!({"family": name, "error": e.msg}),
            ),
        }
    }
}
