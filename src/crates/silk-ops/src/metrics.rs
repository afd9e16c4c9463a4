//! Metrics with upstream names: counters and value metrics, each sent when it changes to a
//! [`Sink`] (as cf-networking-helpers does: one counter event with delta 1 per increment), and
//! kept in memory for the Prometheus text served on the debug port.
//!
//! Two sinks exist, chosen from the job's config by [`Metrics::from_config`]: dropsonde v1
//! envelopes over UDP to the local metron address (upstream's path, and ours by default), or
//! Loggregator v2 envelopes over gRPC with mutual TLS to the local agent when the job's
//! `loggregator.loggregator_use_v2_api` is true ([`crate::loggregator`]).
//!
//! `Metrics` is cheap to clone (an `Arc`). Sending never blocks and never fails the caller.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::dropsonde::DropsondeSink;
use crate::loggregator::{AppLog, LoggregatorError, LoggregatorSink, LoggregatorV2};

/// Where metric events go. Implementations queue or send without blocking and swallow their
/// own failures (they log them): metrics never stop the program.
pub trait Sink: Send + Sync {
    /// One counter change: `delta` now, `total` since start.
    fn counter(&self, name: &str, delta: u64, total: u64);
    /// A value metric (dropsonde `ValueMetric`, v2 gauge) with its unit.
    fn gauge(&self, name: &str, value: f64, unit: &str);
    /// An app log line; only Loggregator v2 carries them, other sinks ignore them.
    fn app_log(&self, _log: &AppLog) {}
}

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    origin: String,
    sink: Option<Box<dyn Sink>>,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    counters: BTreeMap<String, u64>,
    values: BTreeMap<String, (f64, String)>,
}

impl Metrics {
    /// Metrics for `origin` (the job name), emitted to `127.0.0.1:<metron_port>`.
    /// `metron_port` 0 keeps them in memory only.
    pub fn new(origin: &str, metron_port: u16) -> Self {
        Metrics::with_agent(origin, local_metron(metron_port))
    }

    /// Metrics for `origin` emitted to `agent` (a `metron_address` such as `127.0.0.1:3457`)
    /// over dropsonde v1; `None` keeps them in memory only.
    pub fn with_agent(origin: &str, agent: Option<SocketAddr>) -> Self {
        let sink = agent
            .and_then(|addr| DropsondeSink::new(origin, addr))
            .map(|s| Box::new(s) as Box<dyn Sink>);
        Metrics::with_sink(origin, sink)
    }

    /// Metrics for `origin` sent to `sink` (`None`: in memory only).
    pub fn with_sink(origin: &str, sink: Option<Box<dyn Sink>>) -> Self {
        Metrics {
            inner: Arc::new(Inner {
                origin: origin.to_string(),
                sink,
                started: Instant::now(),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The job's metrics as its config asks: Loggregator v2 over gRPC with mutual TLS when
    /// `v2` is set (the `loggregator` block had `loggregator_use_v2_api: true`), otherwise
    /// dropsonde v1 to `metron` (`None`: in memory only). Fails only when the v2 TLS files
    /// cannot be read or parsed; an unreachable agent is retried in the background.
    pub fn from_config(
        origin: &str,
        metron: Option<SocketAddr>,
        v2: Option<&LoggregatorV2>,
    ) -> Result<Self, LoggregatorError> {
        match v2 {
            Some(cfg) => {
                let sink = LoggregatorSink::start(origin, cfg)?;
                crate::log::info(
                    "metrics-destination",
                    serde_json::json!({ "protocol": "loggregator-v2", "port": cfg.api_port }),
                );
                Ok(Metrics::with_sink(origin, Some(Box::new(sink))))
            }
            None => {
                crate::log::info(
                    "metrics-destination",
                    serde_json::json!({
                        "protocol": "dropsonde-v1",
                        "address": metron.map(|a| a.to_string()),
                    }),
                );
                Ok(Metrics::with_agent(origin, metron))
            }
        }
    }

    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// Adds 1 to counter `name` and emits a counter event with delta 1.
    pub fn incr(&self, name: &str) {
        let total = match self.inner.state.lock() {
            Ok(mut state) => {
                let total = state.counters.entry(name.to_string()).or_default();
                *total += 1;
                *total
            }
            Err(_) => 0,
        };
        if let Some(sink) = &self.inner.sink {
            sink.counter(name, 1, total);
        }
    }

    /// Sets value metric `name` and emits a `ValueMetric` with `unit` (`"ms"`, `"seconds"`, `""`).
    pub fn value(&self, name: &str, value: f64, unit: &str) {
        if let Ok(mut state) = self.inner.state.lock() {
            state
                .values
                .insert(name.to_string(), (value, unit.to_string()));
        }
        if let Some(sink) = &self.inner.sink {
            sink.gauge(name, value, unit);
        }
    }

    /// Sends an app log line (Loggregator v2 only; dropped by the dropsonde sink, as upstream's
    /// v1 path sends none).
    pub fn app_log(&self, log: &AppLog) {
        if let Some(sink) = &self.inner.sink {
            sink.app_log(log);
        }
    }

    /// Records one handled request the way upstream's metrics wrapper does:
    /// `<name>RequestTime` in ms and `<name>RequestCount`.
    pub fn request(&self, name: &str, elapsed: Duration) {
        self.value(
            &format!("{name}RequestTime"),
            elapsed.as_secs_f64() * 1000.0,
            "ms",
        );
        self.incr(&format!("{name}RequestCount"));
    }

    /// Emits `uptime` in seconds since this registry was created.
    pub fn emit_uptime(&self) {
        let secs = self.inner.started.elapsed().as_secs();
        self.value("uptime", secs as f64, "seconds");
    }

    pub fn counter_total(&self, name: &str) -> u64 {
        self.inner
            .state
            .lock()
            .map(|s| s.counters.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    pub fn last_value(&self, name: &str) -> Option<f64> {
        self.inner
            .state
            .lock()
            .ok()
            .and_then(|s| s.values.get(name).map(|v| v.0))
    }

    /// Prometheus text exposition (version 0.0.4): counters as `counter`, values as `gauge`.
    /// Names keep upstream spelling; characters Prometheus forbids become `_`.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let Ok(state) = self.inner.state.lock() else {
            return out;
        };
        for (name, total) in &state.counters {
            let name = prometheus_name(name);
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {total}");
        }
        for (name, (value, unit)) in &state.values {
            let name = prometheus_name(name);
            if !unit.is_empty() {
                let _ = writeln!(out, "# HELP {name} unit: {unit}");
            }
            let _ = writeln!(out, "# TYPE {name} gauge\n{name} {value}");
        }
        out
    }
}

/// `127.0.0.1:<metron_port>`, the metron agent of jobs configured with a port only; `None`
/// for port 0 (metrics kept in memory).
pub fn local_metron(metron_port: u16) -> Option<SocketAddr> {
    (metron_port != 0).then(|| SocketAddr::from(([127, 0, 0, 1], metron_port)))
}

fn prometheus_name(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Spawns a task that calls `emit_uptime` and then `extra` every `every` (first run at once),
/// as upstream's metrics emitter. `extra` gathers the job's own values (pool sizes, DB stats).
pub fn spawn_emitter<F, Fut>(
    metrics: Metrics,
    every: Duration,
    extra: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(Metrics) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        loop {
            tick.tick().await;
            metrics.emit_uptime();
            extra(metrics.clone()).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dropsonde::Envelope;
    use prost::Message;
    use std::net::UdpSocket;

    #[test]
    fn increments_are_sent_as_single_counter_events_and_rendered() {
        let agent = UdpSocket::bind("127.0.0.1:0").unwrap();
        agent
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let port = agent.local_addr().unwrap().port();
        let m = Metrics::new("silk-controller", port);
        m.incr("http_error");
        m.incr("http_error");
        m.value("freeLeases", 254.0, "");
        let mut buf = [0u8; 1024];
        for _ in 0..2 {
            let n = agent.recv(&mut buf).unwrap();
            let env = Envelope::decode(&buf[..n]).unwrap();
            assert_eq!(env.origin, "silk-controller");
            let c = env.counter_event.unwrap();
            assert_eq!((c.name.as_str(), c.delta), ("http_error", 1));
        }
        let n = agent.recv(&mut buf).unwrap();
        let vm = Envelope::decode(&buf[..n]).unwrap().value_metric.unwrap();
        assert_eq!((vm.name.as_str(), vm.value), ("freeLeases", 254.0));
        assert_eq!(m.counter_total("http_error"), 2);
        let text = m.render_prometheus();
        assert!(
            text.contains("# TYPE http_error counter\nhttp_error 2\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE freeLeases gauge\nfreeLeases 254\n"),
            "{text}"
        );
    }

    #[test]
    fn prometheus_names_are_sanitised() {
        assert_eq!(
            prometheus_name("memoryStats.numBytes"),
            "memoryStats_numBytes"
        );
        assert_eq!(prometheus_name("9lives"), "_lives");
        assert_eq!(
            prometheus_name("LeasesIndexRequestTime"),
            "LeasesIndexRequestTime"
        );
    }
}
