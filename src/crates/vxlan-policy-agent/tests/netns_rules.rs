//! Every rule shape the planner writes goes through real `iptables-restore` and comes back from
//! `iptables-save` exactly as planned (LOG with both limits, overlay ingress, the allow-overlay
//! rules of `disable_container_network_policy`), in a network namespace of the test's own.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure by design

use silk_core::policy::Policy;
use silk_dataplane::datastore::Entries;
use silk_dataplane::iptables::SystemIptables;
use silk_testkit::netns::{run_ok, unshare_test_netns};
use vxlan_policy_agent::enforcer::enforce;
use vxlan_policy_agent::planner::{allow_overlay_rules, local_containers, plan_rules, PlanOptions};

const STORE: &str = r#"{
  "b": {"handle": "b", "ip": "10.255.7.4", "metadata": {"policy_group_id": "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13", "ports": "8080,9443"}},
  "f": {"handle": "f", "ip": "10.255.7.3", "metadata": {"policy_group_id": "0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f"}}
}"#;

const POLICIES: &str = r#"[
  {"source": {"id": "0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f", "tag": "0001"},
   "destination": {"id": "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13", "tag": "0002", "protocol": "tcp", "ports": {"start": 8080, "end": 8080}}},
  {"source": {"id": "9e4d2c1b-6a5f-4e3d-8c2b-1a0f9e8d7c6b", "tag": "FFFF"},
   "destination": {"id": "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13", "tag": "0002", "protocol": "udp", "ports": {"start": 9000, "end": 9100}}}
]"#;

#[test]
#[ignore = "needs root: run via scripts/test"]
fn planned_rules_read_back_identically() {
    assert_eq!(
        std::env::var("SILK_TEST_ROOT").as_deref(),
        Ok("1"),
        "run via scripts/test"
    );
    unshare_test_netns().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let iptables = SystemIptables::new(dir.path().join("iptables.lock"));

    let entries: Entries = serde_json::from_str(STORE).unwrap();
    let policies: Vec<Policy> = serde_json::from_str(POLICIES).unwrap();
    let opts = PlanOptions {
        c2c_logging: true,
        accepted_udp_logs_per_sec: 100,
        ingress_tag: Some("0006".into()),
    };
    let rules = plan_rules(&local_containers(&entries), &policies, &opts).unwrap();
    let head = allow_overlay_rules(&[
        "10.255.0.0/16".parse().unwrap(),
        "10.250.0.0/16".parse().unwrap(),
    ]);
    assert_eq!(rules.len(), 7, "{rules:#?}");
    let chain = enforce(&iptables, 1729785226123456, &head, &rules).unwrap();

    let saved = run_ok(&["iptables-save", "-t", "filter"]).unwrap();
    let got: Vec<&str> = saved
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("-A {chain} ")))
        .collect();
    let want: Vec<&str> = head.iter().chain(&rules).map(String::as_str).collect();
    assert_eq!(got, want);
    assert_eq!(
        rules[3],
        r#"-d 10.255.7.4/32 -p udp -m udp --dport 9000:9100 -m mark --mark 0xffff -m limit --limit 100/sec --limit-burst 100 -j LOG --log-prefix "OK_FFFF_c3f1a2b4-77e0-4d2f-9 ""#
    );

    // A second enforcement replaces the chain in one restore: exactly one vpa chain remains.
    let next = enforce(&iptables, 1729785226123457, &[], &rules[..1]).unwrap();
    let saved = run_ok(&["iptables-save", "-t", "filter"]).unwrap();
    let vpa: Vec<&str> = saved.lines().filter(|l| l.contains("vpa--")).collect();
    assert_eq!(
        vpa,
        [
            format!(":{next} - [0:0]").as_str(),
            format!("-A FORWARD -j {next}").as_str(),
            format!("-A {next} {}", rules[0]).as_str(),
        ]
    );
}
