//! netmon (policy contract §6): every `poll_interval` sends the cell's interface count,
//! iptables rule count and overlay device counters to the metron agent; with telemetry on,
//! also appends the rule count statistics to a telemetry log every `telemetry_interval`.
//!
//! - [`config`] holds `netmon.json`;
//! - [`stats`] holds the sources (`/proc/net/dev`, the iptables port, `/sys/class/net`);
//! - [`poller`] holds one measurement cycle, the rule count aggregate and the telemetry line.

pub mod config;
pub mod poller;
#[cfg(test)]
mod proptests;
pub mod stats;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use config::Config;
use poller::Aggregator;
use stats::NetworkStats;

/// Upstream's fixed telemetry log path.
pub const TELEMETRY_LOG: &str = "/var/vcap/sys/log/netmon/telemetry.log";

/// Runs the pollers until SIGTERM/SIGINT. `telemetry_log` is used only when telemetry is on;
/// it is truncated at start, as upstream creates it anew.
pub async fn run(
    cfg: Config,
    stats: Arc<dyn NetworkStats>,
    metrics: silk_ops::Metrics,
    telemetry_log: PathBuf,
) -> anyhow::Result<()> {
    let (mut telemetry_tick, mut telemetry) = match cfg.telemetry {
        Some(every) => {
            let file = std::fs::File::create(&telemetry_log).map_err(|e| {
                anyhow::anyhow!("creating-telemetry-log: {}: {e}", telemetry_log.display())
            })?;
            let mut tick = interval_at(Instant::now() + every, every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            (Some(tick), Some((file, every)))
        }
        None => (None, None),
    };
    let aggregate = Arc::new(Mutex::new(Aggregator::default()));
    let mut poll = interval_at(Instant::now() + cfg.poll_interval, cfg.poll_interval);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let signal = silk_ops::shutdown::wait_for_signal();
    tokio::pin!(signal);
    silk_ops::log::info("starting", json!({}));
    loop {
        tokio::select! {
            s = &mut signal => {
                silk_ops::log::info("exited", json!({"signal": s.unwrap_or("none")}));
                return Ok(());
            }
            _ = poll.tick() => {
                let (stats, metrics, aggregate) = (stats.clone(), metrics.clone(), aggregate.clone());
                let interface = cfg.interface_name.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    cycle(stats.as_ref(), &interface, &metrics, &aggregate)
                })
                .await;
            }
            _ = tick_opt(&mut telemetry_tick) => {
                if let Some((file, every)) = telemetry.as_mut() {
                    let stats = stats.clone();
                    let count = tokio::task::spawn_blocking(move || stats.iptables_rule_count())
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()));
                    write_telemetry(file, count, *every, &aggregate);
                }
            }
        }
    }
}

/// One metric cycle; its rule count joins the telemetry aggregate.
fn cycle(
    stats: &dyn NetworkStats,
    interface: &str,
    metrics: &silk_ops::Metrics,
    aggregate: &Mutex<Aggregator>,
) {
    let (rules, err) = poller::measure(stats, interface, metrics);
    if let (Some(r), Ok(mut agg)) = (rules, aggregate.lock()) {
        agg.update(r);
    }
    if let Some((event, error)) = err {
        silk_ops::log::error(&format!("measure.{event}"), json!({ "error": error }));
    }
}

/// Appends one telemetry line for the fresh rule `count` and the aggregate of the cycles since
/// the previous line, then starts the aggregate over.
fn write_telemetry(
    file: &mut std::fs::File,
    count: Result<u64, String>,
    every: std::time::Duration,
    aggregate: &Mutex<Aggregator>,
) {
    let count = match count {
        Ok(c) => c,
        Err(error) => {
            silk_ops::log::error("failed-fetching-network-stats", json!({ "error": error }));
            return;
        }
    };
    let mut agg = aggregate
        .lock()
        .map(|mut a| std::mem::take(&mut *a))
        .unwrap_or_default();
    // Without a cycle since the previous line, the fresh count is the aggregate.
    if agg.count == 0 {
        agg.update(count);
    }
    let now = silk_ops::log::line::now_nanos();
    let data = poller::telemetry_data(
        &silk_ops::log::rfc3339_at(now),
        count,
        every.as_secs(),
        &agg,
    );
    let line = poller::telemetry_line(now, &data);
    if let Err(e) = writeln!(file, "{line}") {
        silk_ops::log::error("write-telemetry-log", json!({"error": e.to_string()}));
    }
}

/// Ticks of `tick`, or never when there is none.
async fn tick_opt(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}
