//! Metrics over Loggregator v2: the real silk-controller binary, configured with a
//! `loggregator` block, streams its metrics with upstream's names and units to a test agent
//! (tonic gRPC, mutual TLS, `metron` certificate) on 127.0.0.1; with the agent down it serves
//! leases all the same and delivers once the agent is up. (The dropsonde v1 path is
//! `api.rs`'s `health_debug_metrics_and_logs`.)

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod common;

use std::time::Duration;

use common::{free_port, setup, Engine, Settings};
use silk_ops::loggregator::proto::Envelope;
use silk_testkit::certs::TestCerts;
use silk_testkit::loggregator::{
    agent_certs, assert_identity, config_block, counter, gauge, metric_names, TestAgent,
};

const WAIT: Duration = Duration::from_secs(30);

/// The rendered block without `loggregator_source_id`: the job name stands in.
fn block(certs: &TestCerts, port: u16) -> serde_json::Value {
    let mut block = config_block(certs, port, "silk-controller");
    block
        .as_object_mut()
        .unwrap()
        .remove("loggregator_source_id");
    block
}

fn has_all(envs: &[Envelope], names: &[&str]) -> bool {
    let got = metric_names(envs);
    names.iter().all(|n| got.iter().any(|g| g == n))
}

/// The emitter has run since the lease was acquired.
fn counted_one_lease(envs: &[Envelope]) -> bool {
    envs.iter()
        .any(|e| gauge(e, "totalLeases") == Some((1.0, "")))
}

const WANT: [&str; 9] = [
    "uptime",
    "totalLeases",
    "freeLeases",
    "staleLeases",
    "DBOpenConnections",
    "LeasesAcquireRequestTime",
    "LeasesAcquireRequestCount",
    "LeasesIndexRequestTime",
    "LeasesIndexRequestCount",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres: run via scripts/test"]
async fn controller_metrics_reach_a_loggregator_v2_agent_over_mutual_tls() {
    let lcerts = agent_certs().unwrap();
    let agent = TestAgent::start(&lcerts).unwrap();
    let settings = Settings {
        loggregator: Some(block(&lcerts, agent.port())),
        ..Settings::default()
    };
    let (_db, certs, controller) = setup(Engine::Postgres, settings).await;
    let client = controller.client(&certs);
    client.acquire("10.0.16.1", false).await.unwrap();
    client.list().await.unwrap();

    let got = tokio::task::spawn_blocking(move || {
        let got = agent.wait_until(WAIT, |e| has_all(e, &WANT) && counted_one_lease(e));
        (agent, got)
    })
    .await
    .unwrap()
    .1
    .unwrap_or_else(|got| panic!("missing metrics, got {:?}", metric_names(&got)));

    let time = got
        .iter()
        .find_map(|e| gauge(e, "LeasesAcquireRequestTime"))
        .unwrap();
    assert_eq!(time.1, "ms");
    assert_eq!(
        got.iter().find_map(|e| gauge(e, "uptime")).unwrap().1,
        "seconds"
    );
    assert_eq!(
        got.iter()
            .find_map(|e| counter(e, "LeasesAcquireRequestCount"))
            .unwrap(),
        (1, 1)
    );
    for env in &got {
        // No source id rendered: the job name, as the origin of the v1 path.
        assert_identity(env, "silk-controller");
    }
    let log = controller.log();
    assert!(
        log.lines()
            .any(|l| l.contains("metrics-destination") && l.contains("\"loggregator-v2\"")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs postgres: run via scripts/test"]
async fn controller_runs_with_the_agent_down_and_delivers_once_it_is_up() {
    let lcerts = agent_certs().unwrap();
    let port = free_port();
    let settings = Settings {
        loggregator: Some(block(&lcerts, port)),
        ..Settings::default()
    };
    // setup waits for /health: the controller starts although nothing listens on `port`.
    let (_db, certs, controller) = setup(Engine::Postgres, settings).await;
    let client = controller.client(&certs);
    client.acquire("10.0.16.1", false).await.unwrap();
    log_eventually(&controller, "loggregator-v2-send-failed").await;

    let agent = TestAgent::start_on(&lcerts, port).unwrap();
    // The agent comes back out of the blocking task: dropping it would stop it.
    let (agent, got) = tokio::task::spawn_blocking(move || {
        let got = agent.wait_until(WAIT, |e| has_all(e, &["uptime", "totalLeases"]));
        (agent, got)
    })
    .await
    .unwrap();
    assert!(got.is_ok(), "nothing arrived after the agent came up");
    client.list().await.unwrap();
    log_eventually(&controller, "loggregator-v2-connected").await;
    drop(agent);
}

async fn log_eventually(controller: &common::Controller, what: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while !controller.log().contains(what) {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never logged: {}",
            controller
                .log()
                .lines()
                .filter(|l| l.contains("loggregator"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
