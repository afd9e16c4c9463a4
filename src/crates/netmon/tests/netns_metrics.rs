//! Runs the real `netmon` binary in the test's own network namespace with a veth named
//! `silk-vtep`, a UDP listener on 127.0.0.1 standing in for the metron agent, and checks the
//! dropsonde value metrics of one cycle against what `ip` and `iptables` report, then the
//! telemetry line and a clean exit on SIGTERM.
//!
//! netmon reads `/sys/class/net`, which shows the namespace sysfs was mounted from; the binary
//! therefore runs under `unshare -m` with a sysfs mounted from inside the test namespace (a
//! private mount namespace: nothing changes outside it).

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use serde_json::{json, Value};
use silk_ops::dropsonde::{Envelope, EVENT_TYPE_VALUE_METRIC};
use silk_testkit::netns::{enter_root_test_netns, run_ok};

const BIN: &str = env!("CARGO_BIN_EXE_netmon");

struct Netmon(Child);

impl Drop for Netmon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rule_count() -> u64 {
    ["filter", "nat"]
        .iter()
        .map(|t| {
            run_ok(&["iptables", "-w", "-S", "-t", t])
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count() as u64
        })
        .sum()
}

fn link_stats(name: &str) -> Value {
    let out = run_ok(&["ip", "-s", "-j", "link", "show", name]).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["stats64"].clone()
}

/// The next cycle's six value metrics, in the order they arrive.
fn one_cycle(agent: &UdpSocket) -> Vec<(String, f64, String)> {
    let mut buf = [0u8; 2048];
    let mut got: Vec<(String, f64, String)> = Vec::new();
    while got.len() < 6 {
        let n = agent.recv(&mut buf).expect("metric within the timeout");
        let env = Envelope::decode(&buf[..n]).unwrap();
        assert_eq!(env.origin, "netmon");
        assert_eq!(env.event_type, EVENT_TYPE_VALUE_METRIC);
        let m = env.value_metric.unwrap();
        // Start at a cycle boundary.
        if got.is_empty() && m.name != "NetInterfaceCount" {
            continue;
        }
        got.push((m.name, m.value, m.unit));
    }
    got
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn emits_the_cycle_metrics_and_telemetry_of_its_namespace() {
    enter_root_test_netns();
    // No IPv6 chatter (router solicitations) to move the counters behind the test's back.
    run_ok(&["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]).unwrap();
    run_ok(&["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"]).unwrap();
    run_ok(&[
        "ip",
        "link",
        "add",
        "silk-vtep",
        "type",
        "veth",
        "peer",
        "name",
        "vtep-peer",
    ])
    .unwrap();
    run_ok(&["ip", "addr", "add", "10.255.99.1/24", "dev", "silk-vtep"]).unwrap();
    run_ok(&["ip", "link", "set", "silk-vtep", "up"]).unwrap();
    run_ok(&["ip", "link", "set", "vtep-peer", "up"]).unwrap();
    run_ok(&[
        "ip",
        "neigh",
        "add",
        "10.255.99.7",
        "lladdr",
        "02:00:00:00:00:07",
        "dev",
        "silk-vtep",
    ])
    .unwrap();
    run_ok(&[
        "iptables",
        "-w",
        "-A",
        "INPUT",
        "-s",
        "10.9.9.9/32",
        "-j",
        "DROP",
    ])
    .unwrap();
    run_ok(&["iptables", "-w", "-t", "nat", "-N", "netmon-test"]).unwrap();

    // Traffic out of silk-vtep, inside this namespace only.
    let sender = UdpSocket::bind("10.255.99.1:0").unwrap();
    for _ in 0..5 {
        sender.send_to(&[7u8; 100], "10.255.99.7:9").unwrap();
    }

    let agent = UdpSocket::bind("127.0.0.1:0").unwrap();
    agent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("netmon.json");
    let telemetry = dir.path().join("telemetry.log");
    std::fs::write(&telemetry, "stale line\n").unwrap();
    std::fs::write(
        &config,
        json!({
            "metron_address": agent.local_addr().unwrap().to_string(),
            "poll_interval": 1,
            "interface_name": "silk-vtep",
            "log_level": "debug",
            "log_prefix": "cfnetworking",
            "iptables_lock_file": dir.path().join("iptables.lock"),
            "telemetry_enabled": true,
            "telemetry_interval": 1
        })
        .to_string(),
    )
    .unwrap();
    let child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t sysfs sysfs /sys && exec \"$@\"")
        .arg("sh")
        .arg(BIN)
        .arg(format!("-config-file={}", config.display()))
        .arg(format!("-telemetry-log-file={}", telemetry.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut netmon = Netmon(child);

    let cycle = one_cycle(&agent);
    let stats = link_stats("silk-vtep");
    let names: Vec<&str> = cycle.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "NetInterfaceCount",
            "IPTablesRuleCount",
            "OverlayTxBytes",
            "OverlayRxBytes",
            "OverlayRxDropped",
            "OverlayTxDropped"
        ]
    );
    assert!(cycle.iter().all(|c| c.2 == "Metric"), "{cycle:?}");
    let value = |i: usize| cycle[i].1 as u64;
    // lo, silk-vtep, vtep-peer.
    assert_eq!(value(0), 3);
    // 3 filter policies + 1 rule, 4 nat policies + 1 chain.
    assert_eq!(value(1), rule_count());
    assert_eq!(value(1), 9);
    assert!(value(2) >= 5 * 128, "tx_bytes {}", value(2));
    assert_eq!(value(2), stats["tx"]["bytes"].as_u64().unwrap());
    assert_eq!(value(3), stats["rx"]["bytes"].as_u64().unwrap());
    assert_eq!(value(4), stats["rx"]["dropped"].as_u64().unwrap());
    assert_eq!(value(5), stats["tx"]["dropped"].as_u64().unwrap());

    // A new rule shows in a later cycle.
    run_ok(&["iptables", "-w", "-A", "FORWARD", "-j", "ACCEPT"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = one_cycle(&agent);
        if c[1].1 as u64 == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "rule count stayed at {}", c[1].1);
    }

    // Telemetry: the file was truncated at start, then gets lager epoch lines.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text = std::fs::read_to_string(&telemetry).unwrap();
        assert!(!text.contains("stale line"));
        if let Some(l) = text.lines().last() {
            break serde_json::from_str::<Value>(l).unwrap();
        }
        assert!(Instant::now() < deadline, "no telemetry line");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(line["source"], "netmon");
    assert_eq!(line["message"], "netmon.count-iptables-rules");
    assert_eq!(line["log_level"], 1);
    let data = line["data"].as_object().unwrap();
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "IPTablesRuleAverage",
            "IPTablesRuleCount",
            "IPTablesRuleCountInterval",
            "IPTablesRuleMaxiumum",
            "IPTablesRuleMinimum",
            "telemetry-source",
            "telemetry-time"
        ]
    );
    assert_eq!(data["telemetry-source"], "netmon");
    assert_eq!(data["IPTablesRuleCountInterval"], 1);
    let count = data["IPTablesRuleCount"].as_u64().unwrap();
    assert!(count == 9 || count == 10, "{count}");

    let pid = netmon.0.id().to_string();
    run_ok(&["kill", "-TERM", &pid]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = netmon.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn bad_config_exits_64_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("netmon.json");
    std::fs::write(
        &config,
        r#"{"metron_address": "127.0.0.1:3457", "poll_interval": 0, "log_level": "warn"}"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg(format!("-config-file={}", config.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "poll_interval",
        "log_level",
        "interface_name",
        "iptables_lock_file",
    ] {
        assert!(err.contains(want), "{want} missing from {err}");
    }
}
