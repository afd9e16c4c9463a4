//! Loggregator v2: the envelope messages ([`proto`]), the `loggregator` block of a job config
//! ([`config`]) and the gRPC ingress client used as a metrics [`Sink`](crate::metrics::Sink)
//! ([`client`]).

pub mod client;
pub mod config;
pub mod proto;

pub use client::{AppLog, LoggregatorError, LoggregatorSink, AGENT_SERVER_NAME};
pub use config::{LoggregatorV2, RawLoggregator, DEFAULT_API_PORT};
