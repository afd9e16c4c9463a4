//! Golden tests: the rendered payloads against the exact iptables-save text of cni.md §4.15.

use super::*;
use crate::config::WrapperConfig;
use silk_dataplane::iptables::save::normalize;

pub(crate) const EXAMPLE_A: &str = include_str!("../../tests/fixtures/example_a.save");
const EXAMPLE_C_FILTER: &str = include_str!("../../tests/fixtures/example_c_filter.save");

pub(crate) const CONFIG_A: &str = r#"{
  "cniVersion": "1.0.0", "name": "cni-wrapper", "type": "cni-wrapper-plugin",
  "datastore": "/var/vcap/data/container-metadata/store.json",
  "iptables_lock_file": "/var/vcap/data/garden-cni/iptables.lock",
  "instance_address": "10.0.16.15", "no_masquerade_cidr_range": "10.255.0.0/16",
  "underlay_ips": ["10.0.16.15"], "iptables_denied_logs_per_sec": 1,
  "iptables_accepted_udp_logs_per_sec": 100, "ingress_tag": "ffff0000", "vtep_name": "silk-vtep",
  "policy_agent_force_poll_address": "127.0.0.1:8722", "dns_servers": ["169.254.0.53"],
  "delegate": {"name": "silk", "type": "silk-cni", "daemonPort": 23954},
  "outbound_connections": {"limit": false, "logging": false, "burst": 1000, "rate_per_sec": 100, "dry_run": false}
}"#;

pub(crate) const RULES_C: &str = r#"[
  {"protocol":1,"networks":[{"start":"10.10.0.0","end":"10.10.255.255"}],"ports":[{"start":443,"end":443}],"log":true},
  {"protocol":2,"networks":[{"start":"8.8.8.8","end":"8.8.8.8"}],"ports":[{"start":53,"end":53}]},
  {"protocol":3,"networks":[{"start":"0.0.0.0","end":"255.255.255.255"}],"icmps":{"type":255,"code":255}},
  {"protocol":3,"networks":[{"start":"1.1.1.1","end":"1.1.1.1"}],"icmps":{"type":8}},
  {"networks":[{"start":"10.20.0.0","end":"10.20.0.255"}]},
  {"protocol":1,"networks":[{"start":"10.30.0.0","end":"10.30.0.255"}]},
  {"protocol":1,"networks":[{"start":"10.10.0.0","end":"10.10.255.255"}],"ports":[{"start":443,"end":443}],"log":true}
]"#;

pub(crate) fn config_c() -> WrapperConfig {
    let mut v: serde_json::Value = serde_json::from_str(CONFIG_A).unwrap();
    v["iptables_asg_logging"] = true.into();
    v["iptables_c2c_logging"] = true.into();
    v["deny_networks"] = serde_json::json!({"always": ["172.16.0.0/12"], "running": ["192.168.0.0/16"], "staging": ["100.64.0.0/10"]});
    v["host_tcp_services"] = serde_json::json!(["169.254.0.2:9001"]);
    v["host_udp_services"] = serde_json::json!(["169.254.0.2:9003"]);
    v["dns_servers"] = serde_json::json!(["169.254.0.53", "8.8.8.8"]);
    v["outbound_connections"] = serde_json::json!({"limit": true, "logging": true, "burst": 1000, "rate_per_sec": 100, "dry_run": false});
    WrapperConfig::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
}

pub(crate) fn container(handle: &str, ip: &str, ports: &[(i64, i64)]) -> Container {
    Container {
        handle: handle.into(),
        ip: ip.parse().unwrap(),
        underlay_ifs: vec!["eth0".into()],
        port_mappings: ports
            .iter()
            .map(|&(h, c)| PortMapping {
                host_port: h,
                container_port: c,
            })
            .collect(),
        workload: "app".into(),
        masq_exclude: Some("10.255.0.0/16".into()),
    }
}

/// Saved text without the builtin chain declarations a payload never writes.
pub(crate) fn without_builtins(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .filter(|l| !(l.starts_with(':') && l.contains(" ACCEPT ")))
        .collect()
}

#[test]
fn example_a_payload_matches_the_saved_tables() {
    let cfg = WrapperConfig::parse(CONFIG_A.as_bytes()).unwrap();
    let o = RuleOptions::from_config(&cfg).unwrap();
    let c = container(
        "5f3c9a1e-7b2d-4c8e-6a91-0d4e",
        "10.255.30.2",
        &[(61000, 8080)],
    );
    let rules: Vec<asg::NetOutRule> = serde_json::from_str(
        r#"[{"networks":[{"end":"10.10.255.255","start":"10.10.0.0"}],"ports":[{"end":443,"start":443}],"protocol":1}]"#,
    )
    .unwrap();
    let asgs = asg::convert(&rules, asg::Family::V4, o.asg_logging).unwrap();
    let p = plan_add(&o, &c, Some(&asgs.rules)).unwrap();
    assert_eq!(
        normalize(&p.render()),
        without_builtins(normalize(EXAMPLE_A))
    );
    // Rule lines written for this container (the bench reports the same figure).
    assert_eq!(p.rule_count(), 23);
}

#[test]
fn example_c_filter_payload_matches_with_every_option_on() {
    let cfg = config_c();
    let o = RuleOptions::from_config(&cfg).unwrap();
    let c = container(
        "6a7b8c9d-0e1f-4a2b-7c3d-4e5f6a7b8c9d",
        "10.255.30.3",
        &[(61000, 8080), (61001, 61001)],
    );
    let rules: Vec<asg::NetOutRule> = serde_json::from_str(RULES_C).unwrap();
    let asgs = asg::convert(&rules, asg::Family::V4, o.asg_logging).unwrap();
    assert_eq!(asgs.dropped.len(), 2);
    let mut p = plan_add(&o, &c, Some(&asgs.rules)).unwrap();
    p.tables.retain(|t| t.table == Table::Filter);
    assert_eq!(
        normalize(&p.render()),
        without_builtins(normalize(EXAMPLE_C_FILTER))
    );
}

#[test]
fn example_b_wrapper_leaves_only_reject_in_dynamic_mode() {
    let cfg = WrapperConfig::parse(CONFIG_A.as_bytes()).unwrap();
    let o = RuleOptions::from_config(&cfg).unwrap();
    let c = container("7b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e", "10.255.30.4", &[]);
    let rules = netout_rules(&o, &c, None);
    assert_eq!(
        rules,
        vec![Rule::new(
            "netout--7b8c9d0e-1f2a-4b3c-8",
            "-j REJECT --reject-with icmp-port-unreachable"
        )]
    );
}

#[test]
fn del_plan_removes_everything_by_chain_name_even_without_ip() {
    let handle = "5f3c9a1e-7b2d-4c8e-6a91-0d4e";
    let p = plan_del(handle, None, EXAMPLE_A);
    let text = p.render();
    assert!(text.contains("-D INPUT -s 10.255.30.2/32 -j input--5f3c9a1e-7b2d-4c8e-6a\n"));
    assert!(text.contains("-D FORWARD -s 10.255.30.2/32 -o eth0 -j netout--5f3c9a1e-7b2d-4c8e-6\n"));
    assert!(text.contains(
        "-D POSTROUTING -s 10.255.30.2/32 ! -d 10.255.0.0/16 ! -o silk-vtep -j MASQUERADE\n"
    ));
    assert!(text.contains("-X netout--5f3c9a1e-7b2d-4--log\n"));
    assert_eq!(text.matches("-X netin--5f3c9a1e-7b2d-4c8e-6a").count(), 2);
    assert_eq!(p.rule_count(), 0);
    // nat commits first (one netlink probe wait per DEL with iptables-nft).
    assert!(text.starts_with("*nat\n"), "{text}");
    assert!(text.find("*mangle").unwrap() < text.find("*filter").unwrap());
    // Nothing left to remove: an empty payload.
    assert!(plan_del(handle, None, "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n").is_empty());
}

#[test]
fn del_keeps_a_chain_a_foreign_chain_still_references() {
    let saved = "*filter\n:FORWARD ACCEPT [0:0]\n:asg-abc - [0:0]\n:netout--abc - [0:0]\n:netout--abc--log - [0:0]\n\
                 -A FORWARD -s 10.255.30.2/32 -o eth0 -j netout--abc\n-A asg-abc -p tcp -g netout--abc--log\n\
                 -A netout--abc -j asg-abc\nCOMMIT\n";
    let text = plan_del("abc", None, saved).render();
    assert!(text.contains(":netout--abc--log - [0:0]\n"));
    assert!(!text.contains("-X netout--abc--log"));
    assert!(text.contains("-X netout--abc\n"));
}

#[test]
fn rejects_port_zero() {
    let cfg = WrapperConfig::parse(CONFIG_A.as_bytes()).unwrap();
    let o = RuleOptions::from_config(&cfg).unwrap();
    let c = container("h", "10.255.30.2", &[(0, 8080)]);
    assert_eq!(
        plan_add(&o, &c, None).unwrap_err().to_string(),
        "cannot allocate port 0"
    );
}

#[test]
fn ipv6_chains_use_icmp6_rejects_and_no_nat() {
    let cfg = config_c();
    let o = RuleOptions::from_config(&cfg).unwrap();
    let c = Container {
        ip: "2001:db8::5".parse().unwrap(),
        ..container("h6", "10.255.30.3", &[])
    };
    let text = plan_add_v6(&o, &c, Some(&[])).render();
    assert!(text.starts_with("*filter\n"));
    assert!(!text.contains("*nat"));
    assert!(text.contains("-A INPUT -s 2001:db8::5/128 -j input--h6\n"));
    assert!(text.contains(
        "-A overlay--h6 -d 2001:db8::5/128 -j REJECT --reject-with icmp6-port-unreachable\n"
    ));
    assert!(
        !text.contains("--dport 53"),
        "no DNS rules in the IPv6 input chain"
    );
}

#[test]
#[allow(clippy::unwrap_used)]
fn expected_del_mirrors_what_add_wrote() {
    let cfg = WrapperConfig::parse(CONFIG_A.as_bytes()).unwrap();
    let o = RuleOptions::from_config(&cfg).unwrap();
    let c = container(
        "5f3c9a1e-7b2d-4c8e-6a91-0d4e",
        "10.255.30.2",
        &[(61000, 8080)],
    );
    let text = plan_del_expected(&o, &c).render();
    let saved_del = plan_del("5f3c9a1e-7b2d-4c8e-6a91-0d4e", None, EXAMPLE_A).render();
    for line in saved_del.lines().filter(|l| l.starts_with("-D ")) {
        assert!(text.contains(line), "expected plan lacks {line}");
    }
    assert!(text.contains("-X netout--5f3c9a1e-7b2--rl-log\n"));
}

/// Two containers' chains and rules, as iptables-save prints them (abbreviated to what the
/// sweep looks at): `live` is still running, `gone` vanished without DEL, and a newer
/// container got `gone`'s old IP after a restart.
const TWO_CONTAINERS: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
:input--live - [0:0]\n:netout--live - [0:0]\n:overlay--live - [0:0]\n\
:input--gone - [0:0]\n:netout--gone - [0:0]\n:overlay--gone - [0:0]\n:netout--gone--log - [0:0]\n\
:asg-gone - [0:0]\n:vpa--1700000000 - [0:0]\n\
-A INPUT -s 10.255.30.2/32 -j input--live\n-A INPUT -s 10.255.30.3/32 -j input--gone\n\
-A FORWARD -s 10.255.30.2/32 -o eth0 -j netout--live\n-A FORWARD -s 10.255.30.3/32 -o eth0 -j netout--gone\n\
-A FORWARD -j overlay--live\n-A FORWARD -j overlay--gone\n-A FORWARD -j vpa--1700000000\n\
-A netout--gone -j asg-gone\n-A asg-gone -p tcp -g netout--gone--log\n\
-A input--live -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n\
*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:netin--live - [0:0]\n:netin--gone - [0:0]\n\
-A PREROUTING -j netin--live\n-A PREROUTING -j netin--gone\n\
-A POSTROUTING -s 10.255.30.2/32 ! -d 10.255.0.0/16 ! -o silk-vtep -j MASQUERADE\n\
-A POSTROUTING -s 10.255.30.3/32 ! -d 10.255.0.0/16 ! -o silk-vtep -j MASQUERADE\nCOMMIT\n";

#[test]
fn sweep_removes_only_the_chains_of_containers_that_are_gone() {
    let keep = chains_of(&["live".to_string()]);
    let text = plan_sweep(TWO_CONTAINERS, CONTAINER_CHAIN_PREFIXES, &keep).render();
    for gone in [
        "-D INPUT -s 10.255.30.3/32 -j input--gone\n",
        "-D FORWARD -s 10.255.30.3/32 -o eth0 -j netout--gone\n",
        "-D FORWARD -j overlay--gone\n",
        "-D PREROUTING -j netin--gone\n",
        "-D POSTROUTING -s 10.255.30.3/32 ! -d 10.255.0.0/16 ! -o silk-vtep -j MASQUERADE\n",
        "-X input--gone\n",
        "-X netout--gone\n",
        "-X overlay--gone\n",
        "-X netin--gone\n",
    ] {
        assert!(text.contains(gone), "sweep lacks {gone:?} in\n{text}");
    }
    assert!(
        !text.contains("live"),
        "a live container's rule is touched:\n{text}"
    );
    assert!(
        !text.contains("vpa--"),
        "a shared chain is touched:\n{text}"
    );
    // The ASG chain is the agent's: its target stays, flushed, for the agent's orphan cleanup.
    assert!(!text.contains("asg-gone"));
    assert!(text.contains(":netout--gone--log - [0:0]\n"));
    assert!(!text.contains("-X netout--gone--log"));
}

#[test]
fn sweep_keeps_the_masquerade_rule_of_a_live_container_that_reused_the_ip() {
    let saved = TWO_CONTAINERS.replace(
        "-s 10.255.30.3/32 -j input--gone",
        "-s 10.255.30.2/32 -j input--gone",
    );
    let keep = chains_of(&["live".to_string()]);
    let text = plan_sweep(&saved, CONTAINER_CHAIN_PREFIXES, &keep).render();
    assert!(text.contains("-X input--gone\n"));
    assert!(!text.contains("-D POSTROUTING -s 10.255.30.2/32"), "{text}");
}

#[test]
fn teardown_sweep_with_no_live_container_removes_asg_chains_too() {
    let prefixes: Vec<&str> = CONTAINER_CHAIN_PREFIXES
        .iter()
        .chain(ASG_CHAIN_PREFIXES)
        .copied()
        .collect();
    let text = plan_sweep(TWO_CONTAINERS, &prefixes, &[]).render();
    for chain in [
        "input--live",
        "input--gone",
        "asg-gone",
        "netout--gone--log",
        "netin--live",
    ] {
        assert!(
            text.contains(&format!("-X {chain}\n")),
            "{chain} stays:\n{text}"
        );
    }
    assert_eq!(text.matches("-j MASQUERADE").count(), 2);
    assert!(!text.contains("vpa--"));
    // Nothing of ours left: an empty payload.
    assert!(plan_sweep("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", &prefixes, &[]).is_empty());
}
