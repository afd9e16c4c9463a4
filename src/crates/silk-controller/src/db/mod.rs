//! PostgreSQL access (control-plane §3): the connection pool built from the config's database
//! section and pool keys, schema adoption ([`migrate`]) and the lease statements ([`store`]).

pub mod migrate;
mod runtime;
pub mod store;
mod tls;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::config::{Config, DatabaseConfig};

pub use store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("database tls: {0}")]
    Tls(String),
    #[error("build connection pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("connect to database {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: deadpool_postgres::PoolError,
    },
}

/// Longest wait for a pooled connection before a request fails with 500.
const POOL_WAIT: Duration = Duration::from_secs(60);

/// The tokio-postgres connection settings for `db`.
pub fn pg_config(db: &DatabaseConfig) -> tokio_postgres::Config {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&db.host)
        .port(db.port)
        .user(&db.user)
        .password(db.password.as_bytes())
        .application_name("silk-controller")
        // Upstream passes the timeout in milliseconds where lib/pq reads seconds; we use seconds.
        .connect_timeout(db.timeout);
    if !db.database_name.is_empty() {
        pg.dbname(&db.database_name);
    }
    pg
}

/// Builds the pool (`max_open_connections` connections at most; a connection older than
/// `connections_max_lifetime_seconds` is dropped when it comes back) and checks that the
/// database answers, retrying for up to `database.timeout`.
pub async fn connect(config: &Config) -> Result<Pool, ConnectError> {
    let db = &config.database;
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let pg = pg_config(db);
    let manager = if db.require_ssl {
        let tls = tls::make_connector(db).map_err(ConnectError::Tls)?;
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
    let pool = builder.build()?;
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
            Err(source) => {
                return Err(ConnectError::Connect {
                    host: db.host.clone(),
                    port: db.port,
                    source,
                })
            }
        }
    }
}
