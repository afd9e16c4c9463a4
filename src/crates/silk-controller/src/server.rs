//! Start-up after the config is valid (control-plane §1.9): TLS config, database, adoption,
//! then the API, health and debug servers and the metrics emitter; shutdown in reverse order
//! with in-flight requests finishing (up to 60 s, as upstream).

use std::time::Duration;

use actix_web::{App, HttpServer};
use serde_json::json;
use silk_ops::Metrics;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::db::{self, Store};
use crate::leaser::Leaser;
use crate::pool::Kind;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("connecting to database: {0}")]
    Connect(db::OpenError),
    #[error("migrating database: {0}")]
    Migrate(db::MigrateError),
    #[error("metrics: {0}")]
    Metrics(#[from] silk_ops::loggregator::LoggregatorError),
    #[error("bind {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The running servers.
pub struct Running {
    pub api: actix_web::dev::ServerHandle,
    pub health: actix_web::dev::ServerHandle,
    pub debug: actix_web::dev::ServerHandle,
    emitter: tokio::task::JoinHandle<()>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Everything up to serving; returns once all listeners are bound.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let tls = crate::tls::server_config(
        &config.ca_cert_file,
        &config.server_cert_file,
        &config.server_key_file,
    )?;
    let store = db::open(config).await.map_err(|e| match e {
        db::OpenError::Migrate(m) => StartError::Migrate(m),
        other => StartError::Connect(other),
    })?;

    let metrics = Metrics::from_config(
        "silk-controller",
        silk_ops::metrics::local_metron(config.metron_port),
        config.loggregator.as_ref(),
    )?;
    let leaser = Leaser::new(
        store.clone(),
        config.pool.clone(),
        config.lease_expiration_seconds,
    );
    let state = ApiState {
        leaser,
        metrics: metrics.clone(),
    };
    silk_ops::log::info("starting-servers", json!({}));
    let api_addr = format!("{}:{}", config.listen_host, config.listen_port);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let api = HttpServer::new(move || App::new().configure(api::configure(state.clone())))
        .on_connect(no_delay)
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(60)
        .keep_alive(actix_web::http::KeepAlive::Timeout(Duration::from_secs(
            180,
        )))
        .bind_rustls_0_23(&api_addr, tls)
        .map_err(|source| StartError::Bind {
            what: "api",
            addr: api_addr.clone(),
            source,
        })?
        .run();
    let health =
        crate::health::health_server(config.health_check_port, store.clone(), metrics.clone())
            .map_err(|source| StartError::Bind {
                what: "health",
                addr: format!("127.0.0.1:{}", config.health_check_port),
                source,
            })?;
    let debug =
        silk_ops::debug_server(config.debug_server_port, metrics.clone()).map_err(|source| {
            StartError::Bind {
                what: "debug",
                addr: format!("127.0.0.1:{}", config.debug_server_port),
                source,
            }
        })?;
    let emitter = spawn_emitter(config, store, metrics);
    let running = Running {
        api: api.handle(),
        health: health.handle(),
        debug: debug.handle(),
        emitter,
        tasks: vec![tokio::spawn(api), tokio::spawn(health), tokio::spawn(debug)],
    };
    silk_ops::log::info("running", json!({ "listen": api_addr }));
    Ok(running)
}

/// TCP_NODELAY on every accepted API connection, as Go's net/http has it: without it a large
/// response (`GET /leases`) waits for the client's delayed ACK (~40 ms) between segments.
fn no_delay(conn: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    if let Some(tls) = conn.downcast_ref::<Tls>() {
        let _ = tls.get_ref().0.set_nodelay(true);
    }
}

fn spawn_emitter(config: &Config, store: Store, metrics: Metrics) -> tokio::task::JoinHandle<()> {
    let block_pool = config.pool.size(Kind::Block) as i64;
    let stale = config.staleness_threshold_seconds;
    let max_open = config.max_open_connections;
    silk_ops::metrics::spawn_emitter(metrics, config.metrics_emit, move |m| {
        let store = store.clone();
        async move {
            match store.counts(stale).await {
                Ok((total, blocks, stale_rows)) => {
                    m.value("totalLeases", total as f64, "");
                    // Upstream subtracts every row (single-IP ones included); we count blocks.
                    m.value("freeLeases", (block_pool - blocks).max(0) as f64, "");
                    m.value("staleLeases", stale_rows as f64, "");
                }
                Err(e) => {
                    silk_ops::log::error("metrics-query-failed", json!({ "error": e.to_string() }))
                }
            }
            m.value("DBOpenConnections", store.open_connections() as f64, "");
            m.value("DBMaxOpenConnections", max_open as f64, "");
        }
    })
}

impl Running {
    /// Stops the servers in reverse start order; the API lets in-flight requests finish.
    pub async fn stop(self) {
        self.emitter.abort();
        self.debug.stop(true).await;
        self.health.stop(true).await;
        self.api.stop(true).await;
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
