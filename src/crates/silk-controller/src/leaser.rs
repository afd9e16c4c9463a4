//! Lease semantics (control-plane §2): acquire, renew, release and list on top of the
//! [`LeaseStore`](crate::db::LeaseStore). The pool picks candidates, the database's UNIQUE constraints decide races, and
//! every attempt is bounded.
//!
//! Acquire is one [`claim`](crate::db::LeaseStore::claim) per attempt: the host's existing row,
//! or a new row with the first of a handful of random candidates that no row holds, in one
//! statement on PostgreSQL (one `INSERT` per candidate on MySQL, the lookup only when the host
//! has a row). A new host in a mostly free pool costs one round trip; random candidates keep
//! concurrent acquirers from colliding; the full taken set is read only after two misses.
//! Renew is one `UPDATE` when the lease matches.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use silk_core::{HardwareAddr, Lease, LeaseTable};

use crate::db::{next_batch, Batch, Claim, LeaseBatches, Store, StoreError};
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
                // Only after a claim found no row for the host: the pool is exhausted.
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
            let claim = self
                .store
                .claim(underlay_ip, &candidates, &macs)
                .await
                .map_err(|e| {
                    // Upstream's texts: its lookup comes first (and meets an outage first).
                    let context = match e {
                        StoreError::Connection(_) | StoreError::Timeout(_) => {
                            "getting lease for underlay ip"
                        }
                        _ => "adding lease entry",
                    };
                    store(context)(e)
                })?;
            match claim {
                Claim::New(lease) => return Ok((lease, Acquired::New)),
                Claim::Existing(lease) if self.pool.is_member(&lease.overlay_subnet) => {
                    return Ok((lease, Acquired::Existing))
                }
                // Out of the pool (§2.7): dropped, the next attempt allocates afresh.
                Claim::Existing(lease) => self.delete_out_of_pool(lease).await?,
                // All candidates taken, or this host got a row concurrently: the next claim
                // returns that row or tries other candidates.
                Claim::Taken => {}
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
        self.delete_out_of_pool(lease).await?;
        Ok(None)
    }

    /// Deletes the host's row that is no pool member (if it still holds that subnet).
    async fn delete_out_of_pool(&self, lease: Lease) -> Result<(), LeaserError> {
        self.store
            .delete_lease(&lease.underlay_ip, &lease.overlay_subnet)
            .await
            .map_err(store("deleting lease for underlay ip"))?;
        silk_ops::log::info("lease-deleted", serde_json::json!({ "lease": lease }));
        Ok(())
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
                .take_over_expired(id, &subnet, self.expiration, underlay_ip, &mac_for(&subnet))
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
    pub async fn routable(&self) -> Result<LeaseTable, LeaserError> {
        self.store
            .active(self.expiration)
            .await
            .map_err(store(ROUTABLE))
    }

    /// [`routable`](Self::routable) in batches as the database sends them.
    pub async fn routable_batches(&self) -> Result<RoutableBatches, LeaserError> {
        self.store
            .active_batches(self.expiration)
            .await
            .map(RoutableBatches)
            .map_err(store(ROUTABLE))
    }
}

const ROUTABLE: &str = "all-routable-leases: getting all leases: selecting all active subnets";

/// The batches of [`Leaser::routable_batches`]; a failed read is the error
/// [`Leaser::routable`] would give.
pub struct RoutableBatches(LeaseBatches);

impl RoutableBatches {
    /// The next batch; not to be called after the one marked `last`.
    pub async fn next(&mut self) -> Result<Batch, LeaserError> {
        next_batch(&mut self.0).await.map_err(store(ROUTABLE))
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

    // === §2 against the in-memory store ===

    use std::sync::Arc;

    use crate::db::memory::MemoryStore;
    use silk_core::{NetworkSpec, OverlayNetworks};

    const NOW: i64 = 1_700_000_000;
    const EXPIRATION: i64 = 1000;

    fn leaser(network: &str, prefix: u8) -> (Leaser, Arc<MemoryStore>) {
        let nets = OverlayNetworks::parse(&NetworkSpec::One(network.into())).unwrap();
        let store = Arc::new(MemoryStore::new(NOW));
        let pool = CidrPool::new(&nets, prefix).unwrap();
        (Leaser::new(store.clone(), pool, EXPIRATION), store)
    }

    fn lease(u: &str, s: &str, m: &str) -> Lease {
        Lease {
            underlay_ip: u.into(),
            overlay_subnet: s.into(),
            overlay_hardware_addr: m.into(),
        }
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn acquire_table() {
        // (network, prefix, single, rows before, host, expected subnet or error text)
        struct Case {
            name: &'static str,
            network: &'static str,
            prefix: u8,
            single: bool,
            rows: &'static [(&'static str, &'static str, i64)],
            host: &'static str,
            want: Result<&'static str, &'static str>,
        }
        let cases = [
            Case {
                name: "existing in-pool lease returned unchanged, kind not checked",
                network: "10.255.0.0/16",
                prefix: 24,
                single: true,
                rows: &[("10.0.0.1", "10.255.7.0/24", 0)],
                host: "10.0.0.1",
                want: Ok("10.255.7.0/24"),
            },
            Case {
                name: "existing expired lease is still the host's",
                network: "10.255.0.0/16",
                prefix: 24,
                single: false,
                rows: &[("10.0.0.1", "10.255.7.0/24", -5000)],
                host: "10.0.0.1",
                want: Ok("10.255.7.0/24"),
            },
            Case {
                name: "the only free block is found",
                network: "10.255.0.0/28",
                prefix: 30,
                single: false,
                rows: &[
                    ("10.0.0.1", "10.255.0.4/30", 0),
                    ("10.0.0.2", "10.255.0.8/30", 0),
                ],
                host: "10.0.0.3",
                want: Ok("10.255.0.12/30"),
            },
            Case {
                name: "out-of-pool row of the host is replaced",
                network: "10.255.0.0/28",
                prefix: 30,
                single: false,
                rows: &[
                    ("10.0.0.1", "10.254.0.4/30", 0),
                    ("10.0.0.2", "10.255.0.4/30", 0),
                    ("10.0.0.3", "10.255.0.8/30", 0),
                ],
                host: "10.0.0.1",
                want: Ok("10.255.0.12/30"),
            },
            Case {
                name: "single IP from the reserved first block",
                network: "10.255.0.0/28",
                prefix: 30,
                single: true,
                rows: &[
                    ("10.0.1.1", "10.255.0.1/32", 0),
                    ("10.0.1.2", "10.255.0.2/32", 0),
                ],
                host: "10.0.1.3",
                want: Ok("10.255.0.3/32"),
            },
            Case {
                name: "exhausted without expired rows",
                network: "10.255.0.0/28",
                prefix: 30,
                single: false,
                rows: &[
                    ("10.0.0.1", "10.255.0.4/30", 0),
                    ("10.0.0.2", "10.255.0.8/30", 0),
                    ("10.0.0.3", "10.255.0.12/30", 0),
                ],
                host: "10.0.0.4",
                want: Err("no lease available"),
            },
            Case {
                name: "exhausted: oldest expired row is reused",
                network: "10.255.0.0/28",
                prefix: 30,
                single: false,
                rows: &[
                    ("10.0.0.1", "10.255.0.4/30", -2000),
                    ("10.0.0.2", "10.255.0.8/30", -5000),
                    ("10.0.0.3", "10.255.0.12/30", 0),
                ],
                host: "10.0.0.4",
                want: Ok("10.255.0.8/30"),
            },
            Case {
                name: "expired single IPs do not free blocks",
                network: "10.255.0.0/28",
                prefix: 30,
                single: false,
                rows: &[
                    ("10.0.0.1", "10.255.0.4/30", 0),
                    ("10.0.0.2", "10.255.0.8/30", 0),
                    ("10.0.0.3", "10.255.0.12/30", 0),
                    ("10.0.1.1", "10.255.0.1/32", -5000),
                ],
                host: "10.0.0.4",
                want: Err("no lease available"),
            },
            Case {
                name: "foreign rows count as taken",
                network: "10.255.0.0/28",
                prefix: 30,
                single: false,
                rows: &[
                    ("10.0.0.1", "10.255.0.4/30", 0),
                    ("10.0.0.2", "10.255.0.8/30", 0),
                    ("10.0.0.9", "10.255.0.12/30", 0),
                ],
                host: "10.0.0.4",
                want: Err("no lease available"),
            },
            Case {
                name: "not an IPv4 underlay",
                network: "10.255.0.0/16",
                prefix: 24,
                single: false,
                rows: &[],
                host: "fe80::1",
                want: Err("invalid ipv4 address: fe80::1"),
            },
        ];
        for c in cases {
            let (l, store) = leaser(c.network, c.prefix);
            for (u, s, age) in c.rows {
                let ip: Ipv4Addr = s.split_once('/').unwrap().0.parse().unwrap();
                let m = HardwareAddr::for_overlay_ip(ip).to_string();
                store.insert_row(&lease(u, s, &m), NOW + age).unwrap();
            }
            let got = run(l.acquire(c.host, c.single));
            match (got, c.want) {
                (Ok((lease, _)), Ok(want)) => {
                    assert_eq!(lease.overlay_subnet, want, "{}", c.name);
                    assert_eq!(lease.overlay_hardware_addr, mac_for(want), "{}", c.name);
                    assert_eq!(lease.underlay_ip, c.host, "{}", c.name);
                    let rows = store.rows();
                    let row = rows.iter().find(|r| r.lease == lease).unwrap();
                    assert!(row.last_renewed_at >= NOW - 5000, "{}", c.name);
                }
                (Err(e), Err(want)) => assert_eq!(e.to_string(), want, "{}", c.name),
                (got, want) => panic!("{}: got {got:?}, want {want:?}", c.name),
            }
        }
    }

    #[test]
    fn acquire_fills_the_pool_with_distinct_subnets_and_macs() {
        let (l, store) = leaser("10.255.0.0/16", 24);
        let mut seen = std::collections::HashSet::new();
        for i in 0..255 {
            let (lease, how) =
                run(l.acquire(&format!("10.0.{}.{}", i / 200, i % 200 + 1), false)).unwrap();
            assert_eq!(how, Acquired::New);
            assert!(seen.insert(lease.overlay_subnet.clone()));
            assert_ne!(lease.overlay_subnet, "10.255.0.0/24");
        }
        assert_eq!(store.rows().len(), 255);
        assert!(matches!(
            run(l.acquire("10.0.9.9", false)),
            Err(LeaserError::NoLeaseAvailable)
        ));
        // The same host again gets its lease back, not a new one.
        let (again, how) = run(l.acquire("10.0.0.1", false)).unwrap();
        assert_eq!(how, Acquired::Existing);
        assert!(seen.contains(&again.overlay_subnet));
    }

    #[test]
    fn renew_table() {
        let row = lease("10.0.0.1", "10.255.7.0/24", "ee:ee:0a:ff:07:00");
        // (name, rows, renewed lease, expected outcome)
        type Case = (&'static str, Vec<Lease>, Lease, Result<(), &'static str>);
        let cases: [Case; 8] = [
            ("matching row renews", vec![row.clone()], row.clone(), Ok(())),
            (
                "missing row in the pool is re-registered",
                vec![],
                row.clone(),
                Ok(()),
            ),
            (
                "missing row outside the pool is refused",
                vec![],
                lease("10.0.0.1", "10.254.7.0/24", "ee:ee:0a:fe:07:00"),
                Err("renew-subnet-lease: overlay subnet not in pool"),
            ),
            (
                "another subnet for the host is a mismatch",
                vec![row.clone()],
                lease("10.0.0.1", "10.255.8.0/24", "ee:ee:0a:ff:08:00"),
                Err("renew-subnet-lease: lease mismatch"),
            ),
            (
                "subnet held by another host cannot be re-registered",
                vec![row.clone()],
                lease("10.0.0.2", "10.255.7.0/24", "ee:ee:0a:ff:07:00"),
                Err("renew-subnet-lease: adding entry: duplicate key value violates unique constraint on overlay_subnet"),
            ),
            (
                "bad underlay ip",
                vec![],
                lease("banana", "10.255.7.0/24", "ee:ee:0a:ff:07:00"),
                Err("renew-subnet-lease: invalid underlay ip: banana"),
            ),
            (
                "bad subnet",
                vec![],
                lease("10.0.0.1", "10.255.7.0", "ee:ee:0a:ff:07:00"),
                Err("renew-subnet-lease: invalid CIDR address: 10.255.7.0"),
            ),
            (
                "bad mac",
                vec![],
                lease("10.0.0.1", "10.255.7.0/24", "ee:ee"),
                Err("renew-subnet-lease: address ee:ee: invalid MAC address"),
            ),
        ];
        for (name, rows, renewed, want) in cases {
            let (l, store) = leaser("10.255.0.0/16", 24);
            for r in &rows {
                store.insert_row(r, NOW - 5000).unwrap();
            }
            store.advance(10);
            let got = run(l.renew(&renewed)).map_err(|e| e.to_string());
            assert_eq!(
                got.as_ref().map_err(|e| e.as_str()),
                want.as_ref().map_err(|e| *e),
                "{name}"
            );
            if want.is_ok() {
                let rows = store.rows();
                let r = rows.iter().find(|r| r.lease == renewed).unwrap();
                assert_eq!(r.last_renewed_at, NOW + 10, "{name}: renewed now");
            }
        }
    }

    #[test]
    fn expiry_hides_leases_and_a_renew_revives_them() {
        let (l, store) = leaser("10.255.0.0/16", 24);
        let (a, _) = run(l.acquire("10.0.0.1", false)).unwrap();
        let (b, _) = run(l.acquire("10.0.0.2", true)).unwrap();
        assert_eq!(run(l.routable()).unwrap().len(), 2);
        store.advance(EXPIRATION - 1);
        run(l.renew(&b)).unwrap();
        store.advance(1);
        // a: renewed exactly `expiration` ago is expired; b is fresh.
        assert_eq!(run(l.routable()).unwrap().to_leases(), vec![b.clone()]);
        run(l.renew(&a)).unwrap();
        assert_eq!(run(l.routable()).unwrap().len(), 2);
    }

    #[test]
    fn release_is_idempotent() {
        let (l, store) = leaser("10.255.0.0/16", 24);
        run(l.acquire("10.0.0.1", false)).unwrap();
        assert!(run(l.release("10.0.0.1")).unwrap());
        assert!(!run(l.release("10.0.0.1")).unwrap());
        assert!(store.rows().is_empty());
    }

    #[test]
    fn recycled_rows_get_the_new_host_and_mac_of_their_subnet() {
        let (l, store) = leaser("10.255.0.0/28", 30);
        for i in 1..=3 {
            run(l.acquire(&format!("10.0.0.{i}"), false)).unwrap();
        }
        store.set_renewed("10.0.0.2", NOW - 3000);
        let old = run(l.store().lookup("10.0.0.2")).unwrap().unwrap();
        let (got, how) = run(l.acquire("10.0.0.9", false)).unwrap();
        assert_eq!(how, Acquired::Recycled);
        assert_eq!(got.overlay_subnet, old.overlay_subnet);
        assert_eq!(got.overlay_hardware_addr, mac_for(&old.overlay_subnet));
        assert!(run(l.store().lookup("10.0.0.2")).unwrap().is_none());
        // The previous holder's renew now conflicts.
        assert!(matches!(
            run(l.renew(&old)),
            Err(LeaserError::RenewConflict(_))
        ));
    }
}
