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

use crate::config::tests::RENDERED as CONFIG;
use crate::config::Config;
use crate::enforcer::{chain_number, plan_kernel, Actual};
use crate::planner::tests::{store, BACKEND, POLICIES};
use crate::planner::{
    group_ids, local_containers, plan_c2c, plan_rules, C2cPlan, PlanError, PlanOptions,
};

const SAVED: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
    :vpa--1700000000123456 - [0:0]\n-A FORWARD -j vpa--1700000000123456\n\
    -A vpa--1700000000123456 -s 10.255.7.3/32 -j MARK --set-xmark 0x1/0xffffffff\nCOMMIT\n";

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn store_json() -> Value {
    serde_json::to_value(store()).unwrap()
}

/// Every key of the policies answer and of the store: the fields the generators hit.
fn keys() -> &'static [&'static str] {
    fuzz::keys_of(&Value::Array(vec![json(POLICIES), store_json()]))
}

/// The payload that brings `saved` to `plan`, and the `-A` lines it must hold: every chain
/// that differs from the saved one, in chain name order, with exactly its planned rules.
fn kernel_text(saved: &SavedTable, plan: &C2cPlan, now: u64) -> Option<(String, Vec<String>)> {
    let actual = Actual::from_saved(saved);
    let (main, payload) = plan_kernel(plan, &[], &actual, now).ok()?;
    let mut want = plan.groups.clone();
    want.insert(main.to_string(), plan.main.clone());
    let appended = want
        .iter()
        .filter(|(c, r)| actual.chains.get(c.as_str()) != Some(*r))
        .flat_map(|(c, rules)| rules.iter().map(move |r| format!("-A {c} {r}")))
        .collect();
    Some((payload.render(), appended))
}

fn opts(c2c_logging: bool, ingress_tag: Option<String>) -> PlanOptions {
    PlanOptions {
        c2c_logging,
        accepted_udp_logs_per_sec: 100,
        ingress_tag,
    }
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn any_policy_answer_and_store_plan_exactly_their_rules(
        policies in fuzz::json_input(json(POLICIES), keys()),
        store in prop_oneof![fuzz::mutated_json(store_json(), keys()), Just(store_json())],
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
        let opts = opts(logging, ingress_tag);
        let _ = plan_rules(&containers, &policies.policies, &opts);
        let plan = plan_c2c(&containers, &policies.policies, &opts);
        let saved = SavedTable::parse(&saved, silk_dataplane::iptables::Table::Filter);
        let Some((text, appended)) = kernel_text(&saved, &plan, now) else {
            return Ok(());
        };
        fuzz::check_restore_text(&text, &appended).map_err(TestCaseError::fail)?;
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
    fn any_config_parses_or_lists_its_problems(text in fuzz::config_text(CONFIG)) {
        let _ = Config::parse(&text);
    }
}

/// Plain unit tests with the minimal inputs the properties above found.
mod regressions {
    use super::*;

    /// Plans the §1.3 policies with one field replaced, against the §3.12 cell.
    fn plan_with(pointer: &str, value: &str) -> Result<Vec<String>, PlanError> {
        let mut v = json(POLICIES);
        *v.pointer_mut(pointer).unwrap() = Value::String(value.into());
        let policies: PoliciesResponse = serde_json::from_value(v).unwrap();
        plan_rules(
            &local_containers(&store()),
            &policies.policies,
            &opts(true, None),
        )
    }

    /// The payload of `rules` as one main chain (upstream's flat layout) on the saved table.
    fn swap_text(rules: &[String]) -> (String, Vec<String>) {
        let saved = SavedTable::parse(SAVED, silk_dataplane::iptables::Table::Filter);
        let plan = C2cPlan {
            main: rules.to_vec(),
            ..C2cPlan::default()
        };
        kernel_text(&saved, &plan, 1_800_000_000_000_000).unwrap()
    }

    /// A policy's protocol, or an id or tag text with a quote or newline, from the policy server
    /// went into the restore payload as written: `"tcp\n-A FORWARD -j ACCEPT"` added a rule of
    /// its own. Protocols must be tcp or udp now; ids are written safely into comments and
    /// log prefixes.
    #[test]
    fn policy_texts_cannot_add_lines_to_the_payload() {
        let e = plan_with(
            "/policies/0/destination/protocol",
            "tcp\n-A FORWARD -j ACCEPT",
        )
        .unwrap_err();
        assert!(e.to_string().contains("want tcp or udp"), "{e}");
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
        let mut entries = store_json();
        entries[BACKEND]["metadata"]["policy_group_id"] = "c3f1\"x\n-A FORWARD -j ACCEPT".into();
        let policies: PoliciesResponse = serde_json::from_value(v).unwrap();
        let entries: Entries = serde_json::from_value(entries).unwrap();
        let rules = plan_rules(
            &local_containers(&entries),
            &policies.policies,
            &opts(true, None),
        )
        .unwrap();
        assert!(rules.iter().any(|r| r.contains("--comment \"src:0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f_dst:c3f1_x_-A_FORWARD_-j_ACCEPT\"")), "{rules:#?}");
        let (text, appended) = swap_text(&rules);
        fuzz::check_restore_text(&text, &appended).unwrap();
    }
}
