//! The lease store (control-plane §3): one [`LeaseStore`] contract for the statements of §3.3,
//! implemented for PostgreSQL ([`postgres`]) and MySQL ([`mysql`]); [`open`] connects to the
//! engine the config names, adopts the schema (§3.4) and hands back the store.
//!
//! Every implementation keeps upstream's semantics: single autocommit statements, no row
//! locks, the three UNIQUE constraints of `subnets` arbitrate races, and every time is the
//! database clock in epoch seconds. The lease logic above it ([`crate::leaser`]) is tested once
//! against the in-memory port ([`memory`], test builds only).

mod gate;
#[cfg(test)]
pub mod memory;
pub mod mysql;
pub mod postgres;
mod runtime;
pub(crate) mod tls;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use silk_core::{Lease, LeaseTable};

use crate::config::{Config, Engine};
use crate::pool::Kind;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type StoreResult<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Active leases a batch at a time, in the order the engine sends them; the channel ends
/// with the batch marked `last`, or with the one error that ends the read.
pub type LeaseBatches = tokio::sync::mpsc::UnboundedReceiver<Result<Batch, StoreError>>;

/// The next batch of `batches`; an error when the channel closed before the batch marked
/// `last` (a reader that stopped without saying why). Not to be called after `last`.
pub(crate) async fn next_batch(batches: &mut LeaseBatches) -> Result<Batch, StoreError> {
    batches.recv().await.unwrap_or_else(|| {
        Err(StoreError::Connection(
            "the lease read ended without its last batch".into(),
        ))
    })
}

/// Leases per batch of a store's [`LeaseStore::active_batches`]: a few batches for thousands of
/// leases.
pub(crate) const BATCH: usize = 1024;

/// Some of the active leases; `last` when no more follow.
#[derive(Debug)]
pub struct Batch {
    pub leases: LeaseTable,
    pub last: bool,
}

/// A failed statement, engine-neutral.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection to the database (pool exhausted, server gone, TLS refused).
    #[error("get database connection: {0}")]
    Connection(String),
    /// A UNIQUE constraint refused the row: another writer took the value first.
    #[error("{0}")]
    UniqueViolation(String),
    #[error("{0}")]
    Sql(String),
    #[error("database did not answer within {0} s")]
    Timeout(u64),
}

impl StoreError {
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::UniqueViolation(_))
    }
}

/// What one [`LeaseStore::claim`] found or wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The host's row as it was; nothing was written.
    Existing(Lease),
    /// A new row for the host.
    New(Lease),
    /// Nothing written: every candidate was taken, or the host got a row concurrently.
    Taken,
}

/// (all rows, block rows, rows not renewed within the staleness threshold), for the metrics.
pub type Counts = (i64, i64, i64);

/// The `subnets` table as the lease logic sees it (control-plane §3.3).
///
/// The kind of a row is its `/32` text suffix, as upstream decides it; `expiration` is
/// `lease_expiration_seconds`; "now" is the database clock.
pub trait LeaseStore: Send + Sync {
    /// `SELECT 1`.
    fn ping(&self) -> StoreResult<'_, ()>;

    /// The row of `underlay_ip`, if any.
    fn lookup<'a>(&'a self, underlay_ip: &'a str) -> StoreResult<'a, Option<Lease>>;

    /// Deletes the row of `underlay_ip` if it still holds `subnet`; returns whether it did.
    fn delete_lease<'a>(&'a self, underlay_ip: &'a str, subnet: &'a str) -> StoreResult<'a, bool>;

    /// One acquire attempt in (normally) one round trip: the row of `underlay_ip` if it has
    /// one (nothing is written), else a new row for it (renewed now) with the first candidate
    /// `(subnet, MAC)` that no row holds. [`Claim::Taken`] when every candidate was taken (also
    /// by a concurrent writer) or `underlay_ip` got a row concurrently. `subnets` and `macs`
    /// have the same length.
    fn claim<'a>(
        &'a self,
        underlay_ip: &'a str,
        subnets: &'a [String],
        macs: &'a [String],
    ) -> StoreResult<'a, Claim>;

    /// Every `overlay_subnet` of `kind`, expired and foreign rows included.
    fn taken(&self, kind: Kind) -> StoreResult<'_, HashSet<String>>;

    /// Up to `limit` expired rows of `kind`, oldest `last_renewed_at` first: `(id, subnet)`.
    fn oldest_expired(
        &self,
        kind: Kind,
        expiration: i64,
        limit: i64,
    ) -> StoreResult<'_, Vec<(i64, String)>>;

    /// Hands the row `id` (holding `subnet`) to `underlay_ip` with `mac`, renewed now, if it
    /// is still expired; `None` when someone renewed or took it first.
    fn take_over_expired<'a>(
        &'a self,
        id: i64,
        subnet: &'a str,
        expiration: i64,
        underlay_ip: &'a str,
        mac: &'a str,
    ) -> StoreResult<'a, Option<Lease>>;

    /// Renews the row equal to `lease` in all three strings; returns whether one existed.
    fn renew_exact<'a>(&'a self, lease: &'a Lease) -> StoreResult<'a, bool>;

    /// Inserts `lease` verbatim, renewed now; a taken value is a
    /// [`StoreError::UniqueViolation`].
    fn insert<'a>(&'a self, lease: &'a Lease) -> StoreResult<'a, ()>;

    /// Every row with `last_renewed_at + expiration > now`, in batches as the rows arrive, so a
    /// caller can work on the first while the engine still sends the rest. A read that fails
    /// before its first batch has read nothing (here or as the first item). The read goes on to
    /// its end whatever the receiver does, and each batch is sent without waiting: a slow
    /// reader never holds a database connection.
    fn active_batches(&self, expiration: i64) -> StoreResult<'_, LeaseBatches>;

    /// [`active_batches`](Self::active_batches) in one table; the first error ends it.
    fn active(&self, expiration: i64) -> StoreResult<'_, LeaseTable> {
        Box::pin(async move {
            let mut batches = self.active_batches(expiration).await?;
            let mut table = LeaseTable::default();
            loop {
                let batch = next_batch(&mut batches).await?;
                table.append(&batch.leases);
                if batch.last {
                    return Ok(table);
                }
            }
        })
    }

    /// Deletes the row of `underlay_ip`; returns whether one existed.
    fn release<'a>(&'a self, underlay_ip: &'a str) -> StoreResult<'a, bool>;

    /// Row counts for the metrics; `stale_after` in seconds.
    fn counts(&self, stale_after: i64) -> StoreResult<'_, Counts>;

    /// Connections the pool holds now (the `DBOpenConnections` metric).
    fn open_connections(&self) -> usize;

    /// Opens the connections a pool starts with (`max_idle_connections`, at most
    /// `max_open_connections`) in the background, so the first burst of requests finds them.
    fn warm_up(&self) {}
}

/// Checkout slots a pool starts with: the connections opened by [`LeaseStore::warm_up`].
pub(crate) fn initial_slots(config: &Config) -> usize {
    config
        .max_idle_connections
        .clamp(1, config.max_open_connections.max(1))
}

/// Opens `n` pooled connections at once (held together, so each `get` opens one of its own)
/// and gives them back to the pool; a failure only costs a request its own connect later.
pub(crate) async fn warm<Fut, T, E>(n: usize, get: impl Fn() -> Fut)
where
    Fut: Future<Output = Result<T, E>>,
{
    let opened = futures::future::join_all((0..n).map(|_| get())).await;
    let failed = opened.iter().filter(|c| c.is_err()).count();
    if failed > 0 {
        silk_ops::log::debug("db-warm-up", serde_json::json!({ "failed": failed }));
    }
}

/// Shared handle to the configured store.
pub type Store = Arc<dyn LeaseStore>;

/// The `overlay_subnet` filter of `kind`, valid on both engines (also under ANSI_QUOTES).
pub fn kind_filter(kind: Kind) -> &'static str {
    match kind {
        Kind::SingleIp => "overlay_subnet LIKE '%/32'",
        Kind::Block => "overlay_subnet NOT LIKE '%/32'",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("database tls: {0}")]
    Tls(String),
    #[error("{host}:{port}: {reason}")]
    Connect {
        host: String,
        port: u16,
        reason: String,
    },
    #[error("{0}")]
    Migrate(#[from] MigrateError),
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("executing migration: {0}")]
    Sql(String),
    #[error("unknown migration in database: {0}")]
    UnknownMigration(String),
}

/// Connects to the configured engine (retrying within `database.timeout`), adopts the schema
/// (§3.4, retried 5 times as upstream) and returns the store.
pub async fn open(config: &Config) -> Result<Store, OpenError> {
    let (store, applied): (Store, u32) = match config.database.engine {
        Engine::Postgres => {
            let pool = postgres::connect(config).await?;
            let applied = postgres::migrate::migrate(&pool).await?;
            (Arc::new(postgres::PgStore::new(pool, config)), applied)
        }
        Engine::Mysql => {
            let store = mysql::MysqlStore::connect(config).await?;
            let applied = store.migrate().await?;
            (Arc::new(store), applied)
        }
    };
    store.warm_up();
    silk_ops::log::info(
        "db-migration-complete",
        serde_json::json!({ "num-applied": applied }),
    );
    Ok(store)
}

/// Runs `attempt` up to 5 times, 1 s apart, as sql-migrate's caller upstream; an unknown
/// migration id stops at once.
pub(crate) async fn with_migration_retries<F, Fut>(mut attempt: F) -> Result<u32, MigrateError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u32, MigrateError>>,
{
    let mut n = 0;
    loop {
        n += 1;
        match attempt().await {
            Ok(applied) => return Ok(applied),
            Err(e @ MigrateError::UnknownMigration(_)) => return Err(e),
            Err(e) if n >= 5 => return Err(e),
            Err(e) => {
                silk_ops::log::warn(
                    "db-migration-retry",
                    serde_json::json!({ "attempt": n, "error": e.to_string() }),
                );
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}
