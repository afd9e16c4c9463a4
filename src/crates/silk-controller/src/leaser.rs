//! Lease semantics (control-plane §2): acquire, renew, release and list on top of the
//! [`Store`]. The pool picks candidates, the database's UNIQUE constraints decide races, and
//! every attempt is bounded.
//!
//! Acquire sends a handful of random free candidates in one `INSERT … SELECT … ON CONFLICT DO
//! NOTHING`, so a mostly free pool costs one statement and a busy one a few; the full taken set
//! is read only after a miss. Renew is one `UPDATE` when the lease matches.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use silk_core::{HardwareAddr, Lease};

use crate::db::{Store, StoreError};
use crate::pool::{CidrPool, Kind};

/// Upstream's `AcquireSubnetLeaseAttempts` is 10; the extra attempts only run under heavy
/// contention, when concurrent writers keep taking our candidates.
const ACQUIRE_ATTEMPTS: usize = 16;
/// Random candidates per attempt.
const CANDIDATES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum LeaserError {
    /// Bad `underlay_ip` on acquire (upstream answers 500, we answer 400 with the same text).
    #[error("invalid ipv4 address: {0}")]
    InvalidUnderlayIp(String),
    #[error("no lease available")]
    NoLeaseAvailable,
    /// Renew rejected for good: 409, the daemon stops.
    #[error("renew-subnet-lease: {0}")]
    RenewConflict(String),
    #[error("{context}: {source}")]
    Store {
        context: &'static str,
        #[source]
        source: StoreError,
    },
}

fn store(context: &'static str) -> impl FnOnce(StoreError) -> LeaserError {
    move |source| LeaserError::Store { context, source }
}

/// What acquire did, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    Existing,
    New,
    Recycled,
}

#[derive(Clone)]
pub struct Leaser {
    store: Store,
    pool: CidrPool,
    expiration: i64,
}

/// Go's `net.ParseIP(s).To4() != nil`: dotted quad, or an IPv4-mapped IPv6 text.
pub fn parse_underlay_v4(s: &str) -> Option<Ipv4Addr> {
    match IpAddr::from_str(s).ok()? {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

fn mac_for(subnet: &str) -> String {
    let ip = subnet
        .split_once('/')
        .and_then(|(ip, _)| ip.parse::<Ipv4Addr>().ok())
        .expect("pool members are canonical IPv4 CIDRs");
    HardwareAddr::for_overlay_ip(ip).to_string()
}

impl Leaser {
    pub fn new(store: Store, pool: CidrPool, expiration: i64) -> Self {
        Leaser {
            store,
            pool,
            expiration,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn pool(&self) -> &CidrPool {
        &self.pool
    }

    /// §2.3: the host's existing in-pool lease unchanged, else a free member of the requested
    /// pool, else the oldest expired lease of that kind, else `NoLeaseAvailable`.
    pub async fn acquire(
        &self,
        underlay_ip: &str,
        single: bool,
    ) -> Result<(Lease, Acquired), LeaserError> {
        if parse_underlay_v4(underlay_ip).is_none() || underlay_ip.len() > 15 {
            return Err(LeaserError::InvalidUnderlayIp(underlay_ip.to_string()));
        }
        let kind = Kind::of(single);
        if let Some(existing) = self.existing(underlay_ip).await? {
            return Ok((existing, Acquired::Existing));
        }
        for attempt in 0..ACQUIRE_ATTEMPTS {
            let candidates = if attempt < 2 {
                // Cheap guesses first: a random sample, the database filters the taken ones.
                self.pool
                    .pick_free(kind, &Default::default(), CANDIDATES, &mut rand::rng())
            } else {
                let taken = self
                    .store
                    .taken(kind)
                    .await
                    .map_err(store("getting all subnets"))?;
                self.pool
                    .pick_free(kind, &taken, CANDIDATES, &mut rand::rng())
            };
            if candidates.is_empty() {
                match self.recycle(underlay_ip, kind).await? {
                    Some(lease) => return Ok((lease, Acquired::Recycled)),
                    None => {
                        // A row may have appeared for this host meanwhile (same-host race).
                        if let Some(existing) = self.existing(underlay_ip).await? {
                            return Ok((existing, Acquired::Existing));
                        }
                        return Err(LeaserError::NoLeaseAvailable);
                    }
                }
            }
            let macs: Vec<String> = candidates.iter().map(|s| mac_for(s)).collect();
            let inserted = self
                .store
                .insert_first_free(underlay_ip, &candidates, &macs)
                .await
                .map_err(store("adding lease entry"))?;
            if let Some(lease) = inserted {
                return Ok((lease, Acquired::New));
            }
            // Nothing inserted: all candidates taken, or this host got a row concurrently.
            if let Some(existing) = self.existing(underlay_ip).await? {
                return Ok((existing, Acquired::Existing));
            }
        }
        Err(LeaserError::NoLeaseAvailable)
    }

    /// The host's row if it is a pool member; a row outside the pool is deleted (§2.7).
    async fn existing(&self, underlay_ip: &str) -> Result<Option<Lease>, LeaserError> {
        let Some(lease) = self
            .store
            .lookup(underlay_ip)
            .await
            .map_err(store("getting lease for underlay ip"))?
        else {
            return Ok(None);
        };
        if self.pool.is_member(&lease.overlay_subnet) {
            return Ok(Some(lease));
        }
        self.store
            .delete_lease(underlay_ip, &lease.overlay_subnet)
            .await
            .map_err(store("deleting lease for underlay ip"))?;
        silk_ops::log::info("lease-deleted", serde_json::json!({ "lease": lease }));
        Ok(None)
    }

    /// Takes over the oldest expired in-pool row of `kind`, if any.
    async fn recycle(&self, underlay_ip: &str, kind: Kind) -> Result<Option<Lease>, LeaserError> {
        for _ in 0..3 {
            let expired = self
                .store
                .oldest_expired(kind, self.expiration, 16)
                .await
                .map_err(store("get oldest expired"))?;
            let Some((id, subnet)) = expired.into_iter().find(|(_, s)| self.pool.is_member(s))
            else {
                return Ok(None);
            };
            match self
                .store
                .take_over_expired(id, self.expiration, underlay_ip, &mac_for(&subnet))
                .await
            {
                Ok(Some(lease)) => return Ok(Some(lease)),
                Ok(None) => continue, // renewed or taken meanwhile
                Err(e) if e.is_unique_violation() => return Ok(None),
                Err(e) => return Err(store("delete expired subnet")(e)),
            }
        }
        Ok(None)
    }

    /// §2.4 with the later pool-membership guard: one `UPDATE` when the row matches; a missing
    /// row is inserted if its subnet is in the pool; any other outcome is a 409.
    pub async fn renew(&self, lease: &Lease) -> Result<(), LeaserError> {
        if IpAddr::from_str(&lease.underlay_ip).is_err() {
            return Err(LeaserError::RenewConflict(format!(
                "invalid underlay ip: {}",
                lease.underlay_ip
            )));
        }
        if !valid_cidr(&lease.overlay_subnet) {
            return Err(LeaserError::RenewConflict(format!(
                "invalid CIDR address: {}",
                lease.overlay_subnet
            )));
        }
        if HardwareAddr::from_str(&lease.overlay_hardware_addr).is_err() {
            return Err(LeaserError::RenewConflict(format!(
                "address {}: invalid MAC address",
                lease.overlay_hardware_addr
            )));
        }
        let renew = |e| LeaserError::Store {
            context: "renew-subnet-lease: renewing lease for underlay ip",
            source: e,
        };
        if self.store.renew_exact(lease).await.map_err(renew)? {
            return Ok(());
        }
        let current =
            self.store
                .lookup(&lease.underlay_ip)
                .await
                .map_err(|e| LeaserError::Store {
                    context: "renew-subnet-lease: getting lease for underlay ip",
                    source: e,
                })?;
        match current {
            Some(row) if row == *lease => {
                // Matched between our two statements (concurrent insert): renew once more.
                self.store.renew_exact(lease).await.map_err(renew)?;
                Ok(())
            }
            Some(_) => Err(LeaserError::RenewConflict("lease mismatch".into())),
            None if !self.pool.is_member(&lease.overlay_subnet) => Err(LeaserError::RenewConflict(
                "overlay subnet not in pool".into(),
            )),
            None => self
                .store
                .insert(lease)
                .await
                .map_err(|e| LeaserError::RenewConflict(format!("adding entry: {e}"))),
        }
    }

    /// Deletes the host's lease; idempotent. Returns whether a row existed.
    pub async fn release(&self, underlay_ip: &str) -> Result<bool, LeaserError> {
        self.store
            .release(underlay_ip)
            .await
            .map_err(store("release lease: deleting entry"))
    }

    /// Every unexpired lease.
    pub async fn routable(&self) -> Result<Vec<Lease>, LeaserError> {
        self.store.active(self.expiration).await.map_err(store(
            "all-routable-leases: getting all leases: selecting all active subnets",
        ))
    }
}

/// Go's `net.ParseCIDR`: an IPv4 or IPv6 address, `/`, a prefix in range.
fn valid_cidr(s: &str) -> bool {
    let Some((ip, prefix)) = s.split_once('/') else {
        return false;
    };
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match IpAddr::from_str(ip) {
        Ok(IpAddr::V4(_)) => prefix <= 32,
        Ok(IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underlay_ips_parse_like_go() {
        assert!(parse_underlay_v4("10.0.16.12").is_some());
        assert!(parse_underlay_v4("::ffff:10.0.0.1").is_some());
        assert!(parse_underlay_v4("fe80::1").is_none());
        assert!(parse_underlay_v4("010.0.0.1").is_none());
        assert!(parse_underlay_v4("").is_none());
    }

    #[test]
    fn cidrs_parse_like_go() {
        assert!(valid_cidr("10.255.7.0/24"));
        assert!(valid_cidr("10.255.7.1/24"));
        assert!(valid_cidr("fd00::/8"));
        assert!(!valid_cidr("10.255.7.0/33"));
        assert!(!valid_cidr("10.255.7.0"));
        assert!(!valid_cidr("10.255.7.0/+4"));
    }

    #[test]
    fn macs_follow_the_subnet() {
        assert_eq!(mac_for("10.255.7.0/24"), "ee:ee:0a:ff:07:00");
        assert_eq!(mac_for("10.255.0.5/32"), "ee:ee:0a:ff:00:05");
    }
}
