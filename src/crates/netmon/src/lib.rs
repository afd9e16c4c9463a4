//! netmon (policy contract §6): every `poll_interval` sends the cell's interface count,
//! iptables rule count and overlay device counters to the metron agent; with telemetry on,
//! also appends the rule count statistics to a telemetry log every `telemetry_interval`.
//!
//! - [`config`] holds `netmon.json`;
//! - [`stats`] holds the sources (`/proc/net/dev`, `iptables -S`, `/sys/class/net`);
//! - [`poller`] holds one measurement cycle, the rule count aggregate and the telemetry line.

pub mod config;
pub mod poller;
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
                let (stats, metrics, interface, aggregate) =
                    (stats.clone(), metrics.clone(), cfg.interface_name.clone(), aggregate.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    let (rules, err) = poller::measure(stats.as_ref(), &interface, &metrics);
                    if let (Some(r), Ok(mut agg)) = (rules, aggregate.lock()) {
                        agg.update(r);
                    }
                    if let Some((event, error)) = err {
                        silk_ops::log::error(&format!("measure.{event}"), json!({ "error": error }));
                    }
                })
                .await;
            }
            _ = tick_opt(&mut telemetry_tick) => {
                if let Some((file, every)) = telemetry.as_mut() {
                    let stats = stats.clone();
                    let count = tokio::task::spawn_blocking(move || stats.iptables_rule_count()).await;
                    match count {
                        Ok(Ok(count)) => {
                            let agg = aggregate
                                .lock()
                                .map(|mut a| {
                                    let snapshot = a.clone();
                                    a.flush();
                                    snapshot
                                })
                                .unwrap_or_default();
                            // Without a poll since the last line, the fresh count is the aggregate.
                            let agg = if agg.count == 0 {
                                let mut a = Aggregator::default();
                                a.update(count);
                                a
                            } else {
                                agg
                            };
                            let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
                            let data = poller::telemetry_data(&rfc3339_nanos(now), count, every.as_secs(), &agg);
                            let line = poller::telemetry_line(&epoch_seconds(now), &data);
                            if let Err(e) = writeln!(file, "{line}") {
                                silk_ops::log::error("write-telemetry-log", json!({"error": e.to_string()}));
                            }
                        }
                        Ok(Err(e)) => silk_ops::log::error(
                            "failed-fetching-network-stats",
                            json!({"error": e.to_string()}),
                        ),
                        Err(e) => silk_ops::log::error(
                            "failed-fetching-network-stats",
                            json!({"error": e.to_string()}),
                        ),
                    }
                }
            }
        }
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

/// `1764675601.123456789`: lager's epoch timestamp.
pub fn epoch_seconds(nanos: i128) -> String {
    format!(
        "{}.{:09}",
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000)
    )
}

/// `2025-12-02T11:40:01.123456789Z`.
pub fn rfc3339_nanos(nanos: i128) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}
