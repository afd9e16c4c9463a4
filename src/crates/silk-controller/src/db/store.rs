//! The statements on `subnets` (control-plane §3.3). Single autocommit statements, no row
//! locks: the three UNIQUE constraints arbitrate races, as upstream. Every time is the
//! database clock in `bigint` epoch seconds ([`NOW`]), so nothing overflows in 2038.
//!
//! Kind filters use the `/32` text suffix, exactly as upstream decides the kind.

use std::collections::HashSet;

use deadpool_postgres::Pool;
use silk_core::Lease;
use tokio_postgres::error::SqlState;

use crate::pool::Kind;

/// "now" in epoch seconds from the database clock; upstream casts to 32-bit `integer`.
pub const NOW: &str = "EXTRACT(EPOCH FROM now())::bigint";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("get database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("{0}")]
    Sql(#[from] tokio_postgres::Error),
}

impl StoreError {
    /// True for a UNIQUE violation: another writer took the value first.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Sql(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION))
    }
}

/// The `subnets` table.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

fn kind_filter(kind: Kind) -> &'static str {
    match kind {
        Kind::SingleIp => "overlay_subnet LIKE '%/32'",
        Kind::Block => "overlay_subnet NOT LIKE '%/32'",
    }
}

impl Store {
    pub fn new(pool: Pool) -> Self {
        Store { pool }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// The row of `underlay_ip`, if any.
    pub async fn lookup(&self, underlay_ip: &str) -> Result<Option<Lease>, StoreError> {
        let client = self.pool.get().await?;
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
    }

    /// Deletes the row of `underlay_ip` if it still holds `subnet`; returns whether it did.
    pub async fn delete_lease(&self, underlay_ip: &str, subnet: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached("DELETE FROM subnets WHERE underlay_ip = $1 AND overlay_subnet = $2")
            .await?;
        Ok(client.execute(&stmt, &[&underlay_ip, &subnet]).await? > 0)
    }

    /// Inserts a row for `underlay_ip` with the first candidate (subnet, MAC) that no row
    /// holds yet; `None` when every candidate was taken, also by a concurrent writer
    /// (`ON CONFLICT DO NOTHING` on any of the three UNIQUE constraints).
    pub async fn insert_first_free(
        &self,
        underlay_ip: &str,
        subnets: &[String],
        macs: &[String],
    ) -> Result<Option<Lease>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(&format!(
                "INSERT INTO subnets (underlay_ip, overlay_subnet, overlay_hwaddr, last_renewed_at) \
                 SELECT $1, c.s, c.m, {NOW} \
                 FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS c(s, m, o) \
                 WHERE NOT EXISTS (SELECT 1 FROM subnets x WHERE x.overlay_subnet = c.s OR x.overlay_hwaddr = c.m) \
                 ORDER BY c.o LIMIT 1 \
                 ON CONFLICT DO NOTHING \
                 RETURNING overlay_subnet, overlay_hwaddr"
            ))
            .await?;
        let row = client
            .query_opt(&stmt, &[&underlay_ip, &subnets, &macs])
            .await?;
        Ok(row.map(|r| Lease {
            underlay_ip: underlay_ip.to_string(),
            overlay_subnet: r.get(0),
            overlay_hardware_addr: r.get(1),
        }))
    }

    /// Every `overlay_subnet` of `kind`, expired and foreign rows included.
    pub async fn taken(&self, kind: Kind) -> Result<HashSet<String>, StoreError> {
        let client = self.pool.get().await?;
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
    }

    /// Expired rows of `kind`, oldest first: `(id, overlay_subnet)`.
    pub async fn oldest_expired(
        &self,
        kind: Kind,
        expiration: i64,
        limit: i64,
    ) -> Result<Vec<(i32, String)>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT id, overlay_subnet FROM subnets WHERE {} AND last_renewed_at + $1 <= {NOW} \
                 ORDER BY last_renewed_at ASC, id ASC LIMIT $2",
                kind_filter(kind)
            ))
            .await?;
        let rows = client.query(&stmt, &[&expiration, &limit]).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Hands the expired row `id` to `underlay_ip` in one statement, if it is still expired.
    pub async fn take_over_expired(
        &self,
        id: i32,
        expiration: i64,
        underlay_ip: &str,
        mac: &str,
    ) -> Result<Option<Lease>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(&format!(
                "UPDATE subnets SET underlay_ip = $1, overlay_hwaddr = $2, last_renewed_at = {NOW} \
                 WHERE id = $3 AND last_renewed_at + $4 <= {NOW} \
                 RETURNING overlay_subnet, overlay_hwaddr"
            ))
            .await?;
        let row = client
            .query_opt(&stmt, &[&underlay_ip, &mac, &id, &expiration])
            .await?;
        Ok(row.map(|r| Lease {
            underlay_ip: underlay_ip.to_string(),
            overlay_subnet: r.get(0),
            overlay_hardware_addr: r.get(1),
        }))
    }

    /// Refreshes `last_renewed_at` of the row equal to `lease` in all three strings; returns
    /// whether such a row existed. One statement per renew in the common case.
    pub async fn renew_exact(&self, lease: &Lease) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
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
    }

    /// Inserts `lease` verbatim with `last_renewed_at = now`.
    pub async fn insert(&self, lease: &Lease) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
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
    }

    /// Every unexpired row (`last_renewed_at + expiration > now`).
    pub async fn active(&self, expiration: i64) -> Result<Vec<Lease>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT underlay_ip, overlay_subnet, overlay_hwaddr FROM subnets \
                 WHERE last_renewed_at + $1 > {NOW}"
            ))
            .await?;
        let rows = client.query(&stmt, &[&expiration]).await?;
        Ok(rows
            .iter()
            .map(|r| Lease {
                underlay_ip: r.get(0),
                overlay_subnet: r.get(1),
                overlay_hardware_addr: r.get(2),
            })
            .collect())
    }

    /// Deletes the row of `underlay_ip`; returns whether one existed.
    pub async fn release(&self, underlay_ip: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached("DELETE FROM subnets WHERE underlay_ip = $1")
            .await?;
        Ok(client.execute(&stmt, &[&underlay_ip]).await? > 0)
    }

    /// (all rows, block rows, rows not renewed within `stale_after` seconds) for the metrics.
    pub async fn counts(&self, stale_after: i64) -> Result<(i64, i64, i64), StoreError> {
        let client = self.pool.get().await?;
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
    }
}
