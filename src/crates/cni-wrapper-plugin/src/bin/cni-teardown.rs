//! `cni-teardown --config <path>`: the silk-cni job's pre-start cleanup (cni.md §5.1).

use std::process::Command;

use cni_wrapper_plugin::netrules::{ASG_CHAIN_PREFIXES, CONTAINER_CHAIN_PREFIXES};
use cni_wrapper_plugin::plugin::sweep_rules;
use cni_wrapper_plugin::teardown::{container_veths, legacy_ifbs, TeardownConfig};
use silk_dataplane::iptables::{Family, SystemIptables};

fn log(event: &str, data: serde_json::Value) {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    println!(
        "{}",
        serde_json::json!({"timestamp": format!("{ts:.9}"), "source": "cfnetworking.cni-teardown",
                           "message": format!("cfnetworking.cni-teardown.{event}"), "log_level": 1, "data": data})
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .windows(2)
        .find(|w| w[0] == "--config" || w[0] == "-config")
        .map(|w| w[1].clone());
    log("starting", serde_json::json!({}));
    let config = path
        .ok_or_else(|| "missing --config".to_string())
        .and_then(|p| std::fs::read_to_string(&p).map_err(|e| format!("read {p}: {e}")))
        .and_then(|t| TeardownConfig::parse(&t).map_err(|e| e.to_string()));
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            log("read-config-file", serde_json::json!({"error": e}));
            std::process::exit(1);
        }
    };
    let links = match Command::new("ip")
        .args(["-j", "-d", "link", "show"])
        .output()
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => {
            log(
                "list-links-failed",
                serde_json::json!({"error": e.to_string()}),
            );
            String::new()
        }
    };
    for ifb in legacy_ifbs(&links) {
        let st = Command::new("ip").args(["link", "del", &ifb]).status();
        if !st.is_ok_and(|s| s.success()) {
            log("delete-ifb-failed", serde_json::json!({"device": ifb}));
        }
    }
    sweep_stale_chains(&config, &links);
    for p in &config.paths_to_delete {
        match std::fs::remove_dir_all(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log(
                "remove-path-failed",
                serde_json::json!({"path": p, "error": e.to_string()}),
            ),
        }
    }
    log("complete", serde_json::json!({}));
}

/// The chains of containers that vanished without DEL, with their jumps and MASQUERADE rules,
/// when no container veth exists (the links could not be listed: nothing is swept).
fn sweep_stale_chains(config: &TeardownConfig, links: &str) {
    if links.is_empty() {
        return;
    }
    let live = container_veths(links);
    if !live.is_empty() {
        log(
            "skip-iptables-sweep",
            serde_json::json!({"container_veths": live.len()}),
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
            Ok(n) => log(
                "iptables-sweep",
                serde_json::json!({"family": name, "chains_removed": n}),
            ),
            Err(e) => log(
                "iptables-sweep-failed",
                serde_json::json!({"family": name, "error": e.msg}),
            ),
        }
    }
}
