//! The statements of control-plane §3.3 on MySQL: single autocommit statements, no locks, the
//! three UNIQUE constraints arbitrate races. "now" is `UNIX_TIMESTAMP()`, the database clock.
//! MySQL has no `RETURNING` and no `ON CONFLICT`, so a new lease is one plain `INSERT` per
//! candidate until one is not refused as a duplicate.
//!
//! MySQL compares strings case-insensitively under the default collations; upstream compares
//! a renewed lease with the row in Go, exactly, so the renew match is `BINARY`.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool};
use silk_core::{Lease, LeaseTable};

use crate::config::Config;
use crate::db::{
    initial_slots, kind_filter, runtime, warm, Batch, Claim, Counts, LeaseBatches, LeaseStore,
    OpenError, StoreError, StoreResult, BATCH,
};
use crate::pool::Kind;

/// `ER_DUP_ENTRY`.
const DUPLICATE_ENTRY: u16 = 1062;

impl From<mysql_async::Error> for StoreError {
    fn from(e: mysql_async::Error) -> Self {
        match &e {
            mysql_async::Error::Server(s) if s.code == DUPLICATE_ENTRY => {
                StoreError::UniqueViolation(e.to_string())
            }
            mysql_async::Error::Server(_) => StoreError::Sql(e.to_string()),
            _ => StoreError::Connection(e.to_string()),
        }
    }
}

/// A duplicate of `underlay_ip`: the host got a row meanwhile. MariaDB names the key
/// `underlay_ip`, MySQL 8 `subnets.underlay_ip`.
fn duplicate_underlay(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s)
        if s.code == DUPLICATE_ENTRY && s.message.trim_end_matches('\'').ends_with("underlay_ip"))
}

/// The row of one host.
const LOOKUP: &str = "SELECT overlay_subnet, overlay_hwaddr FROM subnets WHERE underlay_ip = ?";

/// The `subnets` table on a MySQL pool.
///
/// No [`crate::db::gate`] here: mysql_async takes a connection back asynchronously (through
/// its recycler task), so a request let through the gate right after another one finished
/// would still find no idle connection and open one of its own; its pool alone decides.
#[derive(Clone)]
pub struct MysqlStore {
    pool: Pool,
    /// Connections opened at start.
    warm: usize,
    /// Read/write timeout of one statement.
    timeout: Duration,
    /// Longest wait for a pooled connection.
    wait: Duration,
}

impl MysqlStore {
    pub async fn connect(config: &Config) -> Result<MysqlStore, OpenError> {
        let pool = super::connect_pool(config).await?;
        Ok(MysqlStore {
            pool,
            warm: initial_slots(config),
            timeout: config.database.timeout,
            wait: super::pool_wait(&config.database),
        })
    }

    /// Runs `f` with a pooled connection on the database runtime, within the timeouts.
    pub(crate) fn with_conn<T, F, Fut>(&self, f: F) -> StoreResult<'static, T>
    where
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let (pool, timeout, wait) = (self.pool.clone(), self.timeout, self.wait);
        Box::pin(runtime::run(async move {
            let conn = tokio::time::timeout(wait, pool.get_conn())
                .await
                .map_err(|_| StoreError::Timeout(wait.as_secs()))?
                .map_err(|e| StoreError::Connection(e.to_string()))?;
            tokio::time::timeout(timeout, f(conn))
                .await
                .map_err(|_| StoreError::Timeout(timeout.as_secs()))?
        }))
    }
}

fn lease(underlay_ip: String, overlay_subnet: String, overlay_hardware_addr: String) -> Lease {
    Lease {
        underlay_ip,
        overlay_subnet,
        overlay_hardware_addr,
    }
}

/// A row of three text columns onto `table`, whole or not at all.
fn push_row(table: &mut LeaseTable, row: &mysql_async::Row) -> Result<(), String> {
    let before = table.len();
    for i in 0..3 {
        let text = match row.as_ref(i) {
            Some(mysql_async::Value::Bytes(b)) => std::str::from_utf8(b).map_err(|e| e.to_string()),
            other => Err(format!("column {i} is {other:?}, want text")),
        };
        match text {
            Ok(text) => table.push_field(text),
            Err(e) => {
                table.truncate(before);
                return Err(format!("reading active subnets: {e}"));
            }
        }
    }
    Ok(())
}

impl LeaseStore for MysqlStore {
    fn ping(&self) -> StoreResult<'_, ()> {
        self.with_conn(|mut c| async move { Ok(c.query_drop("SELECT 1").await?) })
    }

    fn lookup<'a>(&'a self, underlay_ip: &'a str) -> StoreResult<'a, Option<Lease>> {
        let ip = underlay_ip.to_string();
        self.with_conn(|mut c| async move {
            let row: Option<(String, String)> = c.exec_first(LOOKUP, (&ip,)).await?;
            Ok(row.map(|(s, m)| lease(ip, s, m)))
        })
    }

    fn delete_lease<'a>(&'a self, underlay_ip: &'a str, subnet: &'a str) -> StoreResult<'a, bool> {
        let (ip, subnet) = (underlay_ip.to_string(), subnet.to_string());
        self.with_conn(|mut c| async move {
            c.exec_drop(
                "DELETE FROM subnets WHERE underlay_ip = ? AND overlay_subnet = ?",
                (ip, subnet),
            )
            .await?;
            Ok(c.affected_rows() > 0)
        })
    }

    /// The INSERT first, one per candidate until one is not refused as a duplicate (MySQL
    /// has neither `RETURNING` nor `ON CONFLICT`): a new host costs one round trip. A duplicate
    /// `underlay_ip` means the host has a row, read back on the same connection.
    fn claim<'a>(
        &'a self,
        underlay_ip: &'a str,
        subnets: &'a [String],
        macs: &'a [String],
    ) -> StoreResult<'a, Claim> {
        let ip = underlay_ip.to_string();
        let candidates: Vec<(String, String)> =
            subnets.iter().cloned().zip(macs.iter().cloned()).collect();
        self.with_conn(|mut c| async move {
            for (subnet, mac) in candidates {
                let inserted = c
                    .exec_drop(
                        "INSERT INTO subnets (underlay_ip, overlay_subnet, overlay_hwaddr, last_renewed_at) \
                         VALUES (?, ?, ?, UNIX_TIMESTAMP())",
                        (&ip, &subnet, &mac),
                    )
                    .await;
                match inserted {
                    Ok(()) => return Ok(Claim::New(lease(ip, subnet, mac))),
                    Err(e) if duplicate_underlay(&e) => break,
                    Err(mysql_async::Error::Server(s)) if s.code == DUPLICATE_ENTRY => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            // The host's row (or none: every candidate was taken, or the row went again).
            let row: Option<(String, String)> = c.exec_first(LOOKUP, (&ip,)).await?;
            Ok(match row {
                Some((s, m)) => Claim::Existing(lease(ip, s, m)),
                None => Claim::Taken,
            })
        })
    }

    fn taken(&self, kind: Kind) -> StoreResult<'_, HashSet<String>> {
        let query = format!(
            "SELECT overlay_subnet FROM subnets WHERE {}",
            kind_filter(kind)
        );
        self.with_conn(|mut c| async move {
            let rows: Vec<String> = c.exec(query, ()).await?;
            Ok(rows.into_iter().collect())
        })
    }

    fn oldest_expired(
        &self,
        kind: Kind,
        expiration: i64,
        limit: i64,
    ) -> StoreResult<'_, Vec<(i64, String)>> {
        let query = format!(
            "SELECT id, overlay_subnet FROM subnets WHERE {} AND last_renewed_at + ? <= UNIX_TIMESTAMP() \
             ORDER BY last_renewed_at ASC, id ASC LIMIT ?",
            kind_filter(kind)
        );
        self.with_conn(move |mut c| async move { Ok(c.exec(query, (expiration, limit)).await?) })
    }

    fn take_over_expired<'a>(
        &'a self,
        id: i64,
        subnet: &'a str,
        expiration: i64,
        underlay_ip: &'a str,
        mac: &'a str,
    ) -> StoreResult<'a, Option<Lease>> {
        let (subnet, ip, mac) = (subnet.to_string(), underlay_ip.to_string(), mac.to_string());
        self.with_conn(move |mut c| async move {
            c.exec_drop(
                "UPDATE subnets SET underlay_ip = ?, overlay_hwaddr = ?, last_renewed_at = UNIX_TIMESTAMP() \
                 WHERE id = ? AND overlay_subnet = ? AND last_renewed_at + ? <= UNIX_TIMESTAMP()",
                (&ip, &mac, id, &subnet, expiration),
            )
            .await?;
            Ok((c.affected_rows() > 0).then(|| lease(ip, subnet, mac)))
        })
    }

    fn renew_exact<'a>(&'a self, l: &'a Lease) -> StoreResult<'a, bool> {
        let l = l.clone();
        self.with_conn(|mut c| async move {
            c.exec_drop(
                "UPDATE subnets SET last_renewed_at = UNIX_TIMESTAMP() \
                 WHERE underlay_ip = ? AND BINARY underlay_ip = ? \
                 AND BINARY overlay_subnet = ? AND BINARY overlay_hwaddr = ?",
                (
                    &l.underlay_ip,
                    &l.underlay_ip,
                    &l.overlay_subnet,
                    &l.overlay_hardware_addr,
                ),
            )
            .await?;
            // CLIENT_FOUND_ROWS: matched rows, also when the second did not change.
            Ok(c.affected_rows() > 0)
        })
    }

    fn insert<'a>(&'a self, l: &'a Lease) -> StoreResult<'a, ()> {
        let l = l.clone();
        self.with_conn(|mut c| async move {
            c.exec_drop(
                "INSERT INTO subnets (underlay_ip, overlay_subnet, overlay_hwaddr, last_renewed_at) \
                 VALUES (?, ?, ?, UNIX_TIMESTAMP())",
                (&l.underlay_ip, &l.overlay_subnet, &l.overlay_hardware_addr),
            )
            .await?;
            Ok(())
        })
    }

    /// Every unexpired row, each column copied from the driver's row straight into a batch,
    /// read on the database runtime within the timeouts; a failure is the last item.
    fn active_batches(&self, expiration: i64) -> StoreResult<'_, LeaseBatches> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let sender = tx.clone();
        let read = self.with_conn(move |mut c| async move {
            let mut result = c
                .exec_iter(
                    "SELECT underlay_ip, overlay_subnet, overlay_hwaddr FROM subnets \
                     WHERE last_renewed_at + ? > UNIX_TIMESTAMP()",
                    (expiration,),
                )
                .await?;
            let (mut table, mut bad) = (LeaseTable::with_capacity(BATCH), None);
            result
                .for_each(|row| {
                    if bad.is_some() {
                        return;
                    }
                    if let Err(e) = push_row(&mut table, &row) {
                        bad = Some(e);
                    } else if table.len() >= BATCH {
                        let leases =
                            std::mem::replace(&mut table, LeaseTable::with_capacity(BATCH));
                        let _ = sender.send(Ok(Batch {
                            leases,
                            last: false,
                        }));
                    }
                })
                .await?;
            match bad {
                Some(e) => Err(StoreError::Sql(e)),
                None => {
                    let _ = sender.send(Ok(Batch {
                        leases: table,
                        last: true,
                    }));
                    Ok(())
                }
            }
        });
        runtime::spawn(async move {
            if let Err(e) = read.await {
                let _ = tx.send(Err(e));
            }
        });
        Box::pin(std::future::ready(Ok(rx)))
    }

    fn release<'a>(&'a self, underlay_ip: &'a str) -> StoreResult<'a, bool> {
        let ip = underlay_ip.to_string();
        self.with_conn(|mut c| async move {
            c.exec_drop("DELETE FROM subnets WHERE underlay_ip = ?", (ip,))
                .await?;
            Ok(c.affected_rows() > 0)
        })
    }

    fn counts(&self, stale_after: i64) -> StoreResult<'_, Counts> {
        let query = format!(
            "SELECT COUNT(*), COUNT(CASE WHEN {} THEN 1 END), \
             COUNT(CASE WHEN last_renewed_at + ? <= UNIX_TIMESTAMP() THEN 1 END) FROM subnets",
            kind_filter(Kind::Block)
        );
        self.with_conn(move |mut c| async move {
            let row: Option<(i64, i64, i64)> = c.exec_first(query, (stale_after,)).await?;
            Ok(row.unwrap_or_default())
        })
    }

    fn open_connections(&self) -> usize {
        self.pool
            .metrics()
            .connection_count
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn warm_up(&self) {
        let (pool, n) = (self.pool.clone(), self.warm);
        runtime::spawn(async move { warm(n, || pool.get_conn()).await });
    }
}
