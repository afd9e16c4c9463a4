//! silk-ops' metrics emitter end to end against real receivers on 127.0.0.1: the Loggregator
//! v2 test agent (tonic gRPC over mutual TLS) when v2 is configured, a UDP socket standing in
//! for the metron agent (dropsonde v1) otherwise, and an agent that is absent or rejects the
//! client certificate, which loses metrics but never fails the caller.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::net::UdpSocket;
use std::time::Duration;

use prost::Message;
use silk_ops::dropsonde;
use silk_ops::loggregator::proto::envelope;
use silk_ops::loggregator::{AppLog, RawLoggregator};
use silk_ops::Metrics;
use silk_testkit::certs::{path_str, TestCerts};
use silk_testkit::loggregator::{
    agent_certs, assert_identity, config_block, counter, gauge, metric_names, TestAgent,
};

const WAIT: Duration = Duration::from_secs(20);

/// Log lines written by silk-ops' logger.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn certs() -> TestCerts {
    agent_certs().unwrap()
}

/// The `loggregator` block as vxlan-policy-agent's template renders it with v2 on; with
/// `other_ca_client` the client certificate is one the agent does not trust.
fn v2_block(certs: &TestCerts, port: u16, other_ca_client: bool) -> RawLoggregator {
    let mut block = config_block(certs, port, "vxlan-policy-agent");
    if other_ca_client {
        block["loggregator_cert_path"] = path_str(&certs.other_client_cert).into();
        block["loggregator_key_path"] = path_str(&certs.other_client_key).into();
    }
    serde_json::from_value(block).unwrap()
}

fn metrics_v2(raw: &RawLoggregator) -> Metrics {
    let mut errors = Vec::new();
    let v2 = raw.validate(&mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    Metrics::from_config("vxlan-policy-agent", None, v2.as_ref()).unwrap()
}

#[test]
fn v2_gauges_counters_and_app_logs_reach_the_agent_over_mutual_tls() {
    let certs = certs();
    let agent = TestAgent::start(&certs).unwrap();
    let metrics = metrics_v2(&v2_block(&certs, agent.port(), false));

    metrics.value("iptablesEnforceTime", 12.5, "ms");
    metrics.incr("http_error");
    metrics.incr("http_error");
    metrics.emit_uptime();
    metrics.app_log(&AppLog {
        source_id: "app-guid".into(),
        instance_id: "2".into(),
        source_type: "APP/PROC/WEB".into(),
        message: "Security group rules were updated".into(),
        tags: [("space_id".to_string(), "s".to_string())].into(),
    });

    let got = agent
        .wait_until(WAIT, |e| e.len() >= 5)
        .unwrap_or_else(|got| panic!("agent got only {got:?}"));
    assert_eq!(
        metric_names(&got),
        ["http_error", "iptablesEnforceTime", "uptime"]
    );
    let enforce = got
        .iter()
        .find_map(|e| gauge(e, "iptablesEnforceTime"))
        .unwrap();
    assert_eq!(enforce, (12.5, "ms"));
    assert_eq!(
        got.iter().find_map(|e| gauge(e, "uptime")).unwrap().1,
        "seconds"
    );
    let counts: Vec<_> = got
        .iter()
        .filter_map(|e| counter(e, "http_error"))
        .collect();
    assert_eq!(counts, [(1, 1), (1, 2)], "delta 1 each, running total");

    for env in got
        .iter()
        .filter(|e| !matches!(e.message, Some(envelope::Message::Log(_))))
    {
        assert_identity(env, "vxlan-policy-agent");
        assert!(env.timestamp > 0);
    }
    let log = got
        .iter()
        .find(|e| matches!(e.message, Some(envelope::Message::Log(_))))
        .unwrap();
    assert_eq!(
        (log.source_id.as_str(), log.instance_id.as_str()),
        ("app-guid", "2")
    );
    assert_eq!(log.tags["source_type"], "APP/PROC/WEB");
    assert_eq!(log.tags["space_id"], "s");
    let Some(envelope::Message::Log(l)) = &log.message else {
        unreachable!()
    };
    assert_eq!(l.payload, b"Security group rules were updated");
    assert_eq!(l.r#type, 0, "stdout");
}

#[test]
fn v1_sends_dropsonde_to_the_metron_address_when_v2_is_off() {
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(WAIT)).unwrap();
    let mut errors = Vec::new();
    let v2 = RawLoggregator::default().validate(&mut errors);
    assert!(v2.is_none() && errors.is_empty());
    let metrics =
        Metrics::from_config("silk-daemon", Some(sink.local_addr().unwrap()), v2.as_ref()).unwrap();
    metrics.value("numberLeases", 3.0, "");
    metrics.incr("renewals");
    metrics.app_log(&AppLog::default()); // v1 carries no app logs: nothing is sent

    let mut buf = [0u8; 2048];
    let n = sink.recv(&mut buf).unwrap();
    let env = dropsonde::Envelope::decode(&buf[..n]).unwrap();
    assert_eq!(env.origin, "silk-daemon");
    let vm = env.value_metric.unwrap();
    assert_eq!(
        (vm.name.as_str(), vm.value, vm.unit.as_str()),
        ("numberLeases", 3.0, "")
    );
    let n = sink.recv(&mut buf).unwrap();
    let c = dropsonde::Envelope::decode(&buf[..n])
        .unwrap()
        .counter_event
        .unwrap();
    assert_eq!((c.name.as_str(), c.delta, c.total), ("renewals", 1, None));
    sink.set_nonblocking(true).unwrap();
    assert!(
        sink.recv(&mut buf).is_err(),
        "the app log sent nothing over v1"
    );
}

#[test]
fn an_agent_that_comes_up_late_or_restarts_receives_what_is_sent_while_it_is_up() {
    let logs = Logs::default();
    silk_ops::log::init_with_sink(
        "cfnetworking",
        "test",
        log::LevelFilter::Debug,
        Box::new(logs.clone()),
    );
    let certs = certs();
    // A free port, closed again: nothing listens there until the agent starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = metrics_v2(&v2_block(&certs, port, false));
    for _ in 0..5 {
        metrics.value("totalPollTime", 1.0, "ms"); // refused: dropped, never an error
        std::thread::sleep(Duration::from_millis(150));
    }
    let agent = TestAgent::start_on(&certs, port).unwrap();
    let got = agent.wait_until(WAIT, |e| {
        metrics.value("totalPollTime", 2.0, "ms");
        e.iter()
            .any(|e| gauge(e, "totalPollTime") == Some((2.0, "ms")))
    });
    assert!(got.is_ok(), "the client reconnected: {got:?}");
    let deadline = std::time::Instant::now() + WAIT;
    while !logs.text().contains("loggregator-v2-connected") {
        metrics.value("totalPollTime", 2.0, "ms");
        assert!(std::time::Instant::now() < deadline, "{}", logs.text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        logs.text().contains("loggregator-v2-send-failed"),
        "{}",
        logs.text()
    );

    // The agent goes away with the stream open, and a new one comes up on the same port.
    drop(agent);
    metrics.value("totalPollTime", 3.0, "ms");
    let agent = TestAgent::start_on(&certs, port).unwrap();
    let got = agent.wait_until(WAIT, |e| {
        metrics.value("totalPollTime", 4.0, "ms");
        e.iter()
            .any(|e| gauge(e, "totalPollTime") == Some((4.0, "ms")))
    });
    assert!(
        got.is_ok(),
        "the client reconnected to the new agent: {got:?}"
    );
}

#[test]
fn an_agent_that_rejects_the_client_certificate_gets_nothing_and_the_caller_goes_on() {
    let certs = certs();
    let agent = TestAgent::start(&certs).unwrap();
    let rejected = metrics_v2(&v2_block(&certs, agent.port(), true));
    let accepted = metrics_v2(&v2_block(&certs, agent.port(), false));
    rejected.value("fromOtherCa", 1.0, "ms");
    // The accepted client's envelope arriving shows the agent has been reachable meanwhile.
    let got = agent
        .wait_until(WAIT, |e| {
            rejected.value("fromOtherCa", 1.0, "ms");
            accepted.value("fromOurCa", 1.0, "ms");
            e.iter().filter(|e| gauge(e, "fromOurCa").is_some()).count() >= 10
        })
        .unwrap();
    assert!(got.iter().all(|e| gauge(e, "fromOtherCa").is_none()));
    assert_eq!(
        rejected.last_value("fromOtherCa"),
        Some(1.0),
        "kept in memory"
    );
}

#[test]
fn unreadable_tls_files_are_a_start_up_error() {
    let certs = certs();
    let mut raw = v2_block(&certs, 3458, false);
    raw.loggregator_key_path = "/nonexistent/client.key".into();
    let mut errors = Vec::new();
    let v2 = raw.validate(&mut errors).unwrap();
    let err = Metrics::from_config("silk-controller", None, Some(&v2))
        .err()
        .unwrap();
    assert!(err.to_string().contains("/nonexistent/client.key"), "{err}");
}
