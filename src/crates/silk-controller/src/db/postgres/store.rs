//! The statements of control-plane §3.3 on PostgreSQL. Single autocommit statements, no row
//! locks: the three UNIQUE constraints arbitrate races, as upstream. Every time is the
//! database clock in `bigint` epoch seconds ([`NOW`]), so nothing overflows in 2038.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::StreamExt;
use silk_core::{Lease, LeaseTable};
use tokio_postgres::error::SqlState;

use super::copy_text::CopyReader;
use crate::config::Config;
use crate::db::gate::{Gate, Slot};
use crate::db::runtime::{self, POOL_WAIT};
use crate::db::{
    initial_slots, kind_filter, warm, Batch, Claim, Counts, LeaseBatches, LeaseStore, StoreError,
    StoreResult, BATCH,
};
use crate::pool::Kind;

/// "now" in epoch seconds from the database clock; upstream casts to 32-bit `integer`.
macro_rules! now_sql {
    () => {
        "EXTRACT(EPOCH FROM now())::bigint"
    };
}
pub const NOW: &str = now_sql!();

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Connection(super::pg_error_chain(&e))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            StoreError::UniqueViolation(super::pg_error_chain(&e))
        } else if e.is_closed() || e.code().is_none() {
            StoreError::Connection(super::pg_error_chain(&e))
        } else {
            StoreError::Sql(super::pg_error_chain(&e))
        }
    }
}

/// [`LeaseStore::claim`]: `$1` the host, `$2`/`$3` the candidate subnets and MACs in order.
const CLAIM: &str = concat!(
    "WITH existing AS (\
     SELECT overlay_subnet, overlay_hwaddr FROM subnets WHERE underlay_ip = $1\
 ), inserted AS (\
     INSERT INTO subnets (underlay_ip, overlay_subnet, overlay_hwaddr, last_renewed_at) \
     SELECT $1, c.s, c.m, ",
    now_sql!(),
    " \
     FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS c(s, m, o) \
     WHERE NOT EXISTS (SELECT 1 FROM existing) \
     AND NOT EXISTS (SELECT 1 FROM subnets x WHERE x.overlay_subnet = c.s OR x.overlay_hwaddr = c.m) \
     ORDER BY c.o LIMIT 1 \
     ON CONFLICT DO NOTHING \
     RETURNING overlay_subnet, overlay_hwaddr\
 ) \
 SELECT false, overlay_subnet, overlay_hwaddr FROM existing \
 UNION ALL SELECT true, overlay_subnet, overlay_hwaddr FROM inserted"
);

/// Reads a `COPY` stream into batches of [`BATCH`] leases (the last may be smaller or empty),
/// each sent as soon as it is full.
async fn read_batches(
    stream: tokio_postgres::CopyOutStream,
    tx: &tokio::sync::mpsc::UnboundedSender<Result<Batch, StoreError>>,
) -> Result<(), StoreError> {
    futures::pin_mut!(stream);
    let mut reader = CopyReader::default();
    let mut table = LeaseTable::with_capacity(BATCH);
    while let Some(chunk) = stream.next().await {
        reader.feed(&chunk?, &mut table).map_err(StoreError::Sql)?;
        if table.len() >= BATCH {
            let leases = std::mem::replace(&mut table, LeaseTable::with_capacity(BATCH));
            let _ = tx.send(Ok(Batch {
                leases,
                last: false,
            }));
        }
    }
    reader.finish().map_err(StoreError::Sql)?;
    let _ = tx.send(Ok(Batch {
        leases: table,
        last: true,
    }));
    Ok(())
}

/// The `subnets` table on a PostgreSQL pool, behind a [`Gate`].
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    gate: Arc<Gate>,
    /// Longest wait for a checkout slot.
    wait: Duration,
}

/// A pooled connection and its checkout slot; the connection goes back to the pool before the
/// slot is freed (fields drop in order), so the next waiter finds it idle.
struct Checkout {
    client: deadpool_postgres::Object,
    _slot: Slot,
}

impl std::ops::Deref for Checkout {
    type Target = deadpool_postgres::Object;

    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

impl PgStore {
    pub fn new(pool: Pool, config: &Config) -> Self {
        PgStore {
            gate: Arc::new(Gate::new(initial_slots(config), pool.status().max_size)),
            wait: pool.timeouts().wait.unwrap_or(POOL_WAIT),
            pool,
        }
    }

    /// A connection within the gate's slots (see [`crate::db::gate`]).
    async fn conn(&self) -> Result<Checkout, StoreError> {
        let pool = self.pool.clone();
        let slot = self
            .gate
            .enter(self.wait, runtime::spawn, move || async move {
                pool.get().await.is_ok()
            })
            .await?;
        Ok(Checkout {
            client: self.pool.get().await?,
            _slot: slot,
        })
    }
}

impl LeaseStore for PgStore {
    fn ping(&self) -> StoreResult<'_, ()> {
        Box::pin(async move {
            let client = self.conn().await?;
            client.simple_query("SELECT 1").await?;
            Ok(())
        })
    }

    /// The row of `underlay_ip`, if any.
    fn lookup<'a>(&'a self, underlay_ip: &'a str) -> StoreResult<'a, Option<Lease>> {
        Box::pin(async move {
            let client = self.conn().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT overlay_subnet, overlay_hwaddr FROM subnets WHERE underlay_ip = $1",
                )
                .await?;
            let row = client.query_opt(&stmt, &[&underlay_ip]).await?;
            Ok(row.map(|r| Lease {
                underlay_ip: underlay_ip.to_string(),
                overlay_subnet: r.get(0),
                overlay_hardware_addr: r.get(1),
            }))
        })
    }

    /// Deletes the row of `underlay_ip` if it still holds `subnet`; returns whether it did.
    fn delete_lease<'a>(&'a self, underlay_ip: &'a str, subnet: &'a str) -> StoreResult<'a, bool> {
        Box::pin(async move {
            let client = self.conn().await?;
            let stmt = client
                .prepare_cached(
                    "DELETE FROM subnets WHERE underlay_ip = $1 AND overlay_subnet = $2",
                )
                .await?;
            Ok(client.execute(&stmt, &[&underlay_ip, &subnet]).await? > 0)
        })
    }

    /// The host's row, or a new one with the first free candidate, in one statement: the
    /// `existing` CTE reads the host's row, the `INSERT … SELECT` runs only when there is none
    /// and skips candidates some row holds, and `ON CONFLICT DO NOTHING` turns a concurrent
    /// writer's win (on any of the three UNIQUE constraints) into no row, so the caller retries.
    /// One autocommit statement, as upstream's lookup and insert each are.
    fn claim<'a>(
        &'a self,
        underlay_ip: &'a str,
        subnets: &'a [String],
        macs: &'a [String],
    ) -> StoreResult<'a, Claim> {
        Box::pin(async move {
            let client = self.conn().await?;
            let stmt = client.prepare_cached(CLAIM).await?;
            let rows = client
                .query(&stmt, &[&underlay_ip, &subnets, &macs])
                .await?;
            // At most one row: `existing` and `inserted` exclude each other.
            Ok(match rows.first() {
                None => Claim::Taken,
                Some(r) => {
                    let lease = Lease {
                        underlay_ip: underlay_ip.to_string(),
                        overlay_subnet: r.get(1),
                        overlay_hardware_addr: r.get(2),
                    };
                    if r.get::<_, bool>(0) {
                        Claim::New(lease)
                    } else {
                        Claim::Existing(lease)
                    }
                }
            })
        })
    }

    /// Every `overlay_subnet` of `kind`, expired and foreign rows included.
    fn taken(&self, kind: Kind) -> StoreResult<'_, HashSet<String>> {
        Box::pin(async move {
            let client = self.conn().await?;
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT overlay_subnet FROM subnets WHERE {}",
                    kind_filter(kind)
                ))
                .await?;
            Ok(client
                .query(&stmt, &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    /// Expired rows of `kind`, oldest first: `(id, overlay_subnet)`.
    fn oldest_expired(
        &self,
        kind: Kind,
        expiration: i64,
        limit: i64,
    ) -> StoreResult<'_, Vec<(i64, String)>> {
        Box::pin(async move {
            let client = self.conn().await?;
            let stmt = client
                .prepare_cached(&format!(
                "SELECT id, overlay_subnet FROM subnets WHERE {} AND last_renewed_at + $1 <= {NOW} \
                 ORDER BY last_renewed_at ASC, id ASC LIMIT $2",
                kind_filter(kind)
            ))
                .await?;
            let rows = client.query(&stmt, &[&expiration, &limit]).await?;
            Ok(rows
                .iter()
                .map(|r| (i64::from(r.get::<_, i32>(0)), r.get(1)))
                .collect())
        })
    }

    /// Hands the expired row `id` to `underlay_ip` in one statement, if it is still expired.
    fn take_over_expired<'a>(
        &'a self,
        id: i64,
        subnet: &'a str,
        expiration: i64,
        underlay_ip: &'a str,
        mac: &'a str,
    ) -> StoreResult<'a, Option<Lease>> {
        Box::pin(async move {
            let Ok(id) = i32::try_from(id) else {
                return Ok(None);
            };
            let client = self.conn().await?;
            let stmt = client
                .prepare_cached(&format!(
                "UPDATE subnets SET underlay_ip = $1, overlay_hwaddr = $2, last_renewed_at = {NOW} \
                 WHERE id = $3 AND overlay_subnet = $5 AND last_renewed_at + $4 <= {NOW} \
                 RETURNING overlay_subnet, overlay_hwaddr"
            ))
                .await?;
            let row = client
                .query_opt(&stmt, &[&underlay_ip, &mac, &id, &expiration, &subnet])
                .await?;
            Ok(row.map(|r| Lease {
                underlay_ip: underlay_ip.to_string(),
                overlay_subnet: r.get(0),
                overlay_hardware_addr: r.get(1),
            }))
        })
    }

    /// Refreshes `last_renewed_at` of the row equal to `lease` in all three strings; returns
    /// whether such a row existed. One statement per renew in the common case.
    fn renew_exact<'a>(&'a self, lease: &'a Lease) -> StoreResult<'a, bool> {
        Box::pin(async move {
            let client = self.conn().await?;
            let stmt = client
                .prepare_cached(&format!(
                    "UPDATE subnets SET last_renewed_at = {NOW} \
                 WHERE underlay_ip = $1 AND overlay_subnet = $2 AND overlay_hwaddr = $3"
                ))
                .await?;
            let n = client
                .execute(
                    &stmt,
                    &[
                        &lease.underlay_ip,
                        &lease.overlay_subnet,
                        &lease.overlay_hardware_addr,
                    ],
                )
                .await?;
            Ok(n > 0)
        })
    }

    /// Inserts `lease` verbatim with `last_renewed_at = now`.
    fn insert<'a>(&'a self, lease: &'a Lease) -> StoreResult<'a, ()> {
        Box::pin(async move {
            let client = self.conn().await?;
            let stmt = client
            .prepare_cached(&format!(
                "INSERT INTO subnets (underlay_ip, overlay_subnet, overlay_hwaddr, last_renewed_at) \
                 VALUES ($1, $2, $3, {NOW})"
            ))
            .await?;
            client
                .execute(
                    &stmt,
                    &[
                        &lease.underlay_ip,
                        &lease.overlay_subnet,
                        &lease.overlay_hardware_addr,
                    ],
                )
                .await?;
            Ok(())
        })
    }

    /// Every unexpired row (`last_renewed_at + expiration > now`), "now" evaluated once for
    /// the statement (an init plan) rather than once per row. Read through `COPY ... TO
    /// STDOUT` ([`copy_text`](super::copy_text)): no row objects, no string per column. `COPY`
    /// takes no parameters; `expiration` is an integer.
    ///
    /// The read runs on the database runtime, beside the connection's task: the rows arrive
    /// in hundreds of messages, and each hand-over to an actix worker thread would wake it.
    /// Batches of [`BATCH`] leases go out as they fill.
    fn active_batches(&self, expiration: i64) -> StoreResult<'_, LeaseBatches> {
        let this = self.clone();
        Box::pin(runtime::run(async move {
            let client = this.conn().await?;
            let stmt = client
                .prepare_cached(&format!(
                    "COPY (SELECT underlay_ip, overlay_subnet, overlay_hwaddr FROM subnets \
                     WHERE last_renewed_at > (SELECT {NOW}) - {expiration}) TO STDOUT"
                ))
                .await?;
            let stream = client.copy_out(&stmt).await?;
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            runtime::spawn(async move {
                // The checkout is held until the last row is read.
                let _client = client;
                if let Err(e) = read_batches(stream, &tx).await {
                    let _ = tx.send(Err(e));
                }
            });
            Ok(rx)
        }))
    }

    /// Deletes the row of `underlay_ip`; returns whether one existed.
    fn release<'a>(&'a self, underlay_ip: &'a str) -> StoreResult<'a, bool> {
        Box::pin(async move {
            let client = self.conn().await?;
            let stmt = client
                .prepare_cached("DELETE FROM subnets WHERE underlay_ip = $1")
                .await?;
            Ok(client.execute(&stmt, &[&underlay_ip]).await? > 0)
        })
    }

    /// (all rows, block rows, rows not renewed within `stale_after` seconds) for the metrics.
    fn counts(&self, stale_after: i64) -> StoreResult<'_, Counts> {
        Box::pin(async move {
            let client = self.conn().await?;
            let row = client
                .query_one(
                    &format!(
                        "SELECT count(*), count(*) FILTER (WHERE {}), \
                     count(*) FILTER (WHERE last_renewed_at + $1 <= {NOW}) FROM subnets",
                        kind_filter(Kind::Block)
                    ),
                    &[&stale_after],
                )
                .await?;
            Ok((row.get(0), row.get(1), row.get(2)))
        })
    }

    fn open_connections(&self) -> usize {
        self.pool.status().size
    }

    fn warm_up(&self) {
        let (pool, n) = (self.pool.clone(), self.gate.allowed());
        runtime::spawn(async move { warm(n, || pool.get()).await });
    }
}
