//! Golden tests on live tables: the payloads of cni.md §4.15's examples are applied with
//! iptables-restore inside a fresh network namespace, read back with iptables-save and compared
//! (normalised) with the exact upstream text; the DEL plan then leaves empty tables.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures by design

use cni_wrapper_plugin::config::{PortMapping, WrapperConfig};
use cni_wrapper_plugin::netrules::{asg, plan_add, plan_del, Container, RuleOptions};
use silk_dataplane::iptables::save::normalize;
use silk_dataplane::iptables::{Family, Iptables, SystemIptables, Table};

const EXAMPLE_A: &str = include_str!("fixtures/example_a.save");
const EXAMPLE_C_FILTER: &str = include_str!("fixtures/example_c_filter.save");

const CONFIG_A: &str = r#"{
  "cniVersion": "1.0.0", "name": "cni-wrapper", "datastore": "/x/store.json", "iptables_lock_file": "/x/lock",
  "instance_address": "10.0.16.15", "no_masquerade_cidr_range": "10.255.0.0/16", "underlay_ips": ["10.0.16.15"],
  "iptables_denied_logs_per_sec": 1, "iptables_accepted_udp_logs_per_sec": 100, "ingress_tag": "ffff0000",
  "vtep_name": "silk-vtep", "policy_agent_force_poll_address": "127.0.0.1:8722", "dns_servers": ["169.254.0.53"],
  "delegate": {"name": "silk", "type": "silk-cni"}
}"#;

fn root_netns() -> (tempfile::TempDir, SystemIptables) {
    silk_testkit::require_root();
    silk_testkit::netns::unshare_test_netns().expect("unshare netns");
    let dir = tempfile::tempdir().unwrap();
    let ipt = SystemIptables::new(dir.path().join("iptables.lock"));
    (dir, ipt)
}

fn container(handle: &str, ip: &str, ports: &[(i64, i64)]) -> Container {
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

fn save_all(ipt: &SystemIptables) -> String {
    [Table::Mangle, Table::Filter, Table::Nat]
        .iter()
        .map(|t| ipt.save(Family::V4, Some(*t)).unwrap())
        .collect()
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn example_a_live_tables_match_and_del_leaves_them_empty() {
    let (_dir, ipt) = root_netns();
    let empty = normalize(&save_all(&ipt));
    let cfg = WrapperConfig::parse(CONFIG_A.as_bytes()).unwrap();
    let o = RuleOptions::from_config(&cfg).unwrap();
    let handle = "5f3c9a1e-7b2d-4c8e-6a91-0d4e";
    let c = container(handle, "10.255.30.2", &[(61000, 8080)]);
    let rules: Vec<asg::NetOutRule> = serde_json::from_str(
        r#"[{"networks":[{"end":"10.10.255.255","start":"10.10.0.0"}],"ports":[{"end":443,"start":443}],"protocol":1}]"#,
    )
    .unwrap();
    let asgs = asg::convert(&rules, asg::Family::V4, false).unwrap();
    let payload = plan_add(&o, &c, Some(&asgs.rules)).unwrap().render();
    {
        let _lock = ipt.lock().unwrap();
        ipt.restore(Family::V4, &payload).unwrap();
    }
    let live = save_all(&ipt);
    assert_eq!(normalize(&live), normalize(EXAMPLE_A));

    let del = plan_del(handle, None, &live);
    ipt.restore(Family::V4, &del.render()).unwrap();
    assert_eq!(
        normalize(&save_all(&ipt)),
        empty,
        "DEL must leave the tables as before ADD"
    );
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn example_c_live_filter_matches() {
    let (_dir, ipt) = root_netns();
    let mut v: serde_json::Value = serde_json::from_str(CONFIG_A).unwrap();
    v["iptables_asg_logging"] = true.into();
    v["iptables_c2c_logging"] = true.into();
    v["deny_networks"] = serde_json::json!({"always": ["172.16.0.0/12"], "running": ["192.168.0.0/16"], "staging": ["100.64.0.0/10"]});
    v["host_tcp_services"] = serde_json::json!(["169.254.0.2:9001"]);
    v["host_udp_services"] = serde_json::json!(["169.254.0.2:9003"]);
    v["dns_servers"] = serde_json::json!(["169.254.0.53", "8.8.8.8"]);
    v["outbound_connections"] =
        serde_json::json!({"limit": true, "logging": true, "burst": 1000, "rate_per_sec": 100});
    let cfg = WrapperConfig::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
    let o = RuleOptions::from_config(&cfg).unwrap();
    let c = container(
        "6a7b8c9d-0e1f-4a2b-7c3d-4e5f6a7b8c9d",
        "10.255.30.3",
        &[(61000, 8080), (61001, 61001)],
    );
    let rules: Vec<asg::NetOutRule> = serde_json::from_str(
        r#"[{"protocol":1,"networks":[{"start":"10.10.0.0","end":"10.10.255.255"}],"ports":[{"start":443,"end":443}],"log":true},
            {"protocol":2,"networks":[{"start":"8.8.8.8","end":"8.8.8.8"}],"ports":[{"start":53,"end":53}]},
            {"protocol":3,"networks":[{"start":"0.0.0.0","end":"255.255.255.255"}],"icmps":{"type":255,"code":255}},
            {"protocol":3,"networks":[{"start":"1.1.1.1","end":"1.1.1.1"}],"icmps":{"type":8}},
            {"networks":[{"start":"10.20.0.0","end":"10.20.0.255"}]},
            {"protocol":1,"networks":[{"start":"10.30.0.0","end":"10.30.0.255"}]},
            {"protocol":1,"networks":[{"start":"10.10.0.0","end":"10.10.255.255"}],"ports":[{"start":443,"end":443}],"log":true}]"#,
    )
    .unwrap();
    let asgs = asg::convert(&rules, asg::Family::V4, o.asg_logging).unwrap();
    let payload = plan_add(&o, &c, Some(&asgs.rules)).unwrap().render();
    ipt.restore(Family::V4, &payload).unwrap();
    let live = ipt.save(Family::V4, Some(Table::Filter)).unwrap();
    assert_eq!(normalize(&live), normalize(EXAMPLE_C_FILTER));
}
