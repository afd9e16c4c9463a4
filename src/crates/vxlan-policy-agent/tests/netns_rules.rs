//! Every rule shape the planner writes goes through real `iptables-restore` and comes back from
//! `iptables-save` exactly as planned (LOG with both limits, overlay ingress, the allow-overlay
//! rules of `disable_container_network_policy`), in a network namespace of the test's own.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure by design

use silk_core::policy::Policy;
use silk_dataplane::datastore::Entries;
use silk_dataplane::iptables::SystemIptables;
use silk_testkit::netns::{enter_root_test_netns, run_ok};
use vxlan_policy_agent::enforcer::Enforcer;
use vxlan_policy_agent::planner::{
    allow_overlay_rules, local_containers, plan_c2c, plan_rules, PlanOptions,
};

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
    enter_root_test_netns();
    let dir = tempfile::tempdir().unwrap();
    let iptables = SystemIptables::new(dir.path().join("iptables.lock"));

    let entries: Entries = serde_json::from_str(STORE).unwrap();
    let policies: Vec<Policy> = serde_json::from_str(POLICIES).unwrap();
    let opts = PlanOptions {
        c2c_logging: true,
        accepted_udp_logs_per_sec: 100,
        ingress_tag: Some("0006".into()),
    };
    let containers = local_containers(&entries);
    let flat = plan_rules(&containers, &policies, &opts).unwrap();
    let plan = plan_c2c(&containers, &policies, &opts);
    assert_eq!(plan.flatten(), flat);
    let head = allow_overlay_rules(&[
        "10.255.0.0/16".parse().unwrap(),
        "10.250.0.0/16".parse().unwrap(),
    ]);
    assert_eq!(flat.len(), 7, "{flat:#?}");
    let mut enforcer = Enforcer::default();
    let done = enforcer
        .enforce(&iptables, 1729785226123456, &head, &plan)
        .unwrap();
    assert_eq!((done.rewritten, done.read), (2, true));
    let chain = done.chain;
    assert_eq!(chain, "vpa--1729785226123456");

    let rules_of = |c: &str| -> Vec<String> {
        let saved = run_ok(&["iptables-save", "-t", "filter"]).unwrap();
        saved
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("-A {c} ")))
            .map(str::to_string)
            .collect()
    };
    let want: Vec<String> = head.iter().chain(&plan.main).cloned().collect();
    assert_eq!(rules_of(&chain), want);
    let (group, group_rules) = plan.groups.iter().next().unwrap();
    assert_eq!(&rules_of(group), group_rules);
    assert_eq!(
        group_rules[2],
        r#"-p udp -m udp --dport 9000:9100 -m mark --mark 0xffff -m limit --limit 100/sec --limit-burst 100 -j LOG --log-prefix "OK_FFFF_c3f1a2b4-77e0-4d2f-9 ""#
    );
    assert_eq!(rules_of("FORWARD"), [format!("-j {chain}")]);

    // What iptables-save prints equals the plan: a fresh enforcer reads and writes nothing,
    // and the first one knows the state from the generation without reading.
    let again = Enforcer::default()
        .enforce(&iptables, 1729785226123457, &head, &plan)
        .unwrap();
    assert_eq!((again.rewritten, again.read), (0, true));
    let cached = enforcer
        .enforce(&iptables, 1729785226123457, &head, &plan)
        .unwrap();
    assert_eq!((cached.rewritten, cached.read), (0, false), "generation");

    // Someone else flushes the group chain, removes the jump and inserts a rule above it:
    // one enforcement puts everything back.
    run_ok(&["iptables", "-F", group]).unwrap();
    run_ok(&["iptables", "-D", "FORWARD", "-j", &chain]).unwrap();
    run_ok(&["iptables", "-I", "FORWARD", "1", "-j", "ACCEPT"]).unwrap();
    let fixed = enforcer
        .enforce(&iptables, 1729785226123458, &head, &plan)
        .unwrap();
    assert_eq!((fixed.rewritten, fixed.read), (1, true));
    assert_eq!(&rules_of(group), group_rules);
    assert_eq!(
        rules_of("FORWARD"),
        [format!("-j {chain}"), "-j ACCEPT".into()]
    );

    // The group's container is gone: its jump and chain go in the same restore; the main
    // chain keeps its name.
    let fewer = plan_c2c(&containers[..1], &policies, &opts);
    assert!(fewer.groups.is_empty());
    let done = enforcer
        .enforce(&iptables, 1729785226123459, &[], &fewer)
        .unwrap();
    assert_eq!(done.chain, chain);
    let saved = run_ok(&["iptables-save", "-t", "filter"]).unwrap();
    let vpa: Vec<&str> = saved.lines().filter(|l| l.contains("vpa-")).collect();
    assert_eq!(
        vpa,
        [
            format!(":{chain} - [0:0]").as_str(),
            format!("-A FORWARD -j {chain}").as_str(),
            format!("-A {chain} {}", fewer.main[0]).as_str(),
        ]
    );
}
