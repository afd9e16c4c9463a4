//! Where the agent's metrics go, with the real binary, a fake policy server and real iptables
//! in a network namespace of the test's own: with `loggregator.loggregator_use_v2_api` (as
//! cf-deployment renders it) to a Loggregator v2 test agent (tonic gRPC, mutual TLS, `metron`
//! certificate); otherwise as dropsonde v1 to `metron_address`. Upstream's names and units
//! either way; an agent that is down at start does not stop the policy agent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure by design

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use prost::Message;
use silk_testkit::loggregator::{
    agent_certs, assert_identity, config_block, gauge, metric_names, TestAgent,
};

const WAIT: Duration = Duration::from_secs(30);
/// What every c2c cycle and the uptime emitter send (policy contract §3.10).
const CYCLE: [(&str, &str); 5] = [
    ("containerMetadataTime", "ms"),
    ("policyServerPollTime", "ms"),
    ("iptablesEnforceTime", "ms"),
    ("totalPollTime", "ms"),
    ("uptime", "seconds"),
];

/// The common [`Bed`] with every example policy; the agent is spawned by [`Bed::spawn`].
impl Bed {
    /// Starts the agent with the test config, `keys` replaced; returns it and its force port.
    fn spawn(&self, keys: serde_json::Value) -> (Agent, u16) {
        let force_port = free_port();
        let path = write_config(
            self.dir.path(),
            &self.certs,
            self.server.port,
            force_port,
            free_port(),
        );
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (k, val) in keys.as_object().unwrap() {
            v[k] = val.clone();
        }
        std::fs::write(&path, v.to_string()).unwrap();
        (Agent::spawn(&path), force_port)
    }
}

fn has_cycle(envs: &[silk_ops::loggregator::proto::Envelope]) -> bool {
    let names = metric_names(envs);
    CYCLE.iter().all(|(w, _)| names.iter().any(|n| n == w))
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn metrics_reach_a_loggregator_v2_agent_over_mutual_tls() {
    let bed = Bed::new(example_policies());
    let lcerts = agent_certs().unwrap();
    let agent = TestAgent::start(&lcerts).unwrap();
    let block = config_block(&lcerts, agent.port(), "vxlan-policy-agent");
    let (mut vpa, _) = bed.spawn(serde_json::json!({ "loggregator": block }));

    let got = agent
        .wait_until(WAIT, |e| {
            assert!(vpa.running(), "agent exited");
            has_cycle(e)
        })
        .unwrap_or_else(|got| panic!("missing metrics, got {:?}", metric_names(&got)));
    for (name, unit) in CYCLE {
        let (_, got_unit) = got.iter().find_map(|e| gauge(e, name)).unwrap();
        assert_eq!(got_unit, unit, "{name}");
    }
    for env in &got {
        assert_identity(env, "vxlan-policy-agent");
    }
    assert_eq!(vpa.terminate(), Some(0));
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn with_the_v2_agent_down_at_start_the_agent_enforces_and_delivers_later() {
    let bed = Bed::new(example_policies());
    let lcerts = agent_certs().unwrap();
    let port = free_port();
    // Upstream exits when the agent is not reachable within 1 s; this agent goes on.
    let block = config_block(&lcerts, port, "vxlan-policy-agent");
    let (mut vpa, force_port) = bed.spawn(serde_json::json!({ "loggregator": block }));
    wait_for("c2c rules with no loggregator agent", WAIT, || {
        assert!(vpa.running(), "agent exited");
        vpa_chain().is_some()
    });
    let agent = TestAgent::start_on(&lcerts, port).unwrap();
    // Unchanged policies skip the periodic cycles: forced cycles emit the cycle metrics.
    let got = agent.wait_until(WAIT, |e| {
        assert!(vpa.running(), "agent exited");
        assert_eq!(http_get(force_port, "/force-policy-poll-cycle").0, 200);
        metric_names(e).iter().any(|n| n == "totalPollTime")
    });
    assert!(got.is_ok(), "nothing arrived after the agent came up");
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn metrics_go_to_metron_over_dropsonde_without_v2() {
    let bed = Bed::new(example_policies());
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (mut vpa, _) =
        bed.spawn(serde_json::json!({ "metron_address": sink.local_addr().unwrap().to_string() }));

    let deadline = Instant::now() + WAIT;
    let mut units = std::collections::BTreeMap::new();
    let mut buf = [0u8; 4096];
    while !CYCLE.iter().all(|(w, _)| units.contains_key(*w)) {
        assert!(Instant::now() < deadline, "got only {units:?}");
        assert!(vpa.running(), "agent exited");
        let Ok(n) = sink.recv(&mut buf) else { continue };
        let env = silk_ops::dropsonde::Envelope::decode(&buf[..n]).unwrap();
        assert_eq!(env.origin, "vxlan-policy-agent");
        if let Some(v) = env.value_metric {
            units.insert(v.name, v.unit);
        }
    }
    for (name, unit) in CYCLE {
        assert_eq!(units[name], unit, "{name}");
    }
    assert_eq!(vpa.terminate(), Some(0));
}
