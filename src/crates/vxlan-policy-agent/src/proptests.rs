//! Property tests of vxlan-policy-agent's outside inputs: the policy server's responses (the
//! policies body and `policies_last_updated`), the container metadata store it plans from,
//! the live filter table it swaps the chain into, and its config file. Every input gets a
//! plan or an error, never a panic; every planned swap renders exactly the planned rules, so
//! nothing a policy server or a store entry says can add a line of its own to the payload.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use proptest::prelude::*;
use serde_json::Value;
use silk_core::policy::PoliciesResponse;
use silk_dataplane::datastore::Entries;
use silk_dataplane::iptables::SavedTable;
use silk_testkit::fuzz;

use crate::config::Config;
use crate::enforcer::{chain_number, plan_swap};
use crate::planner::{group_ids, local_containers, plan_rules, PlanOptions};

const POLICIES: &str = r#"{
  "total_policies": 3,
  "policies": [
    {"source": {"id": "0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f", "tag": "0001"},
     "destination": {"id": "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13", "tag": "0002",
                     "protocol": "tcp", "ports": {"start": 8080, "end": 8080}}},
    {"source": {"id": "9e4d2c1b-6a5f-4e3d-8c2b-1a0f9e8d7c6b", "tag": "0003"},
     "destination": {"id": "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13", "tag": "0002",
                     "protocol": "udp", "ports": {"start": 9000, "end": 9100}}},
    {"source": {"id": "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13", "tag": "0002"},
     "destination": {"id": "0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f", "tag": "0001",
                     "protocol": "tcp", "ports": {"start": 5432, "end": 5432}}}
  ]
}"#;

const STORE: &str = r#"{
  "h-backend": {"handle": "h-backend", "ip": "10.255.7.4", "ipv6": "",
    "metadata": {"policy_group_id": "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13", "space_id": "sp1", "ports": "8080, 9000"}},
  "h-frontend": {"handle": "h-frontend", "ip": "10.255.7.3",
    "metadata": {"policy_group_id": "0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f", "space_id": "sp1"}}
}"#;

const SAVED: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
    :vpa--1700000000123456 - [0:0]\n-A FORWARD -j vpa--1700000000123456\n\
    -A vpa--1700000000123456 -s 10.255.7.3/32 -j MARK --set-xmark 0x1/0xffffffff\nCOMMIT\n";

const KEYS: &[&str] = &[
    "total_policies",
    "policies",
    "source",
    "destination",
    "id",
    "tag",
    "protocol",
    "ports",
    "start",
    "end",
    "handle",
    "ip",
    "metadata",
    "policy_group_id",
    "space_id",
];

const CONFIG: &str = r#"{
  "poll_interval": 5, "cni_datastore_path": "/var/vcap/data/container-metadata/store.json",
  "policy_server_url": "https://policy-server.service.cf.internal:4003",
  "vni": 1, "metron_address": "127.0.0.1:3457", "ca_cert_file": "/c/ca.crt",
  "client_cert_file": "/c/client.crt", "client_key_file": "/c/client.key",
  "iptables_lock_file": "/var/vcap/data/garden-cni/iptables.lock", "debug_server_host": "127.0.0.1",
  "debug_server_port": 8721, "log_level": "info", "log_prefix": "cfnetworking",
  "iptables_c2c_logging": true, "iptables_accepted_udp_logs_per_sec": 100,
  "enable_overlay_ingress_rules": true, "force_policy_poll_cycle_host": "127.0.0.1",
  "force_policy_poll_cycle_port": 8722, "disable_container_network_policy": false,
  "overlay_network": "10.255.0.0/16", "enable_asg_syncing": false,
  "client_timeout_seconds": 5, "underlay_ips": ["10.0.16.15"]
}"#;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn any_policy_answer_and_store_plan_exactly_their_rules(
        policies in fuzz::json_input(json(POLICIES), KEYS),
        store in prop_oneof![fuzz::mutated_json(json(STORE), KEYS), Just(json(STORE))],
        saved in prop_oneof![Just(SAVED.to_string()), fuzz::text_or_mutated(SAVED)],
        logging in any::<bool>(),
        ingress_tag in proptest::option::of(prop_oneof![Just("ffff0000".to_string()), fuzz::interesting_string()]),
        now in any::<u64>(),
    ) {
        let Ok(policies) = serde_json::from_slice::<PoliciesResponse>(&policies) else {
            return Ok(());
        };
        let Ok(entries) = serde_json::from_value::<Entries>(store) else {
            return Ok(());
        };
        let containers = local_containers(&entries);
        let _ = group_ids(&containers);
        let opts = PlanOptions { c2c_logging: logging, accepted_udp_logs_per_sec: 100, ingress_tag };
        let Ok(rules) = plan_rules(&containers, &policies.policies, &opts) else {
            return Ok(());
        };
        let saved = SavedTable::parse(&saved, silk_dataplane::iptables::Table::Filter);
        let Ok((chain, payload)) = plan_swap(&saved, now, &[], &rules) else {
            return Ok(());
        };
        let appended: Vec<String> = rules.iter().map(|r| format!("-A {chain} {r}")).collect();
        fuzz::check_restore_text(&payload.render(), &appended).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn any_last_updated_answer_is_a_number_or_an_error(body in fuzz::bytes_or_mutated(b"1700000000123456789")) {
        let _ = serde_json::from_slice::<i64>(&body);
    }

    #[test]
    fn vpa_chain_names_parse_back(n in 1_000_000_000u64..10_000_000_000_000_000, junk in fuzz::interesting_string()) {
        prop_assert_eq!(chain_number(&format!("vpa--{n}")), Some(n));
        let _ = chain_number(&junk);
    }

    #[test]
    fn any_config_parses_or_lists_its_problems(text in prop_oneof![
        fuzz::json_input(json(CONFIG), &["poll_interval", "vni", "overlay_network", "underlay_ips", "log_level",
            "debug_server_port", "client_timeout_seconds", "iptables_accepted_udp_logs_per_sec"])
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        fuzz::text_or_mutated(CONFIG),
    ]) {
        let _ = Config::parse(&text);
    }
}

/// Plain unit tests with the minimal inputs the properties above found.
mod regressions {
    use super::*;

    /// Plans the §1.3 policies with one field of the first policy replaced, against the store.
    fn plan_with(pointer: &str, value: &str) -> Result<Vec<String>, crate::planner::PlanError> {
        let mut v = json(POLICIES);
        *v.pointer_mut(pointer).unwrap() = Value::String(value.into());
        let policies: PoliciesResponse = serde_json::from_value(v).unwrap();
        let entries: Entries = serde_json::from_str(STORE).unwrap();
        let opts = PlanOptions {
            c2c_logging: true,
            accepted_udp_logs_per_sec: 100,
            ingress_tag: None,
        };
        plan_rules(&local_containers(&entries), &policies.policies, &opts)
    }

    fn swap_text(rules: &[String]) -> (String, Vec<String>) {
        let saved = SavedTable::parse(SAVED, silk_dataplane::iptables::Table::Filter);
        let (chain, payload) = plan_swap(&saved, 1_800_000_000_000_000, &[], rules).unwrap();
        let appended = rules.iter().map(|r| format!("-A {chain} {r}")).collect();
        (payload.render(), appended)
    }

    /// A policy's protocol, or an id or tag text with a quote or newline, from the policy server
    /// went into the restore payload as written: `"tcp\n-A FORWARD -j ACCEPT"` added a rule of
    /// its own. Protocols must be a protocol name now; ids are written safely into comments and
    /// log prefixes.
    #[test]
    fn policy_texts_cannot_add_lines_to_the_payload() {
        let e = plan_with(
            "/policies/0/destination/protocol",
            "tcp\n-A FORWARD -j ACCEPT",
        )
        .unwrap_err();
        assert!(e.to_string().contains("invalid protocol"), "{e}");
        for (pointer, value) in [
            ("/policies/0/source/id", "0a9d7c2e\"\n-A FORWARD -j ACCEPT"),
            (
                "/policies/0/destination/id",
                "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13",
            ),
            (
                "/policies/2/destination/id",
                "0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f",
            ),
        ] {
            let rules = plan_with(pointer, value).unwrap();
            let (text, appended) = swap_text(&rules);
            fuzz::check_restore_text(&text, &appended).unwrap();
        }
        // A destination id with a quote and a newline reaches the comment and the log prefix.
        let mut v = json(POLICIES);
        for p in ["/policies/0/destination/id", "/policies/1/destination/id"] {
            *v.pointer_mut(p).unwrap() = "c3f1\"x\n-A FORWARD -j ACCEPT".into();
        }
        let mut entries: Value = json(STORE);
        entries["h-backend"]["metadata"]["policy_group_id"] =
            "c3f1\"x\n-A FORWARD -j ACCEPT".into();
        let policies: PoliciesResponse = serde_json::from_value(v).unwrap();
        let entries: Entries = serde_json::from_value(entries).unwrap();
        let opts = PlanOptions {
            c2c_logging: true,
            accepted_udp_logs_per_sec: 100,
            ingress_tag: None,
        };
        let rules = plan_rules(&local_containers(&entries), &policies.policies, &opts).unwrap();
        assert!(rules.iter().any(|r| r.contains("--comment \"src:0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f_dst:c3f1_x_-A_FORWARD_-j_ACCEPT\"")), "{rules:#?}");
        let (text, appended) = swap_text(&rules);
        fuzz::check_restore_text(&text, &appended).unwrap();
    }
}
