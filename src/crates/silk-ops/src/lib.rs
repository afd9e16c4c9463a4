//! Runtime pieces every silk daemon shares: lager-shaped JSON logging on the `log` facade
//! ([`log`]), metrics sent as dropsonde v1 envelopes and rendered as Prometheus text
//! ([`metrics`], [`dropsonde`]), the debug server with `/log-level` and `/metrics`
//! ([`debug_server`]), and signal handling for graceful shutdown ([`shutdown`]).

pub mod debug_server;
pub mod dropsonde;
pub mod log;
pub mod metrics;
pub mod shutdown;

pub use debug_server::debug_server;
pub use metrics::Metrics;
