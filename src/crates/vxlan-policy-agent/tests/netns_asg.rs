//! Dynamic ASG syncing through the real binary, against the lab policy server (silk-lab: the
//! internal API over mutual TLS from a file, paginated answers, `security_groups_last_updated`,
//! fault injection) and real iptables, in a network namespace of the test's own: chains as the planner writes them read back identically, the
//! periodic poll repairs chains flushed or deleted by someone else and applies group changes,
//! every fault (500, malformed JSON, a page missing mid-pagination, server down) keeps the
//! rules and is counted and logged, and the agent recovers by itself.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure by design

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::json;
use silk_dataplane::datastore::MetadataStore;
use silk_lab::policy_server::data::{FileRules, FileSecurityGroup, PolicyFile};
use silk_lab::policy_server::{
    write_file, Fault, FaultKind, LabPolicyServer, Route, ServerOptions,
};
use silk_testkit::certs::{ServerKey, TestCerts};
use silk_testkit::netns::{enter_root_test_netns, run_ok};

const ASG_BACKEND: &str = "asg-6f1e4f5a1b2c4d3e8f9a";
const NETOUT_BACKEND: &str = "netout--6f1e4f5a-1b2c-4d3e-8";
const ASG_FRONTEND: &str = "asg-1d2e3f4a5b6c4d7e8f90";
const REJECT: &str = "-j REJECT --reject-with icmp-port-unreachable";

fn fixture_groups() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/asg/security-groups.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["security_groups"].as_array().unwrap().clone()
}

/// The lab server's file: no policies, the fixture's groups with their `rules` strings as
/// given; `bound` says whether orders-db-access is bound to the example's space.
fn lab_file(bound: bool) -> PolicyFile {
    let mut groups: Vec<FileSecurityGroup> = fixture_groups()
        .into_iter()
        .map(|g| FileSecurityGroup {
            guid: g["guid"].as_str().unwrap().into(),
            name: g["name"].as_str().unwrap().into(),
            rules: FileRules::Raw(g["rules"].as_str().unwrap().into()),
            staging_default: g["staging_default"].as_bool().unwrap(),
            running_default: g["running_default"].as_bool().unwrap(),
            staging_space_guids: vec![],
            running_space_guids: vec![SPACE.into()],
        })
        .collect();
    for g in &mut groups {
        if g.running_default || !bound {
            g.running_space_guids.clear();
        }
    }
    PolicyFile {
        policies: vec![],
        security_groups: groups,
    }
}

fn lab_server(certs: &TestCerts, file: &Path, page_size: Option<usize>) -> LabPolicyServer {
    LabPolicyServer::start(ServerOptions {
        page_size,
        ..ServerOptions::loopback(certs, file)
    })
    .unwrap()
}

/// Starts the agent with ASG syncing on against `server`, the config keys of `patch` set, and
/// waits for its force server. Returns the agent, the force port and the debug port.
fn start_agent(
    dir: &Path,
    certs: &TestCerts,
    server: &LabPolicyServer,
    patch: serde_json::Value,
    log: Option<&Path>,
) -> (Agent, u16, u16) {
    let (force_port, debug_port) = (free_port(), free_port());
    let port = server.addr().port();
    let config = write_config(dir, certs, port, force_port, debug_port);
    patch_config(&config, json!({"enable_asg_syncing": true}));
    patch_config(&config, patch);
    let mut agent = Agent::spawn_logged(&config, log);
    wait_for("the force server", Duration::from_secs(20), || {
        assert!(agent.running(), "agent exited");
        std::net::TcpStream::connect(("127.0.0.1", force_port)).is_ok()
    });
    (agent, force_port, debug_port)
}

/// The `-A <chain> ...` lines of `chain` in `iptables-save -t filter`.
fn chain_rules(chain: &str) -> Vec<String> {
    let prefix = format!("-A {chain} ");
    run_ok(&["iptables-save", "-t", "filter"])
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

fn chain_exists(chain: &str) -> bool {
    run_ok(&["iptables-save", "-t", "filter"])
        .unwrap()
        .lines()
        .any(|l| {
            l.strip_prefix(':')
                .and_then(|d| d.split_whitespace().next())
                == Some(chain)
        })
}

/// What cni-wrapper-plugin leaves for a container in dynamic mode.
fn wire(handle: &str) {
    let netout = silk_dataplane::iptables::ChainName::netout(handle).to_string();
    let log = silk_dataplane::iptables::ChainName::netout_log(handle).to_string();
    run_ok(&["iptables", "-N", &netout]).unwrap();
    run_ok(&["iptables", "-A", &netout, "-j", "REJECT"]).unwrap();
    run_ok(&["iptables", "-N", &log]).unwrap();
    run_ok(&["iptables", "-A", &log, "-j", "ACCEPT"]).unwrap();
}

/// The golden asg chain of the worked example (fixture `worked-example.payload`).
fn golden_backend() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/asg/worked-example.payload"
    ))
    .unwrap();
    let prefix = format!("-A {ASG_BACKEND} ");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

fn metric(debug_port: u16, name: &str) -> f64 {
    let (_, body) = http_get(debug_port, "/metrics");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name || k.starts_with(&format!("{name}{{"))).then(|| v.parse().ok())?
        })
        .unwrap_or(0.0)
}

fn log_has(log: &Path, event: &str, text: &str) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .any(|l| {
            l.contains(&format!(
                "\"message\":\"cfnetworking.vxlan-policy-agent.{event}\""
            )) && l.contains(text)
        })
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn asg_chains_are_synced_repaired_and_kept_through_faults() {
    enter_root_test_netns();
    let certs = TestCerts::generate(ServerKey::Ecdsa).unwrap();
    let dir = tempfile::tempdir().unwrap();
    store_two_containers(dir.path());
    wire(BACKEND);
    wire(FRONTEND);

    let file = dir.path().join("policies.json");
    write_file(&file, &lab_file(true)).unwrap();
    let server = lab_server(&certs, &file, Some(1));
    let log = dir.path().join("agent.log");
    let patch = json!({"asg_poll_interval": 1, "poll_interval": 30});
    let (mut agent, force_port, debug_port) =
        start_agent(dir.path(), &certs, &server, patch, Some(&log));

    // The wrapper's calls: exact paths, 400 without a container.
    assert_eq!(
        http_get(force_port, "/force-asgs-for-container"),
        (400, "no container specified".into())
    );
    assert_eq!(
        http_get(
            force_port,
            &format!("/force-asgs-for-container?container={BACKEND}")
        ),
        (200, format!("updated container {BACKEND}"))
    );
    assert_eq!(chain_rules(ASG_BACKEND), golden_backend());
    assert_eq!(
        chain_rules(NETOUT_BACKEND),
        vec![format!("-j {ASG_BACKEND}"), REJECT.to_string()]
    );
    let requests = server.requests();
    assert!(
        requests.contains(&format!(
            "GET /networking/v1/internal/security_groups?per_page=5000&space_guids={SPACE}"
        )),
        "{requests:?}"
    );
    assert!(
        requests.contains(&format!(
            "GET /networking/v1/internal/security_groups?per_page=5000&space_guids={SPACE}&from=2"
        )),
        "pages followed: {requests:?}"
    );

    // The periodic poll syncs the other container too.
    wait_for("the frontend's chain", Duration::from_secs(20), || {
        chain_exists(ASG_FRONTEND)
    });

    // Someone flushes one chain and deletes the jump of the other: back within a poll.
    run_ok(&["iptables", "-F", ASG_BACKEND]).unwrap();
    run_ok(&["iptables", "-F", "netout--1d2e3f4a-5b6c-4d7e-8"]).unwrap();
    wait_for("repaired chains", Duration::from_secs(20), || {
        chain_rules(ASG_BACKEND) == golden_backend()
            && chain_rules("netout--1d2e3f4a-5b6c-4d7e-8")
                == vec![format!("-j {ASG_FRONTEND}"), REJECT.to_string()]
    });

    // A group change applies within a poll: orders-db-access no longer bound to the space.
    write_file(&file, &lab_file(false)).unwrap();
    wait_for("the changed chain", Duration::from_secs(20), || {
        !chain_rules(ASG_BACKEND)
            .iter()
            .any(|r| r.contains("10.0.11.0"))
    });
    let current = chain_rules(ASG_BACKEND);

    // Each fault: the rules stay, a counter and a log line say so, and the agent recovers.
    let groups_only = |kind| Fault {
        kind,
        routes: vec![Route::SecurityGroups],
    };
    for (fault, text) in [
        (groups_only(FaultKind::Error500), "database read failed"),
        (
            groups_only(FaultKind::MalformedJson),
            "decode response body",
        ),
        (groups_only(FaultKind::MissingPage), "http status 500"),
        (Fault::all(FaultKind::Down), "get security groups"),
    ] {
        let failures = metric(debug_port, "asgPollFailures");
        server.set_fault(fault.clone()).unwrap();
        // A change the agent must not apply while the fault lasts.
        write_file(&file, &lab_file(true)).unwrap();
        wait_for("a counted failure", Duration::from_secs(20), || {
            metric(debug_port, "asgPollFailures") >= failures + 2.0
        });
        assert!(
            log_has(&log, "asg-poll-cycle", text),
            "{fault:?}: no log line with {text:?}"
        );
        assert_eq!(chain_rules(ASG_BACKEND), current, "{fault:?}: rules kept");
        assert!(agent.running());
        server.set_fault(Fault::none()).unwrap();
        wait_for("recovery", Duration::from_secs(20), || {
            chain_rules(ASG_BACKEND) == golden_backend()
        });
        write_file(&file, &lab_file(false)).unwrap();
        wait_for("the change again", Duration::from_secs(20), || {
            chain_rules(ASG_BACKEND) == current
        });
    }

    // CNI DEL of the frontend: store entry and netout go, the log chain is flushed, then the
    // cleanup call removes the asg chain and the log chain.
    MetadataStore::new(dir.path().join("store.json"), None)
        .delete(FRONTEND)
        .unwrap();
    run_ok(&["iptables", "-F", "netout--1d2e3f4a-5b6c-4d7e-8"]).unwrap();
    run_ok(&["iptables", "-X", "netout--1d2e3f4a-5b6c-4d7e-8"]).unwrap();
    run_ok(&["iptables", "-F", "netout--1d2e3f4a-5b6c-4--log"]).unwrap();
    assert_eq!(
        http_get(
            force_port,
            &format!("/force-orphaned-asgs-cleanup?container={FRONTEND}")
        ),
        (200, format!("cleaned up ASGs for container {FRONTEND}"))
    );
    assert!(!chain_exists(ASG_FRONTEND));
    assert!(!chain_exists("netout--1d2e3f4a-5b6c-4--log"));
    // A live container's chains are refused.
    assert_eq!(
        http_get(
            force_port,
            &format!("/force-orphaned-asgs-cleanup?container={BACKEND}")
        )
        .0,
        500
    );
    assert_eq!(chain_rules(ASG_BACKEND), current);

    // An orphan of a handle no entry names is swept by the poll.
    run_ok(&["iptables", "-N", "asg-0a0a0a0adead4bee8f00"]).unwrap();
    wait_for("the sweep", Duration::from_secs(20), || {
        !chain_exists("asg-0a0a0a0adead4bee8f00")
    });
    for name in [
        "asgTotalPollTime",
        "asgIptablesEnforceTime",
        "policyServerASGPollTime",
    ] {
        assert!(
            http_get(debug_port, "/metrics").1.contains(name),
            "{name} missing from /metrics"
        );
    }
    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(chain_rules(ASG_BACKEND), current, "rules stay after exit");
}

/// Acceptance: cf-deployment's properties (ASG syncing on by default, loggregator v2 on) render
/// through the job template's tera twin, and the agent starts with that file and syncs. Only the
/// policy server address (the fake server) and the BOSH root (a temp dir) differ; the ports are
/// the job defaults, free in the test's own namespace.
#[test]
#[ignore = "needs root: run via scripts/test"]
fn cf_deployment_defaults_render_start_and_sync() {
    enter_root_test_netns();
    let certs = TestCerts::generate(ServerKey::Ecdsa).unwrap();
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("policies.json");
    write_file(&file, &lab_file(true)).unwrap();
    let server = lab_server(&certs, &file, None);

    // cf-deployment.yml's vxlan-policy-agent properties and the silk-cni link defaults.
    let context = json!({
        "root": root.path(),
        "properties": {
            "ca_cert": "((network_policy_client.ca))",
            "client_cert": "((network_policy_client.certificate))",
            "client_key": "((network_policy_client.private_key))",
            "loggregator": {"use_v2_api": true, "ca_cert": "ca", "cert": "cert", "key": "key"},
            "policy_server": {"hostname": "127.0.0.1", "internal_listen_port": server.addr().port()}
        },
        "links": {
            "cf_network": {"properties": {"network": "10.255.0.0/16", "subnet_prefix_length": 24}},
            "cni_config": {"properties": {
                "iptables_logging": false,
                "iptables_denied_logs_per_sec": 1,
                "deny_networks": {"always": [], "running": [], "staging": []},
                "deny_networks_ipv6": {"always": [], "running": [], "staging": []},
                "outbound_connections": {"limit": false, "burst": 1000, "rate_per_sec": 100, "dry_run": false}
            }}
        },
        "spec": {"ip": "127.0.0.1", "id": "cell-guid", "name": "diego-cell", "deployment": "cf",
                 "address": "127.0.0.1", "networks": {"default": {"ip": "127.0.0.1"}}}
    });
    let text = silk_render::render(
        "vxlan-policy-agent/config/vxlan-policy-agent.json",
        &context,
    )
    .unwrap();
    let rendered: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(rendered["enable_asg_syncing"], true);
    assert_eq!(rendered["asg_poll_interval"], 60);
    assert_eq!(rendered["force_policy_poll_cycle_port"], 8722);

    let job = root.path().join("jobs/vxlan-policy-agent/config");
    std::fs::create_dir_all(job.join("certs")).unwrap();
    for (from, to) in [
        (&certs.ca_cert, "ca.crt"),
        (&certs.client_cert, "client.crt"),
        (&certs.client_key, "client.key"),
    ] {
        std::fs::copy(from, job.join("certs").join(to)).unwrap();
    }
    // The loggregator v2 certificates the rendered config names (no agent listens: the
    // policy agent retries in the background and enforces meanwhile).
    std::fs::create_dir_all(job.join("certs/loggregator")).unwrap();
    for (from, to) in [
        (&certs.ca_cert, "ca.crt"),
        (&certs.client_cert, "client.crt"),
        (&certs.client_key, "client.key"),
    ] {
        std::fs::copy(from, job.join("certs/loggregator").join(to)).unwrap();
    }
    let config = job.join("vxlan-policy-agent.json");
    std::fs::write(&config, &text).unwrap();
    std::fs::create_dir_all(root.path().join("data/container-metadata")).unwrap();
    std::fs::create_dir_all(root.path().join("data/garden-cni")).unwrap();
    store_two_containers(&root.path().join("data/container-metadata"));
    wire(BACKEND);

    let mut agent = Agent::spawn(&config);
    wait_for("the force server on 8722", Duration::from_secs(20), || {
        assert!(agent.running(), "agent exited");
        std::net::TcpStream::connect(("127.0.0.1", 8722)).is_ok()
    });
    assert_eq!(
        http_get(
            8722,
            &format!("/force-asgs-for-container?container={BACKEND}")
        ),
        (200, format!("updated container {BACKEND}"))
    );
    assert_eq!(chain_rules(ASG_BACKEND), golden_backend());
    assert_eq!(http_get(8721, "/iptables-c2c-logging").0, 200);
    assert_eq!(agent.terminate(), Some(0));
}

/// Every rule shape the planner writes (logging, deny networks, connection limit with its log
/// chain, burst 5 that iptables-save leaves out, ICMP any, IPv6) comes back from the kernel so
/// that the next plan is empty: a cycle without changes writes nothing.
#[test]
#[ignore = "needs root: run via scripts/test"]
fn planned_asg_chains_read_back_as_planned() {
    use silk_core::asg::SecurityGroup;
    use silk_dataplane::iptables::egress::{DenyLists, EgressOptions, OutboundLimit};
    use silk_dataplane::iptables::{ChainName, Family, Iptables, SystemIptables, Table};
    use vxlan_policy_agent::asg::{plan_asgs, AsgOptions, Scope};

    enter_root_test_netns();
    let dir = tempfile::tempdir().unwrap();
    let ipt = SystemIptables::new(dir.path().join("iptables.lock"));
    let mut groups: Vec<SecurityGroup> =
        serde_json::from_value(serde_json::Value::Array(fixture_groups())).unwrap();
    groups[1].rules =
        r#"[{"protocol":"udp","destination":"2001:db8::/120,8.8.8.8","ports":"53,1000-2000"},
        {"protocol":"icmp","destination":"::/0,10.0.0.0/8","type":8,"code":0},
        {"protocol":"icmp","destination":"::/0","type":-1,"code":-1}]"#
            .into();
    let store = MetadataStore::new(dir.path().join("store.json"), None);
    store
        .add(
            BACKEND,
            "10.255.7.4",
            Some("2001:db8:1::4"),
            json!({"policy_group_id": "a", "space_id": SPACE, "container_workload": "app"}),
        )
        .unwrap();
    let entries = store.read_all().unwrap();
    for family in [Family::V4, Family::V6] {
        let bin = if family == Family::V4 {
            "iptables"
        } else {
            "ip6tables"
        };
        for c in [
            ChainName::netout(BACKEND),
            ChainName::netout_log(BACKEND),
            ChainName::netout_rl_log(BACKEND),
        ] {
            run_ok(&[bin, "-N", c.as_str()]).unwrap();
        }
    }
    for (burst_log, dry_run) in [(1, false), (5, true)] {
        let egress = |deny: DenyLists| EgressOptions {
            asg_logging: true,
            denied_logs_per_sec: burst_log,
            outbound: OutboundLimit {
                limit: true,
                logging: true,
                dry_run,
                burst: 5,
                rate_per_sec: 5,
            },
            deny,
        };
        let opts = AsgOptions {
            v4: egress(DenyLists {
                always: vec!["172.16.0.0/12".into()],
                running: vec!["192.168.0.5/32".into()],
                staging: vec![],
            }),
            v6: egress(DenyLists {
                always: vec!["fd00::/8".into()],
                ..DenyLists::default()
            }),
            head_v4: vec!["-s 10.255.0.0/16 -d 10.255.0.0/16 -j ACCEPT".into()],
        };
        for family in [Family::V4, Family::V6] {
            let save = || ipt.save(family, Some(Table::Filter)).unwrap();
            let plan = plan_asgs(&groups, &entries, &save(), family, &opts, Scope::All);
            assert_eq!(plan.updated, vec![BACKEND], "{family:?}");
            ipt.restore(family, &plan.payload.render()).unwrap();
            let again = plan_asgs(&groups, &entries, &save(), family, &opts, Scope::All);
            assert!(
                again.payload.is_empty(),
                "{family:?} burst {burst_log}: planned\n{}\nsaved\n{}",
                plan.payload.render(),
                save()
            );
        }
    }
}

/// `enable_ipv6`: a container with an IPv6 address gets its chain in ip6tables too, with the
/// IPv6 destinations of its groups and `deny_networks_ipv6`, through the binary.
#[test]
#[ignore = "needs root: run via scripts/test"]
fn ipv6_chains_through_the_binary() {
    enter_root_test_netns();
    let certs = TestCerts::generate(ServerKey::Ecdsa).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut file_content = lab_file(true);
    file_content.security_groups[1].rules = FileRules::Raw(
        r#"[{"protocol":"udp","destination":"0.0.0.0/0,2001:db8::/120","ports":"53"}]"#.into(),
    );
    let file = dir.path().join("policies.json");
    write_file(&file, &file_content).unwrap();
    let server = lab_server(&certs, &file, None);
    MetadataStore::new(dir.path().join("store.json"), None)
        .add(
            BACKEND,
            "10.255.7.4",
            Some("2001:db8:1::4"),
            json!({"policy_group_id": BACKEND_APP, "space_id": SPACE, "container_workload": "app"}),
        )
        .unwrap();
    wire(BACKEND);
    run_ok(&["ip6tables", "-N", NETOUT_BACKEND]).unwrap();
    run_ok(&[
        "ip6tables",
        "-A",
        NETOUT_BACKEND,
        "-j",
        "REJECT",
        "--reject-with",
        "icmp6-port-unreachable",
    ])
    .unwrap();
    let patch = json!({"enable_ipv6": true,
        "deny_networks_ipv6": {"always": ["fd00::/8"], "running": [], "staging": []}});
    let (mut agent, force_port, _) = start_agent(dir.path(), &certs, &server, patch, None);
    assert_eq!(
        http_get(
            force_port,
            &format!("/force-asgs-for-container?container={BACKEND}")
        )
        .0,
        200
    );
    let v6: Vec<String> = run_ok(&["ip6tables-save", "-t", "filter"])
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.strip_prefix(&format!("-A {ASG_BACKEND} "))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        v6,
        vec![
            "-m state --state RELATED,ESTABLISHED -j ACCEPT",
            "-p tcp -m state --state INVALID -j DROP",
            "-d fd00::/8 -j REJECT --reject-with icmp6-port-unreachable",
            "-p udp -m iprange --dst-range 2001:db8::-2001:db8::ff -m udp --dport 53 -j ACCEPT",
            "-j REJECT --reject-with icmp6-port-unreachable",
        ]
    );
    assert!(chain_rules(ASG_BACKEND).contains(
        &"-p udp -m iprange --dst-range 0.0.0.0-255.255.255.255 -m udp --dport 53 -j ACCEPT"
            .to_string()
    ));
    assert_eq!(agent.terminate(), Some(0));
}
