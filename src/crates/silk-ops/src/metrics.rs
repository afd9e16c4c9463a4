//! Metrics with upstream names: counters and value metrics, each sent as a dropsonde v1
//! envelope over UDP to the local metron agent when it changes (as cf-networking-helpers does:
//! one `CounterEvent` with delta 1 per increment), and kept in memory for the Prometheus text
//! served on the debug port.
//!
//! `Metrics` is cheap to clone (an `Arc`). Sending never blocks and never fails the caller:
//! UDP to 127.0.0.1 is fire-and-forget, as in dropsonde.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::dropsonde;

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    origin: String,
    socket: Option<(UdpSocket, SocketAddr)>,
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
        let agent = (metron_port != 0).then(|| SocketAddr::from(([127, 0, 0, 1], metron_port)));
        Metrics::with_agent(origin, agent)
    }

    /// Metrics for `origin` emitted to `agent` (a `metron_address` such as `127.0.0.1:3457`);
    /// `None` keeps them in memory only.
    pub fn with_agent(origin: &str, agent: Option<SocketAddr>) -> Self {
        let socket = agent.and_then(|addr| {
            // Loopback agents (the usual 127.0.0.1) are reached from a loopback-bound socket.
            let local: SocketAddr = match (addr.is_ipv4(), addr.ip().is_loopback()) {
                (true, true) => ([127, 0, 0, 1], 0).into(),
                (true, false) => ([0, 0, 0, 0], 0).into(),
                (false, true) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
                (false, false) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let s = UdpSocket::bind(local).ok()?;
            let _ = s.set_nonblocking(true);
            Some((s, addr))
        });
        Metrics {
            inner: Arc::new(Inner {
                origin: origin.to_string(),
                socket,
                started: Instant::now(),
                state: Mutex::new(State::default()),
            }),
        }
    }

    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// Adds 1 to counter `name` and emits a `CounterEvent` with delta 1.
    pub fn incr(&self, name: &str) {
        if let Ok(mut state) = self.inner.state.lock() {
            *state.counters.entry(name.to_string()).or_default() += 1;
        }
        self.send(dropsonde::counter_envelope(&self.inner.origin, name, 1));
    }

    /// Sets value metric `name` and emits a `ValueMetric` with `unit` (`"ms"`, `"seconds"`, `""`).
    pub fn value(&self, name: &str, value: f64, unit: &str) {
        if let Ok(mut state) = self.inner.state.lock() {
            state
                .values
                .insert(name.to_string(), (value, unit.to_string()));
        }
        self.send(dropsonde::value_envelope(
            &self.inner.origin,
            name,
            value,
            unit,
        ));
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

    fn send(&self, bytes: Vec<u8>) {
        if let Some((socket, agent)) = &self.inner.socket {
            // Fire and forget, as dropsonde's UDP emitter: a missing agent loses metrics only.
            let _ = socket.send_to(&bytes, agent);
        }
    }
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
