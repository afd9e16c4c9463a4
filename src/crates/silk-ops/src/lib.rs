//! Runtime pieces every silk program shares: lager-shaped JSON logging on the `log` facade
//! ([`log`]) and the one renderer of lager lines in both of lager's formats, also used by the
//! CNI plugins' log files, netmon's telemetry log and iptables-logger's records ([`log::line`]),
//! metrics sent as dropsonde v1 envelopes or over Loggregator v2 gRPC and rendered
//! as Prometheus text ([`metrics`], [`dropsonde`], [`loggregator`]), the debug server with `/log-level` and `/metrics`
//! ([`debug_server`]), signal handling for graceful shutdown ([`shutdown`]), Go-style
//! single-dash flags ([`flags`]) and config loading with every problem listed ([`config`]).
//!
//! A daemon's main uses them like this:
//!
//! ```text
//! silk_ops::log::init("cfnetworking", "silk-daemon", log::LevelFilter::Info);
//! silk_ops::log::info("renew-lease", serde_json::json!({ "lease": lease }));
//! // dropsonde v1 to 127.0.0.1:metron_port, or Loggregator v2 when the config's
//! // `loggregator` block turns it on (see `silk_ops::loggregator::RawLoggregator::validate`)
//! let metrics = silk_ops::Metrics::from_config("silk-daemon", Some(metron), v2.as_ref())?;
//! metrics.incr("renewals");                       // CounterEvent, delta 1
//! metrics.value("numberLeases", 12.0, "");        // ValueMetric
//! silk_ops::metrics::spawn_emitter(metrics.clone(), Duration::from_secs(30), |_m| async {});
//! let debug = silk_ops::debug_server(config.debug_server_port, metrics.clone())?;
//! let debug_handle = debug.handle();
//! tokio::spawn(debug);                            // works on a plain tokio runtime too
//! silk_ops::shutdown::wait_for_signal().await?;
//! debug_handle.stop(true).await;
//! ```

pub mod config;
pub mod debug_server;
pub mod dropsonde;
pub mod flags;
pub mod log;
pub mod loggregator;
pub mod metrics;
pub mod shutdown;

pub use debug_server::{debug_server, debug_server_with};
pub use metrics::Metrics;
