//! One measurement cycle (upstream's `SystemMetrics.measure`) and the telemetry aggregate.
//!
//! The cycle sends, in this order and stopping at the first failure: `NetInterfaceCount`,
//! `IPTablesRuleCount`, `OverlayTxBytes`, `OverlayRxBytes`, `OverlayRxDropped`,
//! `OverlayTxDropped`, each a dropsonde `ValueMetric` with unit `Metric`.

use serde_json::{json, Value};

use crate::stats::NetworkStats;

pub const UNIT: &str = "Metric";

/// The overlay counters, metric name and `statistics/` file, in the order they are sent.
pub const OVERLAY_COUNTERS: [(&str, &str, &str); 4] = [
    ("OverlayTxBytes", "tx_bytes", "read-tx-bytes"),
    ("OverlayRxBytes", "rx_bytes", "read-rx-bytes"),
    ("OverlayRxDropped", "rx_dropped", "read-rx-dropped"),
    ("OverlayTxDropped", "tx_dropped", "read-tx-dropped"),
];

/// Where a cycle sends its values; [`silk_ops::Metrics`] in the binary.
pub trait Sender {
    fn send(&self, name: &str, value: u64);
}

impl Sender for silk_ops::Metrics {
    fn send(&self, name: &str, value: u64) {
        self.value(name, value as f64, UNIT);
    }
}

/// Runs one cycle. Returns the rule count when it was taken (for telemetry) and the failure
/// that ended the cycle early, as `(event, error)` for the caller to log.
pub fn measure(
    stats: &dyn NetworkStats,
    interface: &str,
    sender: &dyn Sender,
) -> (Option<u64>, Option<(&'static str, String)>) {
    silk_ops::log::debug("measure.measure-start", json!({}));
    let sent = |name: &str, v: u64| {
        sender.send(name, v);
        silk_ops::log::debug("measure.metric-sent", json!({ name: v }));
    };
    let result = (|| {
        let n = stats
            .interface_count()
            .map_err(|e| ("count-network-interfaces", e.to_string(), None))?;
        sent("NetInterfaceCount", n);
        let rules = stats
            .iptables_rule_count()
            .map_err(|e| ("count-iptables-rules", e.to_string(), None))?;
        sent("IPTablesRuleCount", rules);
        for (name, file, event) in OVERLAY_COUNTERS {
            let v = stats
                .interface_stat(interface, file)
                .map_err(|e| (event, e.to_string(), Some(rules)))?;
            sent(name, v);
        }
        Ok(rules)
    })();
    silk_ops::log::debug("measure.measure-complete", json!({}));
    match result {
        Ok(rules) => (Some(rules), None),
        Err((event, err, rules)) => (rules, Some((event, err))),
    }
}

/// Minimum, maximum and truncated average of the rule counts since the last flush
/// (upstream's `IntAggregator`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Aggregator {
    pub minimum: u64,
    pub maximum: u64,
    pub total: u64,
    pub count: u64,
}

impl Aggregator {
    pub fn update(&mut self, v: u64) {
        if self.count == 0 {
            *self = Aggregator {
                minimum: v,
                maximum: v,
                total: v,
                count: 1,
            };
            return;
        }
        self.minimum = self.minimum.min(v);
        self.maximum = self.maximum.max(v);
        self.total += v;
        self.count += 1;
    }

    pub fn average(&self) -> u64 {
        self.total.checked_div(self.count).unwrap_or(0)
    }

    pub fn flush(&mut self) {
        *self = Aggregator::default();
    }
}

/// `data` of a `netmon.count-iptables-rules` telemetry line.
pub fn telemetry_data(time: &str, count: u64, interval_secs: u64, agg: &Aggregator) -> Value {
    json!({
        "telemetry-source": "netmon",
        "telemetry-time": time,
        "IPTablesRuleCount": count,
        "IPTablesRuleCountInterval": interval_secs,
        "IPTablesRuleMaxiumum": agg.maximum,
        "IPTablesRuleAverage": agg.average(),
        "IPTablesRuleMinimum": agg.minimum,
    })
}

/// One telemetry line (no newline) at `now_nanos`: lager's epoch format from logger `netmon`,
/// level info, message `netmon.count-iptables-rules`.
pub fn telemetry_line(now_nanos: i128, data: &Value) -> String {
    silk_ops::log::render(
        silk_ops::log::Format::Epoch,
        now_nanos,
        silk_ops::log::LagerLevel::Info,
        "netmon",
        "count-iptables-rules",
        data,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::StatsError;
    use std::sync::Mutex;

    struct Fake {
        fail_at: Option<&'static str>,
    }

    impl NetworkStats for Fake {
        fn interface_count(&self) -> Result<u64, StatsError> {
            Ok(4)
        }
        fn iptables_rule_count(&self) -> Result<u64, StatsError> {
            Ok(57)
        }
        fn interface_stat(&self, interface: &str, stat: &str) -> Result<u64, StatsError> {
            assert_eq!(interface, "silk-vtep");
            if self.fail_at == Some(stat) {
                return Err(StatsError::NotANumber {
                    path: stat.into(),
                    text: "x".into(),
                });
            }
            Ok(match stat {
                "tx_bytes" => 100,
                "rx_bytes" => 200,
                "rx_dropped" => 3,
                "tx_dropped" => 4,
                _ => unreachable!(),
            })
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, u64)>>);

    impl Sender for Recorder {
        fn send(&self, name: &str, value: u64) {
            self.0.lock().unwrap().push((name.into(), value));
        }
    }

    fn sent(r: &Recorder) -> Vec<(String, u64)> {
        r.0.lock().unwrap().clone()
    }

    #[test]
    fn sends_every_metric_in_upstream_order() {
        let r = Recorder::default();
        let (rules, err) = measure(&Fake { fail_at: None }, "silk-vtep", &r);
        assert_eq!((rules, err), (Some(57), None));
        let want: Vec<(String, u64)> = [
            ("NetInterfaceCount", 4),
            ("IPTablesRuleCount", 57),
            ("OverlayTxBytes", 100),
            ("OverlayRxBytes", 200),
            ("OverlayRxDropped", 3),
            ("OverlayTxDropped", 4),
        ]
        .map(|(n, v)| (n.to_string(), v))
        .to_vec();
        assert_eq!(sent(&r), want);
    }

    #[test]
    fn stops_at_the_first_failure() {
        let r = Recorder::default();
        let (rules, err) = measure(
            &Fake {
                fail_at: Some("rx_bytes"),
            },
            "silk-vtep",
            &r,
        );
        assert_eq!(rules, Some(57));
        assert_eq!(err.unwrap().0, "read-rx-bytes");
        assert_eq!(sent(&r).len(), 3);
    }

    #[test]
    fn aggregator_matches_upstream() {
        let mut a = Aggregator::default();
        assert_eq!(a.average(), 0);
        for v in [10, 13, 11] {
            a.update(v);
        }
        assert_eq!((a.minimum, a.maximum, a.average()), (10, 13, 11));
        a.flush();
        a.update(7);
        assert_eq!((a.minimum, a.maximum, a.average()), (7, 7, 7));
    }

    #[test]
    fn telemetry_line_has_upstream_keys() {
        let mut a = Aggregator::default();
        a.update(5);
        a.update(8);
        let line = telemetry_line(
            1_764_675_601_123_456_789,
            &telemetry_data("2025-12-02T11:40:01.123456789Z", 8, 600, &a),
        );
        assert_eq!(
            line,
            concat!(
                r#"{"timestamp":"1764675601.123456789","source":"netmon","message":"netmon.count-iptables-rules","log_level":1,"#,
                r#""data":{"IPTablesRuleAverage":6,"IPTablesRuleCount":8,"IPTablesRuleCountInterval":600,"IPTablesRuleMaxiumum":8,"#,
                r#""IPTablesRuleMinimum":5,"telemetry-source":"netmon","telemetry-time":"2025-12-02T11:40:01.123456789Z"}}"#
            )
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            json!({
                "timestamp": "1764675601.123456789",
                "source": "netmon",
                "message": "netmon.count-iptables-rules",
                "log_level": 1,
                "data": {
                    "telemetry-source": "netmon",
                    "telemetry-time": "2025-12-02T11:40:01.123456789Z",
                    "IPTablesRuleCount": 8,
                    "IPTablesRuleCountInterval": 600,
                    "IPTablesRuleMaxiumum": 8,
                    "IPTablesRuleAverage": 6,
                    "IPTablesRuleMinimum": 5
                }
            })
        );
    }
}
