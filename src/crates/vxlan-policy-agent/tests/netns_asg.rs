//! Dynamic ASG syncing through the real binary, against the fake policy server (HTTPS, client
//! certificates required, paginated answers, fault injection) and real iptables, in a network
//! namespace of the test's own: chains as the planner writes them read back identically, the
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
use silk_testkit::certs::{ServerKey, TestCerts};
use silk_testkit::netns::{run_ok, unshare_test_netns};

const ASG_BACKEND: &str = "asg-6f1e4f5a1b2c4d3e8f9a";
const NETOUT_BACKEND: &str = "netout--6f1e4f5a-1b2c-4d3e-8";
const ASG_FRONTEND: &str = "asg-1d2e3f4a5b6c4d7e8f90";
const REJECT: &str = "-j REJECT --reject-with icmp-port-unreachable";

fn require_root() {
    assert_eq!(
        std::env::var("SILK_TEST_ROOT").as_deref(),
        Ok("1"),
        "run via scripts/test"
    );
}

fn fixture_groups() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/asg/security-groups.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["security_groups"].as_array().unwrap().clone()
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
    require_root();
    unshare_test_netns().unwrap();
    let certs = TestCerts::generate(ServerKey::Ecdsa).unwrap();
    let dir = tempfile::tempdir().unwrap();
    store_two_containers(dir.path());
    wire(BACKEND);
    wire(FRONTEND);

    let server = FakeServer::start(&certs, example_policies());
    {
        let mut s = server.state.lock().unwrap();
        s.security_groups = fixture_groups();
        s.sg_page_size = Some(1);
    }
    let (force_port, debug_port) = (free_port(), free_port());
    let config = write_config(dir.path(), &certs, server.port, force_port, debug_port);
    patch_config(
        &config,
        json!({"enable_asg_syncing": true, "asg_poll_interval": 1, "poll_interval": 30}),
    );
    let log = dir.path().join("agent.log");
    let mut agent = Agent::spawn_logged(&config, Some(&log));
    wait_for("the force server", Duration::from_secs(20), || {
        assert!(agent.running(), "agent exited");
        std::net::TcpStream::connect(("127.0.0.1", force_port)).is_ok()
    });

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
            "GET /networking/v1/internal/security_groups?per_page=5000&space_guids={SPACE}&from=3"
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
    server.state.lock().unwrap().security_groups[2]["running_space_guids"] = json!([]);
    wait_for("the changed chain", Duration::from_secs(20), || {
        !chain_rules(ASG_BACKEND)
            .iter()
            .any(|r| r.contains("10.0.11.0"))
    });
    let current = chain_rules(ASG_BACKEND);

    // Each fault: the rules stay, a counter and a log line say so, and the agent recovers.
    for (fault, text) in [
        (Some(SgFault::Status500), "database read failed"),
        (Some(SgFault::MalformedJson), "decode response body"),
        (Some(SgFault::MissingPage), "http status 404"),
        (None, "security groups"),
    ] {
        let failures = metric(debug_port, "asgPollFailures");
        {
            let mut s = server.state.lock().unwrap();
            s.sg_fault = fault;
            s.down = fault.is_none();
            // A change the agent must not apply while the fault lasts.
            s.security_groups[2]["running_space_guids"] = json!([SPACE]);
        }
        wait_for("a counted failure", Duration::from_secs(20), || {
            metric(debug_port, "asgPollFailures") >= failures + 2.0
        });
        assert!(
            log_has(&log, "asg-poll-cycle", text),
            "{fault:?}: no log line with {text:?}"
        );
        assert_eq!(chain_rules(ASG_BACKEND), current, "{fault:?}: rules kept");
        assert!(agent.running());
        {
            let mut s = server.state.lock().unwrap();
            s.sg_fault = None;
            s.down = false;
        }
        wait_for("recovery", Duration::from_secs(20), || {
            chain_rules(ASG_BACKEND) == golden_backend()
        });
        server.state.lock().unwrap().security_groups[2]["running_space_guids"] = json!([]);
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
