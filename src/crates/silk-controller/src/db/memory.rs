//! An in-memory [`LeaseStore`] with the constraint semantics of `subnets` (three UNIQUE
//! columns, a row id, the database clock as a settable epoch second): the port the lease logic
//! is table-tested against without a database. Test builds only.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use silk_core::{Lease, LeaseRef};

use super::{Batch, Claim, Counts, LeaseBatches, LeaseStore, StoreError, StoreResult, BATCH};
use crate::pool::Kind;

#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub lease: Lease,
    pub last_renewed_at: i64,
}

#[derive(Default)]
pub struct MemoryStore {
    rows: Mutex<Vec<Row>>,
    next_id: AtomicI64,
    /// The "database clock".
    pub now: AtomicI64,
    /// When set, [`LeaseStore::active_batches`] fails after this many batches (a read that
    /// breaks off, as a database that goes away mid-read).
    pub list_fails_after: Mutex<Option<usize>>,
}

fn kind_of(subnet: &str) -> Kind {
    if subnet.ends_with("/32") {
        Kind::SingleIp
    } else {
        Kind::Block
    }
}

fn ready<'a, T: Send + 'a>(v: Result<T, StoreError>) -> StoreResult<'a, T> {
    Box::pin(std::future::ready(v))
}

impl MemoryStore {
    pub fn new(now: i64) -> Self {
        let s = MemoryStore::default();
        s.now.store(now, Ordering::SeqCst);
        s
    }

    fn now(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    pub fn advance(&self, seconds: i64) {
        self.now.fetch_add(seconds, Ordering::SeqCst);
    }

    pub fn rows(&self) -> Vec<Row> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets `last_renewed_at` of the host's row (a row written earlier by anyone).
    pub fn set_renewed(&self, underlay_ip: &str, at: i64) {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        for r in rows
            .iter_mut()
            .filter(|r| r.lease.underlay_ip == underlay_ip)
        {
            r.last_renewed_at = at;
        }
    }

    /// The INSERT with the three UNIQUE checks.
    pub fn insert_row(&self, lease: &Lease, at: i64) -> Result<(), StoreError> {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        for (column, clash) in [
            (
                "underlay_ip",
                rows.iter()
                    .any(|r| r.lease.underlay_ip == lease.underlay_ip),
            ),
            (
                "overlay_subnet",
                rows.iter()
                    .any(|r| r.lease.overlay_subnet == lease.overlay_subnet),
            ),
            (
                "overlay_hwaddr",
                rows.iter()
                    .any(|r| r.lease.overlay_hardware_addr == lease.overlay_hardware_addr),
            ),
        ] {
            if clash {
                return Err(StoreError::UniqueViolation(format!(
                    "duplicate key value violates unique constraint on {column}"
                )));
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        rows.push(Row {
            id,
            lease: lease.clone(),
            last_renewed_at: at,
        });
        Ok(())
    }
}

impl LeaseStore for MemoryStore {
    fn ping(&self) -> StoreResult<'_, ()> {
        ready(Ok(()))
    }

    fn lookup<'a>(&'a self, underlay_ip: &'a str) -> StoreResult<'a, Option<Lease>> {
        let rows = self.rows();
        ready(Ok(rows
            .into_iter()
            .find(|r| r.lease.underlay_ip == underlay_ip)
            .map(|r| r.lease)))
    }

    fn delete_lease<'a>(&'a self, underlay_ip: &'a str, subnet: &'a str) -> StoreResult<'a, bool> {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let before = rows.len();
        rows.retain(|r| !(r.lease.underlay_ip == underlay_ip && r.lease.overlay_subnet == subnet));
        ready(Ok(rows.len() < before))
    }

    fn claim<'a>(
        &'a self,
        underlay_ip: &'a str,
        subnets: &'a [String],
        macs: &'a [String],
    ) -> StoreResult<'a, Claim> {
        let existing = self
            .rows()
            .into_iter()
            .find(|r| r.lease.underlay_ip == underlay_ip);
        if let Some(row) = existing {
            return ready(Ok(Claim::Existing(row.lease)));
        }
        for (s, m) in subnets.iter().zip(macs) {
            let lease = Lease {
                underlay_ip: underlay_ip.to_string(),
                overlay_subnet: s.clone(),
                overlay_hardware_addr: m.clone(),
            };
            match self.insert_row(&lease, self.now()) {
                Ok(()) => return ready(Ok(Claim::New(lease))),
                Err(StoreError::UniqueViolation(m)) if m.ends_with("underlay_ip") => {
                    return ready(Ok(Claim::Taken))
                }
                Err(_) => continue,
            }
        }
        ready(Ok(Claim::Taken))
    }

    fn taken(&self, kind: Kind) -> StoreResult<'_, HashSet<String>> {
        ready(Ok(self
            .rows()
            .into_iter()
            .filter(|r| kind_of(&r.lease.overlay_subnet) == kind)
            .map(|r| r.lease.overlay_subnet)
            .collect()))
    }

    fn oldest_expired(
        &self,
        kind: Kind,
        expiration: i64,
        limit: i64,
    ) -> StoreResult<'_, Vec<(i64, String)>> {
        let now = self.now();
        let mut expired: Vec<Row> = self
            .rows()
            .into_iter()
            .filter(|r| kind_of(&r.lease.overlay_subnet) == kind)
            .filter(|r| r.last_renewed_at + expiration <= now)
            .collect();
        expired.sort_by_key(|r| (r.last_renewed_at, r.id));
        ready(Ok(expired
            .into_iter()
            .take(limit.max(0) as usize)
            .map(|r| (r.id, r.lease.overlay_subnet))
            .collect()))
    }

    fn take_over_expired<'a>(
        &'a self,
        id: i64,
        subnet: &'a str,
        expiration: i64,
        underlay_ip: &'a str,
        mac: &'a str,
    ) -> StoreResult<'a, Option<Lease>> {
        let now = self.now();
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        if rows
            .iter()
            .any(|r| r.id != id && r.lease.underlay_ip == underlay_ip)
        {
            return ready(Err(StoreError::UniqueViolation(
                "duplicate key value violates unique constraint on underlay_ip".into(),
            )));
        }
        let Some(row) = rows.iter_mut().find(|r| {
            r.id == id && r.lease.overlay_subnet == subnet && r.last_renewed_at + expiration <= now
        }) else {
            return ready(Ok(None));
        };
        row.lease.underlay_ip = underlay_ip.to_string();
        row.lease.overlay_hardware_addr = mac.to_string();
        row.last_renewed_at = now;
        ready(Ok(Some(row.lease.clone())))
    }

    fn renew_exact<'a>(&'a self, lease: &'a Lease) -> StoreResult<'a, bool> {
        let now = self.now();
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = false;
        for r in rows.iter_mut().filter(|r| r.lease == *lease) {
            r.last_renewed_at = now;
            found = true;
        }
        ready(Ok(found))
    }

    fn insert<'a>(&'a self, lease: &'a Lease) -> StoreResult<'a, ()> {
        ready(self.insert_row(lease, self.now()))
    }

    /// The active rows in batches of [`BATCH`], cut as the engines cut them: full batches as
    /// they fill, then the last (the rest, maybe none).
    fn active_batches(&self, expiration: i64) -> StoreResult<'_, LeaseBatches> {
        let now = self.now();
        let rows = self.rows();
        let active: Vec<&Row> = rows
            .iter()
            .filter(|r| r.last_renewed_at + expiration > now)
            .collect();
        let fails_after = *self
            .list_fails_after
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let batches = active.len() / BATCH + 1;
        for b in 0..batches {
            if fails_after == Some(b) {
                let _ = tx.send(Err(StoreError::Connection("connection reset".into())));
                break;
            }
            let leases = active
                .iter()
                .skip(b * BATCH)
                .take(BATCH)
                .map(|r| LeaseRef::from(&r.lease))
                .collect();
            let _ = tx.send(Ok(Batch {
                leases,
                last: b + 1 == batches,
            }));
        }
        ready(Ok(rx))
    }

    fn release<'a>(&'a self, underlay_ip: &'a str) -> StoreResult<'a, bool> {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let before = rows.len();
        rows.retain(|r| r.lease.underlay_ip != underlay_ip);
        ready(Ok(rows.len() < before))
    }

    fn counts(&self, stale_after: i64) -> StoreResult<'_, Counts> {
        let now = self.now();
        let rows = self.rows();
        let blocks = rows
            .iter()
            .filter(|r| kind_of(&r.lease.overlay_subnet) == Kind::Block)
            .count() as i64;
        let stale = rows
            .iter()
            .filter(|r| r.last_renewed_at + stale_after <= now)
            .count() as i64;
        ready(Ok((rows.len() as i64, blocks, stale)))
    }

    fn open_connections(&self) -> usize {
        0
    }
}
