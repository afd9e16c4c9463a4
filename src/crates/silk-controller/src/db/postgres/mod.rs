//! PostgreSQL (`type: postgres`, control-plane §3): the connection pool built from the
//! config's database section and pool keys, schema adoption ([`migrate`]) and the lease
//! statements ([`PgStore`]).

mod copy_text;
pub mod migrate;
mod store;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, QueueMode, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;

use super::runtime::{self, POOL_WAIT};
use super::OpenError;
use crate::config::{Config, DatabaseConfig};

pub use store::PgStore;

/// The tokio-postgres connection settings for `db`.
pub fn pg_config(db: &DatabaseConfig) -> tokio_postgres::Config {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&db.host)
        .port(db.port)
        .user(&db.user)
        .password(db.password.as_bytes())
        .application_name("silk-controller")
        // Upstream passes the timeout in milliseconds where lib/pq reads seconds; we use seconds.
        .connect_timeout(db.timeout)
        // Never fall back to plain text when TLS is required.
        .ssl_mode(if db.require_ssl {
            SslMode::Require
        } else {
            SslMode::Disable
        });
    if !db.database_name.is_empty() {
        pg.dbname(&db.database_name);
    }
    pg
}

/// Builds the pool (`max_open_connections` connections at most; a connection older than
/// `connections_max_lifetime_seconds` is dropped when it comes back) and checks that the
/// database answers, retrying for up to `database.timeout`.
pub async fn connect(config: &Config) -> Result<Pool, OpenError> {
    let db = &config.database;
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let pg = pg_config(db);
    let manager = if db.require_ssl {
        let tls = super::tls::pg_connector(db).map_err(OpenError::Tls)?;
        Manager::from_connect(pg, runtime::OnDbRuntime { tls }, manager_config)
    } else {
        Manager::from_connect(
            pg,
            runtime::OnDbRuntime {
                tls: tokio_postgres::NoTls,
            },
            manager_config,
        )
    };
    let mut builder = Pool::builder(manager)
        .max_size(config.max_open_connections)
        // The connection returned last goes out first: a light load keeps using one warm
        // backend process instead of waking each pooled one in turn (mysql_async's order too).
        .queue_mode(QueueMode::Lifo)
        .runtime(Runtime::Tokio1)
        // Waiting for a free connection is bounded generously: Go's database/sql waits forever.
        .wait_timeout(Some(POOL_WAIT.max(db.timeout)))
        .create_timeout(Some(db.timeout))
        .recycle_timeout(Some(Duration::from_secs(5)));
    if let Some(lifetime) = config.connections_max_lifetime {
        builder = builder.pre_recycle(deadpool_postgres::Hook::sync_fn(move |_, metrics| {
            if metrics.age() > lifetime {
                Err(deadpool_postgres::HookError::message(
                    "connection reached its max lifetime",
                ))
            } else {
                Ok(())
            }
        }));
    }
    let pool = builder.build().map_err(|e| OpenError::Connect {
        host: db.host.clone(),
        port: db.port,
        reason: format!("build connection pool: {e}"),
    })?;
    // Upstream retries dial errors 3 s apart within the timeout; one deadline covers it here.
    let deadline = tokio::time::Instant::now() + db.timeout;
    loop {
        match pool.get().await {
            Ok(_) => return Ok(pool),
            Err(e) if tokio::time::Instant::now() + Duration::from_secs(1) < deadline => {
                silk_ops::log::warn(
                    "db-connect-retry",
                    serde_json::json!({ "error": e.to_string() }),
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(OpenError::Connect {
                    host: db.host.clone(),
                    port: db.port,
                    reason: match &e {
                        deadpool_postgres::PoolError::Backend(b) => pg_error_chain(b),
                        other => pg_error_chain(other),
                    },
                })
            }
        }
    }
}

/// The error with its causes ("error connecting to server: ...: invalid peer certificate ...").
pub(crate) fn pg_error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
