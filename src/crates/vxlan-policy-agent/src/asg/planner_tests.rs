//! The ASG planner against the golden fixtures and against a model of the kernel table: no
//! change writes nothing, one change rewrites one chain, drift is repaired, bad groups and the
//! orphan sweep never take a live container's chain away.

use std::collections::BTreeMap;

use serde_json::json;
use silk_core::asg::{SecurityGroup, SecurityGroupsResponse};
use silk_dataplane::datastore::{Container, Entries};
use silk_dataplane::iptables::egress::{DenyLists, EgressOptions, OutboundLimit};
use silk_dataplane::iptables::{Family, Payload};

use super::*;

const BACKEND: &str = "6f1e4f5a-1b2c-4d3e-8f9a-0b1c2d3e4f5a";
const STAGER: &str = "7b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e";
const SPACE: &str = "7d2c0e5a-9b1f-4a3c-8e6d-2f1a0b9c8d7e";
const ASG_B: &str = "asg-6f1e4f5a1b2c4d3e8f9a";
const NETOUT_B: &str = "netout--6f1e4f5a-1b2c-4d3e-8";
const REJECT: &str = "-j REJECT --reject-with icmp-port-unreachable";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/asg/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn groups() -> Vec<SecurityGroup> {
    serde_json::from_str::<SecurityGroupsResponse>(&fixture("security-groups.json"))
        .unwrap()
        .security_groups
}

fn entry(handle: &str, ip: &str, metadata: serde_json::Value) -> (String, Container) {
    (
        handle.to_string(),
        Container {
            handle: handle.into(),
            ip: ip.into(),
            ipv6: None,
            metadata,
        },
    )
}

fn app(handle: &str, ip: &str, space: &str, workload: &str) -> (String, Container) {
    entry(
        handle,
        ip,
        json!({"policy_group_id": format!("app-{handle}"), "space_id": space, "container_workload": workload}),
    )
}

/// A filter table in iptables-save form, chain name -> rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model(BTreeMap<String, Vec<String>>);

impl Model {
    /// What cni-wrapper-plugin leaves in dynamic mode: netout and its log chain.
    fn wired(handles: &[&str]) -> Model {
        let mut m = Model::default();
        for h in handles {
            m.0.insert(
                silk_dataplane::iptables::ChainName::netout(h).to_string(),
                vec![REJECT.into()],
            );
            m.0.insert(
                silk_dataplane::iptables::ChainName::netout_log(h).to_string(),
                vec!["-j ACCEPT".into()],
            );
        }
        m
    }

    fn save(&self) -> String {
        let mut out = String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n");
        for c in self.0.keys() {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        for (c, rules) in &self.0 {
            for r in rules {
                out.push_str(&format!("-A {c} {r}\n"));
            }
        }
        out.push_str("COMMIT\n");
        out
    }

    /// iptables-restore --noflush of a payload, as far as the planner uses it.
    fn restore(&mut self, p: &Payload) {
        for t in &p.tables {
            for c in &t.declare {
                self.0.insert(c.to_string(), vec![]);
            }
            for r in &t.delete {
                let rules = self.0.get_mut(&r.chain).expect("delete in a missing chain");
                let i = rules
                    .iter()
                    .position(|x| *x == r.spec)
                    .expect("delete of a missing rule");
                rules.remove(i);
            }
            for r in &t.append {
                self.0
                    .get_mut(&r.chain)
                    .expect("append to a missing chain")
                    .push(r.spec.clone());
            }
            for c in &t.remove {
                let name = c.to_string();
                assert!(
                    !self.0.iter().any(|(ch, rules)| *ch != name
                        && rules
                            .iter()
                            .any(|r| r.split_whitespace().any(|w| w == name))),
                    "-X {name} while referenced"
                );
                self.0.remove(&name);
            }
        }
    }
}

/// The backend in the example's space and another app container in a space of its own.
fn two_spaces() -> Entries {
    [
        app(BACKEND, "10.255.7.4", SPACE, "app"),
        app(STAGER, "10.255.7.5", "other-space", "app"),
    ]
    .into()
}

/// The periodic plan of `groups` for `entries` against `kernel`, IPv4.
fn plan_all(g: &[SecurityGroup], entries: &Entries, kernel: &Model, opts: &AsgOptions) -> AsgPlan {
    plan_asgs(g, entries, &kernel.save(), Family::V4, opts, Scope::All)
}

/// The forced sync of the backend with the fixture groups.
fn plan_forced(entries: &Entries, kernel: &Model, opts: &AsgOptions) -> AsgPlan {
    let scope = Scope::Container(BACKEND);
    plan_asgs(&groups(), entries, &kernel.save(), Family::V4, opts, scope)
}

/// A table wired for `handles` with the fixture groups' chains applied.
fn synced(handles: &[&str], entries: &Entries, opts: &AsgOptions) -> Model {
    let mut kernel = Model::wired(handles);
    kernel.restore(&plan_all(&groups(), entries, &kernel, opts).payload);
    kernel
}

fn logging_opts() -> AsgOptions {
    let v4 = EgressOptions {
        asg_logging: true,
        denied_logs_per_sec: 1,
        outbound: OutboundLimit {
            limit: true,
            logging: true,
            ..OutboundLimit::default()
        },
        deny: DenyLists {
            always: vec!["172.16.0.0/12".into()],
            running: vec!["192.168.0.0/16".into()],
            staging: vec!["100.64.0.0/10".into()],
        },
    };
    AsgOptions {
        v4,
        ..AsgOptions::default()
    }
}

#[test]
fn golden_worked_example() {
    let entries: Entries = [app(BACKEND, "10.255.7.4", SPACE, "app")].into();
    let saved = Model::wired(&[BACKEND]).save();
    let plan = plan_asgs(
        &groups(),
        &entries,
        &saved,
        Family::V4,
        &AsgOptions::default(),
        Scope::All,
    );
    assert_eq!(plan.payload.render(), fixture("worked-example.payload"));
    assert_eq!(plan.updated, vec![BACKEND]);
    assert!(plan.failed.is_empty() && plan.removed.is_empty());
}

#[test]
fn golden_logging_deny_networks_and_connection_limit() {
    let entries: Entries = [
        app(BACKEND, "10.255.7.4", SPACE, "app"),
        app(STAGER, "10.255.7.5", SPACE, "staging"),
    ]
    .into();
    let saved = Model::wired(&[BACKEND, STAGER]).save();
    let plan = plan_asgs(
        &groups(),
        &entries,
        &saved,
        Family::V4,
        &logging_opts(),
        Scope::All,
    );
    assert_eq!(plan.payload.render(), fixture("logging-deny-limit.payload"));
}

#[test]
fn no_change_writes_nothing_and_one_change_touches_one_chain() {
    let entries = two_spaces();
    let mut kernel = Model::wired(&[BACKEND, STAGER]);
    let mut g = groups();
    let opts = logging_opts();
    let plan = plan_all(&g, &entries, &kernel, &opts);
    kernel.restore(&plan.payload);
    let again = plan_all(&g, &entries, &kernel, &opts);
    assert!(again.payload.is_empty(), "{}", again.payload.render());

    // orders-db-access loses its icmp rule: only the backend's asg chain is rewritten.
    g[2].rules = g[2].rules.replace(
        r#",{"protocol":"icmp","destination":"0.0.0.0/0","ports":"","type":-1,"code":-1,"description":"","log":false}"#,
        "",
    );
    let one = plan_all(&g, &entries, &kernel, &opts);
    let t = &one.payload.tables[0];
    assert_eq!(
        t.declare.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        vec![ASG_B]
    );
    assert!(t.append.iter().all(|r| r.chain == ASG_B));
    assert!(!t.append.iter().any(|r| r.spec.contains("-p icmp")));
    kernel.restore(&one.payload);
    assert!(plan_all(&g, &entries, &kernel, &opts).payload.is_empty());
}

#[test]
fn chains_flushed_or_deleted_by_someone_else_come_back() {
    let entries: Entries = [app(BACKEND, "10.255.7.4", SPACE, "app")].into();
    let opts = AsgOptions::default();
    let kernel = synced(&[BACKEND], &entries, &opts);
    let good = kernel.clone();

    let mut flushed = good.clone();
    flushed.0.insert(ASG_B.into(), vec![]);
    let p = plan_all(&groups(), &entries, &flushed, &opts);
    flushed.restore(&p.payload);
    assert_eq!(flushed, good);

    // The wrapper's static rules or a lost jump in netout: the parent is rewritten.
    let mut parent = good.clone();
    parent.0.insert(
        NETOUT_B.into(),
        vec![
            "-m state --state RELATED,ESTABLISHED -j ACCEPT".into(),
            "-m iprange --dst-range 0.0.0.0-255.255.255.255 -j ACCEPT".into(),
            REJECT.into(),
        ],
    );
    parent.0.remove(ASG_B);
    let p = plan_all(&groups(), &entries, &parent, &opts);
    parent.restore(&p.payload);
    assert_eq!(parent, good);
}

#[test]
fn iptables_save_defaults_do_not_count_as_changes() {
    let entries: Entries = [app(BACKEND, "10.255.7.4", SPACE, "app")].into();
    let mut opts = logging_opts();
    opts.v4.denied_logs_per_sec = 5;
    let mut kernel = synced(&[BACKEND], &entries, &opts);
    // What iptables-save prints for burst 5 and an expire it considers the default.
    for r in kernel.0.get_mut(ASG_B).unwrap() {
        *r = r
            .replace(" --limit-burst 5 ", " ")
            .replace(" --hashlimit-htable-expire 10000", "");
    }
    assert!(plan_all(&groups(), &entries, &kernel, &opts)
        .payload
        .is_empty());
}

#[test]
fn a_malformed_group_keeps_its_containers_chains_and_spares_the_others() {
    let entries = two_spaces();
    let opts = AsgOptions::default();
    let mut kernel = synced(&[BACKEND, STAGER], &entries, &opts);
    let before = kernel.0.get(ASG_B).cloned().unwrap();

    let mut g = groups();
    g[2].rules = r#"[{"protocol":"tcp","destination":"10.0.11.0/33","ports":"80"}]"#.into();
    // And a global group change that concerns both containers.
    g[1].rules = r#"[{"protocol":"udp","destination":"0.0.0.0/0","ports":"53"}]"#.into();
    let plan = plan_all(&g, &entries, &kernel, &opts);
    assert_eq!(plan.failed.len(), 1);
    assert_eq!(plan.failed[0].0, BACKEND);
    assert!(
        plan.failed[0].1.to_string().contains("orders-db-access"),
        "{}",
        plan.failed[0].1
    );
    assert_eq!(plan.updated, vec![STAGER]);
    kernel.restore(&plan.payload);
    assert_eq!(kernel.0.get(ASG_B), Some(&before), "kept as it was");

    let mut g = groups();
    g[0].rules = "[{\"protocol\":".into();
    let plan = plan_all(&g, &entries, &kernel, &opts);
    assert_eq!(plan.failed.len(), 2, "a default group concerns both");
    assert!(plan.payload.is_empty());
}

#[test]
fn the_sweep_removes_only_chains_of_handles_gone_from_the_store() {
    let entries: Entries = [
        app(BACKEND, "10.255.7.4", SPACE, "app"),
        // In the store but not eligible (no space): its chain is not desired, but it is live.
        entry(
            "1b1b1b1b-1111-4111-8111-111111111111",
            "10.255.7.6",
            json!({"policy_group_id": "x"}),
        ),
    ]
    .into();
    let opts = AsgOptions::default();
    let mut kernel = synced(&[BACKEND], &entries, &opts);
    // The dead container: the wrapper flushed its log chain but could not remove it.
    kernel.0.insert("asg-0a0a0a0adead4bee8f00".into(), vec!["-p tcp -m iprange --dst-range 10.0.0.1-10.0.0.1 -m tcp --dport 1 -g netout--0a0a0a0a-dead-4--log".into(), REJECT.into()]);
    kernel
        .0
        .insert("netout--0a0a0a0a-dead-4--log".into(), vec![]);
    kernel.0.insert("casg-0a0a0a0adead4bee8f00".into(), vec![]);
    kernel
        .0
        .insert("asg-1b1b1b1b111141118111".into(), vec![REJECT.into()]);
    // Not ours.
    kernel.0.insert("asgard".into(), vec![]);
    let plan = plan_all(&groups(), &entries, &kernel, &opts);
    assert_eq!(
        plan.removed,
        vec![
            "asg-0a0a0a0adead4bee8f00",
            "casg-0a0a0a0adead4bee8f00",
            "netout--0a0a0a0a-dead-4--log"
        ]
    );
    kernel.restore(&plan.payload);
    assert!(kernel.0.contains_key("asg-1b1b1b1b111141118111"));
    assert!(kernel.0.contains_key("asgard") && kernel.0.contains_key(ASG_B));

    // A forced sync never sweeps.
    kernel.0.insert("asg-0a0a0a0adead4bee8f00".into(), vec![]);
    let one = plan_forced(&entries, &kernel, &opts);
    assert!(one.payload.is_empty());
}

#[test]
fn a_leftover_candidate_of_an_upstream_swap_is_removed() {
    let entries: Entries = [app(BACKEND, "10.255.7.4", SPACE, "app")].into();
    let opts = AsgOptions::default();
    let mut kernel = synced(&[BACKEND], &entries, &opts);
    let good = kernel.clone();
    kernel
        .0
        .insert("casg-6f1e4f5a1b2c4d3e8f9a".into(), vec![REJECT.into()]);
    kernel
        .0
        .get_mut(NETOUT_B)
        .unwrap()
        .insert(0, "-j casg-6f1e4f5a1b2c4d3e8f9a".into());
    let plan = plan_forced(&entries, &kernel, &opts);
    kernel.restore(&plan.payload);
    assert_eq!(kernel, good);
}

#[test]
fn cleanup_removes_the_handles_chains_and_its_log_chains() {
    let entries: Entries = [app(BACKEND, "10.255.7.4", SPACE, "app")].into();
    let mut kernel = synced(&[BACKEND], &entries, &AsgOptions::default());
    // CNI DEL: the store entry and netout are gone, the log chain flushed.
    kernel.0.remove(NETOUT_B);
    kernel
        .0
        .insert("netout--6f1e4f5a-1b2c-4--log".into(), vec![]);
    let plan = plan_cleanup(BACKEND, &Entries::new(), &kernel.save());
    assert_eq!(plan.removed, vec![ASG_B, "netout--6f1e4f5a-1b2c-4--log"]);
    kernel.restore(&plan.payload);
    assert!(kernel.0.is_empty(), "{kernel:?}");
    assert!(plan_cleanup(BACKEND, &Entries::new(), &kernel.save())
        .payload
        .is_empty());
}

#[test]
fn ipv6_chains_for_containers_with_an_ipv6_address() {
    let mut g = groups();
    g[1].rules = r#"[{"protocol":"udp","destination":"2001:db8::/120,8.8.8.8","ports":"53"},{"protocol":"icmp","destination":"::/0","type":-1,"code":-1}]"#.into();
    let (h, mut c) = app(BACKEND, "10.255.7.4", SPACE, "app");
    c.ipv6 = Some("2001:db8:1::2".into());
    let entries: Entries = [(h, c), app(STAGER, "10.255.7.5", SPACE, "app")].into();
    let opts = AsgOptions {
        v6: EgressOptions {
            deny: DenyLists {
                always: vec!["fd00::/8".into()],
                ..DenyLists::default()
            },
            ..EgressOptions::default()
        },
        head_v4: vec!["-s 10.255.0.0/16 -d 10.255.0.0/16 -j ACCEPT".into()],
        ..AsgOptions::default()
    };
    let plan = plan_asgs(
        &g,
        &entries,
        &Model::wired(&[BACKEND, STAGER]).save(),
        Family::V6,
        &opts,
        Scope::All,
    );
    assert_eq!(
        plan.updated,
        vec![BACKEND],
        "only the container with an IPv6 address"
    );
    let asg: Vec<&str> = plan.payload.tables[0]
        .append
        .iter()
        .filter(|r| r.chain == ASG_B)
        .map(|r| r.spec.as_str())
        .collect();
    assert_eq!(
        asg,
        vec![
            "-m state --state RELATED,ESTABLISHED -j ACCEPT",
            "-p tcp -m state --state INVALID -j DROP",
            "-d fd00::/8 -j REJECT --reject-with icmp6-port-unreachable",
            "-p ipv6-icmp -m iprange --dst-range ::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff -m icmp6 --icmpv6-type 255/255 -j ACCEPT",
            "-p udp -m iprange --dst-range 2001:db8::-2001:db8::ff -m udp --dport 53 -j ACCEPT",
            "-j REJECT --reject-with icmp6-port-unreachable",
        ]
    );
    // The IPv4 chain starts with the allow-overlay rule of disable_container_network_policy.
    let v4 = plan_asgs(
        &g,
        &entries,
        &Model::wired(&[BACKEND]).save(),
        Family::V4,
        &opts,
        Scope::All,
    );
    assert_eq!(
        v4.payload.tables[0].append[0].spec,
        "-s 10.255.0.0/16 -d 10.255.0.0/16 -j ACCEPT"
    );
}

#[test]
fn malformed_metadata_leaves_that_container_out_and_spares_the_others() {
    let entries: Entries = [
        app(BACKEND, "10.255.7.4", SPACE, "app"),
        entry(
            STAGER,
            "10.255.7.5",
            json!({"policy_group_id": 5, "space_id": ["x"], "container_workload": {}}),
        ),
        entry(
            "2c2c2c2c-2222-4222-8222-222222222222",
            "10.255.7.6",
            json!({"policy_group_id": "p", "space_id": SPACE, "container_workload": 7}),
        ),
    ]
    .into();
    let kernel = Model::wired(&[BACKEND, STAGER, "2c2c2c2c-2222-4222-8222-222222222222"]);
    let plan = plan_all(&groups(), &entries, &kernel, &AsgOptions::default());
    assert_eq!(
        plan.updated,
        vec![
            "2c2c2c2c-2222-4222-8222-222222222222".to_string(),
            BACKEND.to_string()
        ]
    );
    // A workload that is not a string grants no ASG rules: established, INVALID drop, REJECT.
    let rules: Vec<&str> = plan.payload.tables[0]
        .append
        .iter()
        .filter(|r| r.chain == "asg-2c2c2c2c222242228222")
        .map(|r| r.spec.as_str())
        .collect();
    assert_eq!(rules.len(), 3, "{rules:?}");
}

#[test]
fn containers_without_netout_or_space_are_left_alone() {
    let entries: Entries = [
        app(BACKEND, "10.255.7.4", SPACE, "app"),
        entry(
            STAGER,
            "10.255.7.5",
            json!({"policy_group_id": "x", "space_id": ""}),
        ),
    ]
    .into();
    let plan = plan_asgs(
        &groups(),
        &entries,
        &Model::default().save(),
        Family::V4,
        &AsgOptions::default(),
        Scope::All,
    );
    assert!(plan.payload.is_empty());
    assert_eq!(plan.without_netout, vec![BACKEND]);
    assert_eq!(space_guids(&asg_containers(&entries)), vec![SPACE]);
}
