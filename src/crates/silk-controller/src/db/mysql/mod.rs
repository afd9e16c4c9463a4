//! MySQL (`type: mysql`, control-plane §3.1-3.4) through mysql_async with its own pool.
//!
//! Upstream's DSN semantics, key for key:
//! - `parseTime=true`: the binary protocol returns `DATETIME` as a date value, checked at
//!   adoption with `SELECT NOW()` as sql-migrate does;
//! - `sql_mode` = the session's mode plus `ANSI_QUOTES`, set on every new connection;
//! - dial, read and write timeouts = `database.timeout`: every connect and every statement
//!   is bounded by it (a wait for a free pooled connection by at least 60 s);
//! - pool: at most `max_open_connections`, `max_idle_connections` kept idle (more only for
//!   [`IDLE_GRACE`] after a burst), each connection closed after
//!   `connections_max_lifetime_seconds`;
//! - TLS (`require_ssl`) through rustls with the ring provider, trusting only `ca_cert`.
//!
//! `CLIENT_FOUND_ROWS` is on, so an `UPDATE` that changes nothing (a second renew in the same
//! second) still counts the row it matched.
//!
//! Pool tasks and sockets live on the database runtime ([`super::runtime`]), like PostgreSQL's.

pub mod migrate;
mod preflight;
mod store;

use std::path::PathBuf;
use std::time::Duration;

use mysql_async::{OptsBuilder, Pool, PoolConstraints, PoolOpts, SslOpts};

use super::runtime::{self, POOL_WAIT};
use super::OpenError;
use crate::config::{Config, DatabaseConfig};

pub use store::MysqlStore;

/// How long an idle connection beyond `max_idle_connections` stays open.
pub const IDLE_GRACE: Duration = Duration::from_secs(10);

/// The session mode upstream asks for with `sql_mode=(SELECT CONCAT(@@sql_mode,',ANSI_QUOTES'))`.
pub const SQL_MODE_INIT: &str =
    "SET SESSION sql_mode = (SELECT CONCAT(@@sql_mode, ',ANSI_QUOTES'))";

/// Connection options from the config's database section and pool keys; `tls_name` is the
/// name to verify the server certificate against instead of `host` (see [`preflight`]).
pub fn opts(config: &Config, tls_name: Option<String>) -> Result<mysql_async::Opts, OpenError> {
    let db = &config.database;
    let max = config.max_open_connections.max(1);
    let min = config.max_idle_connections.min(max);
    let constraints = PoolConstraints::new(min, max).ok_or_else(|| OpenError::Connect {
        host: db.host.clone(),
        port: db.port,
        reason: format!("invalid pool size: {min} idle, {max} open"),
    })?;
    let pool = PoolOpts::default()
        .with_constraints(constraints)
        // Idle connections beyond `max_idle_connections` are closed after IDLE_GRACE rather
        // than the moment they come back, so a burst wider than the idle bound does not
        // reconnect for every statement.
        .with_inactive_connection_ttl(IDLE_GRACE)
        .with_ttl_check_interval(IDLE_GRACE / 2)
        .with_abs_conn_ttl(config.connections_max_lifetime)
        .with_reset_connection(false);
    let builder = OptsBuilder::default()
        .ip_or_hostname(db.host.clone())
        .tcp_port(db.port)
        .user(Some(db.user.clone()))
        .pass(Some(db.password.clone()))
        .db_name((!db.database_name.is_empty()).then(|| db.database_name.clone()))
        // A loopback server would otherwise be re-dialled over its unix socket, without TLS.
        .prefer_socket(false)
        .client_found_rows(true)
        .tcp_nodelay(true)
        .init(vec![SQL_MODE_INIT])
        .pool_opts(pool)
        .ssl_opts(if db.require_ssl {
            Some(ssl_opts(db, tls_name).map_err(OpenError::Tls)?)
        } else {
            None
        });
    Ok(builder.into())
}

/// Trust exactly the certificates of `ca_cert` and verify the dialled name, or with
/// `skip_hostname_validation` the name the server's certificate carries (learnt by
/// [`preflight`] after verifying its chain); a certificate without a DNS name is then only
/// chain-checked by the pre-flight.
fn ssl_opts(db: &DatabaseConfig, tls_name: Option<String>) -> Result<SslOpts, String> {
    let roots = super::tls::load_roots(db)?;
    if roots.is_empty() {
        return Err(format!("no certificate in ca_cert {}", db.ca_cert));
    }
    let ssl = SslOpts::default()
        .with_root_certs(vec![PathBuf::from(&db.ca_cert).into()])
        .with_disable_built_in_roots(true);
    Ok(match (db.skip_hostname_validation, tls_name) {
        (false, _) => ssl,
        (true, Some(name)) => ssl.with_danger_tls_hostname_override(Some(name)),
        (true, None) => ssl.with_danger_accept_invalid_certs(true),
    })
}

/// Builds the pool on the database runtime and checks that the server answers (retrying
/// within `database.timeout`, as upstream retries dial errors).
pub async fn connect_pool(config: &Config) -> Result<Pool, OpenError> {
    let db = config.database.clone();
    let deadline = tokio::time::Instant::now() + db.timeout;
    let tls_name = if db.require_ssl && db.skip_hostname_validation {
        loop {
            match preflight::presented_name(&db).await {
                Ok(name) => break name,
                Err(e) if tokio::time::Instant::now() + Duration::from_secs(1) < deadline => {
                    silk_ops::log::warn("db-connect-retry", serde_json::json!({ "error": e }));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(reason) => {
                    return Err(OpenError::Connect {
                        host: db.host.clone(),
                        port: db.port,
                        reason,
                    })
                }
            }
        }
    } else {
        None
    };
    let opts = opts(config, tls_name)?;
    let pool = runtime::run(async move { Pool::new(opts) }).await;
    loop {
        let p = pool.clone();
        let dial = db.timeout;
        let attempt = runtime::run(async move {
            match tokio::time::timeout(dial, p.get_conn()).await {
                Ok(Ok(_conn)) => Ok(()),
                // mysql_async repeats the kind for wrapped I/O errors.
                Ok(Err(e)) => Err(e.to_string().replace(
                    "Input/output error: Input/output error: ",
                    "Input/output error: ",
                )),
                Err(_) => Err("connect timed out".to_string()),
            }
        });
        match attempt.await {
            Ok(()) => return Ok(pool),
            Err(e) if tokio::time::Instant::now() + Duration::from_secs(1) < deadline => {
                silk_ops::log::warn("db-connect-retry", serde_json::json!({ "error": e }));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(reason) => {
                let _ = runtime::run(async move { pool.disconnect().await }).await;
                return Err(OpenError::Connect {
                    host: db.host.clone(),
                    port: db.port,
                    reason,
                });
            }
        }
    }
}

/// Longest wait for a pooled connection: the dial timeout, at least [`POOL_WAIT`].
fn pool_wait(db: &DatabaseConfig) -> Duration {
    POOL_WAIT.max(db.timeout)
}
