//! Where silk-daemon's metrics go, with the real binaries in the multi-cell test bed (real
//! controller, PostgreSQL, kernel): with a `loggregator` block turned on, to a Loggregator v2
//! test agent (tonic gRPC, mutual TLS) listening on the cell's 127.0.0.1; otherwise as
//! dropsonde v1 to a UDP socket on the cell's 127.0.0.1:`metron_port`. Upstream's names and
//! units either way.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use prost::Message;
use silk_lab::fabric::{Binaries, Options, Testbed};
use silk_testkit::loggregator::{
    agent_certs, assert_identity, config_block, counter, gauge, metric_names, TestAgent,
};
use silk_testkit::netns::in_netns;

const WAIT: Duration = Duration::from_secs(30);
const WANT: [&str; 4] = ["numberLeases", "renewSuccess", "convergeSuccess", "uptime"];

async fn one_cell() -> Testbed {
    silk_testkit::require_root_and_pg();
    let bins = Binaries::beside(env!("CARGO_BIN_EXE_silk-daemon")).unwrap();
    Testbed::build(
        bins,
        Options {
            cells: 1,
            ..Options::default()
        },
    )
    .await
    .unwrap()
}

/// Changes keys of cell 0's rendered client-config.json.
fn patch_config(bed: &Testbed, keys: serde_json::Value) {
    let path = &bed.cells[0].config;
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for (k, val) in keys.as_object().unwrap() {
        v[k] = val.clone();
    }
    std::fs::write(path, v.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: run via scripts/test"]
async fn daemon_metrics_reach_a_loggregator_v2_agent_in_the_cell() {
    let mut bed = one_cell().await;
    let lcerts = agent_certs().unwrap();
    let listener = in_netns(bed.cells[0].ns.path(), || {
        std::net::TcpListener::bind("127.0.0.1:0")
    })
    .unwrap();
    let agent = TestAgent::serve(&lcerts, listener).unwrap();
    patch_config(
        &bed,
        serde_json::json!({ "loggregator": config_block(&lcerts, agent.port(), "silk-daemon") }),
    );
    bed.start_controller().unwrap();
    bed.start_daemons().unwrap();

    let got = tokio::task::spawn_blocking(move || {
        agent.wait_until(WAIT, |e| {
            let names = metric_names(e);
            WANT.iter().all(|w| names.iter().any(|n| n == w))
        })
    })
    .await
    .unwrap()
    .unwrap_or_else(|got| panic!("missing metrics, got {:?}", metric_names(&got)));
    assert_eq!(
        got.iter().find_map(|e| gauge(e, "numberLeases")).unwrap(),
        (1.0, "")
    );
    assert_eq!(
        got.iter().find_map(|e| gauge(e, "uptime")).unwrap().1,
        "seconds"
    );
    let renewals: Vec<_> = got
        .iter()
        .filter_map(|e| counter(e, "renewSuccess"))
        .collect();
    assert_eq!(renewals[0], (1, 1), "delta 1, running total");
    for env in &got {
        assert_identity(env, "silk-daemon");
    }
    assert!(bed.daemon_running(0), "{}", bed.daemon_log(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: run via scripts/test"]
async fn daemon_metrics_go_to_metron_over_dropsonde_without_v2() {
    let mut bed = one_cell().await;
    let sink = in_netns(bed.cells[0].ns.path(), || UdpSocket::bind("127.0.0.1:0")).unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    patch_config(
        &bed,
        serde_json::json!({ "metron_port": sink.local_addr().unwrap().port() }),
    );
    bed.start_controller().unwrap();
    bed.start_daemons().unwrap();

    let deadline = Instant::now() + WAIT;
    let mut names = std::collections::BTreeSet::new();
    let mut units = std::collections::BTreeMap::new();
    let mut buf = [0u8; 4096];
    while !WANT.iter().all(|w| names.contains(*w)) {
        assert!(Instant::now() < deadline, "got only {names:?}");
        let Ok(n) = sink.recv(&mut buf) else { continue };
        let env = silk_ops::dropsonde::Envelope::decode(&buf[..n]).unwrap();
        assert_eq!(env.origin, "silk-daemon");
        if let Some(c) = env.counter_event {
            assert_eq!(c.delta, 1);
            names.insert(c.name);
        }
        if let Some(v) = env.value_metric {
            units.insert(v.name.clone(), v.unit);
            names.insert(v.name);
        }
    }
    assert_eq!(units["uptime"], "seconds");
    assert_eq!(units["numberLeases"], "");
}
