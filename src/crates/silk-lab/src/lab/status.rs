//! `silk-lab status`: what the lab's controller and cells hold, read from the database and from
//! `ip -j` inside each cell namespace, plus one ping across VXLAN.

use std::path::PathBuf;

use crate::fabric::lab::LabState;
use serde_json::Value;
use silk_testkit::netns::run_in_ok;

/// Entries in the JSON array `argv` prints that carry `key` (routes with a gateway, neighbours
/// with a link-layer address, FDB entries with a remote).
fn count(ns: &str, argv: &[&str], key: &str) -> usize {
    run_in_ok(&PathBuf::from("/run/netns").join(ns), argv)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| {
            v.as_array()
                .map(|a| a.iter().filter(|e| e.get(key).is_some()).count())
        })
        .unwrap_or(0)
}

pub async fn print(state: &LabState) -> anyhow::Result<()> {
    let rows = state.subnets().await?;
    println!("leases ({}):", rows.len());
    println!(
        "  {:<15} {:<18} {:<17} last_renewed_at",
        "underlay_ip", "overlay_subnet", "overlay_hwaddr"
    );
    let mut subnets = std::collections::BTreeMap::new();
    for (u, s, m, t) in rows {
        println!("  {u:<15} {s:<18} {m:<17} {t}");
        subnets.insert(u, s);
    }
    println!("processes:");
    for p in &state.processes {
        let alive = if LabState::alive(p) {
            "running"
        } else {
            "NOT RUNNING"
        };
        println!(
            "  {:<16} pid {:<7} {alive:<11} log {}",
            p.name,
            p.pid,
            p.log.display()
        );
    }
    println!("cells:");
    for c in &state.cells {
        let routes = count(
            &c.ns,
            &["ip", "-j", "route", "show", "dev", "silk-vtep"],
            "gateway",
        );
        let neigh = count(
            &c.ns,
            &[
                "ip",
                "-j",
                "neigh",
                "show",
                "dev",
                "silk-vtep",
                "nud",
                "permanent",
            ],
            "lladdr",
        );
        let fdb = count(
            &c.ns,
            &["bridge", "-j", "fdb", "show", "dev", "silk-vtep"],
            "dst",
        );
        let lease = subnets
            .get(&c.underlay_ip)
            .cloned()
            .unwrap_or_else(|| "-".into());
        println!(
            "  {:<12} {:<15} lease {lease:<18} routes {routes:<4} neighbours {neigh:<4} fdb {fdb}",
            c.ns, c.underlay_ip
        );
    }
    if let [a, b, ..] = state.cells.as_slice() {
        let ip = |c: &crate::fabric::lab::LabCell| {
            subnets
                .get(&c.underlay_ip)
                .and_then(|s| s.split('/').next().map(str::to_string))
        };
        if let (Some(src), Some(dst)) = (ip(a), ip(b)) {
            let ns = PathBuf::from("/run/netns").join(&a.ns);
            let ok = run_in_ok(&ns, &["ping", "-c", "2", "-W", "2", "-I", &src, &dst]).is_ok();
            println!(
                "ping {src} ({}) -> {dst} ({}) across VXLAN: {}",
                a.ns,
                b.ns,
                if ok { "ok" } else { "FAILED" }
            );
        }
    }
    Ok(())
}
