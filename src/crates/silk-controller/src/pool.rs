//! The lease pools (control-plane §2.1, upstream-delta §3.1), by arithmetic instead of
//! upstream's hash maps of every member: for each overlay CIDR `N/n` and block prefix `s`
//! (`B = 2^(32-s)`), the block pool holds `N + k·B / s` for `k = 1 … 2^(s-n) − 1` (the first block
//! of every CIDR is reserved) and the single-IP pool holds `N + i / 32` for `i = 1 … B − 1`
//! (the reserved first block of every CIDR, without its network address).
//!
//! Members are indexed `0 … size − 1` across the CIDRs in configured order, so a random member
//! is one random number, and membership is a parse plus a few comparisons.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use rand::Rng;
use silk_core::OverlayNetworks;

/// Which pool a lease comes from; the database tells them apart by the `/32` suffix alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Block,
    SingleIp,
}

impl Kind {
    pub fn of(single_overlay_ip: bool) -> Self {
        if single_overlay_ip {
            Kind::SingleIp
        } else {
            Kind::Block
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("subnet_prefix_length must be a value between 1-30")]
    PrefixRange,
    #[error("subnet_prefix_length '{prefix}' must be smaller than the network '{network}'")]
    PrefixNotSmaller { prefix: u8, network: String },
}

#[derive(Debug, Clone)]
pub struct CidrPool {
    nets: Vec<Ipv4Network>,
    prefix: u8,
    /// Blocks per CIDR, the reserved first one excluded.
    blocks: Vec<u64>,
}

impl CidrPool {
    pub fn new(networks: &OverlayNetworks, prefix: u8) -> Result<Self, PoolError> {
        if !(1..=30).contains(&prefix) {
            return Err(PoolError::PrefixRange);
        }
        let nets = networks.as_slice().to_vec();
        let mut blocks = Vec::with_capacity(nets.len());
        for net in &nets {
            if net.prefix() >= prefix {
                return Err(PoolError::PrefixNotSmaller {
                    prefix,
                    network: net.to_string(),
                });
            }
            blocks.push((1u64 << (prefix - net.prefix())) - 1);
        }
        Ok(CidrPool {
            nets,
            prefix,
            blocks,
        })
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn block_size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    /// Number of members of the pool.
    pub fn size(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Block => self.blocks.iter().sum(),
            Kind::SingleIp => (self.block_size() - 1) * self.nets.len() as u64,
        }
    }

    /// The member with index `idx` (< `size(kind)`), as its canonical string.
    pub fn nth(&self, kind: Kind, idx: u64) -> Option<String> {
        let mut idx = idx;
        for (net, &count) in self.nets.iter().zip(&self.blocks) {
            let per_net = match kind {
                Kind::Block => count,
                Kind::SingleIp => self.block_size() - 1,
            };
            if idx < per_net {
                let base = u64::from(u32::from(net.network()));
                return Some(match kind {
                    Kind::Block => {
                        let ip = Ipv4Addr::from((base + (idx + 1) * self.block_size()) as u32);
                        format!("{ip}/{}", self.prefix)
                    }
                    Kind::SingleIp => format!("{}/32", Ipv4Addr::from((base + idx + 1) as u32)),
                });
            }
            idx -= per_net;
        }
        None
    }

    /// Exact-string membership in either pool, as upstream's map lookup: only the canonical
    /// text (`10.255.7.0/24`, `10.255.0.5/32`) of a member matches.
    pub fn is_member(&self, subnet: &str) -> bool {
        let Some((ip_text, prefix_text)) = subnet.split_once('/') else {
            return false;
        };
        let (Ok(ip), Ok(prefix)) = (ip_text.parse::<Ipv4Addr>(), prefix_text.parse::<u8>()) else {
            return false;
        };
        if format!("{ip}/{prefix}") != subnet {
            return false;
        }
        let Some(net) = self.nets.iter().find(|n| n.contains(ip)) else {
            return false;
        };
        let offset = u64::from(u32::from(ip) - u32::from(net.network()));
        if prefix == self.prefix {
            offset % self.block_size() == 0 && offset >= self.block_size()
        } else if prefix == 32 {
            offset >= 1 && offset < self.block_size()
        } else {
            false
        }
    }

    /// Up to `count` distinct random members not in `taken`. Samples when the pool is mostly
    /// free, enumerates the free members when it is mostly taken, so the cost stays bounded by
    /// the number of rows either way.
    pub fn pick_free<R: Rng>(
        &self,
        kind: Kind,
        taken: &HashSet<String>,
        count: usize,
        rng: &mut R,
    ) -> Vec<String> {
        let size = self.size(kind);
        if size == 0 {
            return Vec::new();
        }
        let mut out: Vec<String> = Vec::with_capacity(count);
        if (taken.len() as u64) * 2 < size {
            let mut tries = 0;
            while out.len() < count && tries < count * 8 {
                tries += 1;
                let s = self
                    .nth(kind, rng.random_range(0..size))
                    .expect("index below size");
                if !taken.contains(&s) && !out.contains(&s) {
                    out.push(s);
                }
            }
            return out;
        }
        let mut free: Vec<String> = (0..size)
            .filter_map(|i| self.nth(kind, i))
            .filter(|s| !taken.contains(s))
            .collect();
        for i in 0..free.len().min(count) {
            let j = rng.random_range(i..free.len());
            free.swap(i, j);
        }
        free.truncate(count);
        free
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silk_core::NetworkSpec;

    const NETWORK: &str = "10.255.0.0/16";

    fn pool(spec: NetworkSpec, prefix: u8) -> CidrPool {
        CidrPool::new(&OverlayNetworks::parse(&spec).unwrap(), prefix).unwrap()
    }

    #[test]
    fn default_pool_matches_upstream() {
        let p = pool(NetworkSpec::One(NETWORK.into()), 24);
        assert_eq!(p.size(Kind::Block), 255);
        assert_eq!(p.size(Kind::SingleIp), 255);
        assert_eq!(p.nth(Kind::Block, 0).unwrap(), "10.255.1.0/24");
        assert_eq!(p.nth(Kind::Block, 254).unwrap(), "10.255.255.0/24");
        assert_eq!(p.nth(Kind::Block, 255), None);
        assert_eq!(p.nth(Kind::SingleIp, 0).unwrap(), "10.255.0.1/32");
        assert_eq!(p.nth(Kind::SingleIp, 254).unwrap(), "10.255.0.255/32");
        assert!(p.is_member("10.255.7.0/24"));
        assert!(p.is_member("10.255.0.5/32"));
        for not in [
            "10.255.0.0/24",
            "10.255.0.0/32",
            "10.255.7.1/24",
            "10.255.7.0/25",
            "10.255.1.5/32",
            "10.254.7.0/24",
            "10.255.07.0/24",
            " 10.255.7.0/24",
            "10.255.7.0",
        ] {
            assert!(!p.is_member(not), "{not}");
        }
    }

    #[test]
    fn unmasked_network_and_list_of_networks() {
        let p = pool(NetworkSpec::One("10.255.0.1/12".into()), 24);
        assert_eq!(p.nth(Kind::Block, 0).unwrap(), "10.240.1.0/24");
        let p = pool(
            NetworkSpec::Many(vec!["10.255.0.0/20".into(), "10.255.96.0/21".into()]),
            24,
        );
        // PR #148's example: 16 + 8 blocks minus one reserved per CIDR.
        assert_eq!(p.size(Kind::Block), 22);
        assert_eq!(p.nth(Kind::Block, 14).unwrap(), "10.255.15.0/24");
        assert_eq!(p.nth(Kind::Block, 15).unwrap(), "10.255.97.0/24");
        assert!(!p.is_member("10.255.96.0/24"));
        assert!(p.is_member("10.255.103.0/24"));
        assert_eq!(p.size(Kind::SingleIp), 510);
        assert_eq!(p.nth(Kind::SingleIp, 255).unwrap(), "10.255.96.1/32");
    }

    #[test]
    fn prefix_must_fit() {
        let nets = OverlayNetworks::parse(&NetworkSpec::One(NETWORK.into())).unwrap();
        assert_eq!(CidrPool::new(&nets, 0).unwrap_err(), PoolError::PrefixRange);
        assert_eq!(
            CidrPool::new(&nets, 31).unwrap_err(),
            PoolError::PrefixRange
        );
        assert_eq!(
            CidrPool::new(&nets, 16).unwrap_err().to_string(),
            "subnet_prefix_length '16' must be smaller than the network '10.255.0.0/16'"
        );
    }

    #[test]
    fn large_pools_need_no_memory() {
        let p = pool(NetworkSpec::One("10.0.0.0/8".into()), 30);
        assert_eq!(p.size(Kind::Block), (1 << 22) - 1);
        assert_eq!(
            p.nth(Kind::Block, (1 << 22) - 2).unwrap(),
            "10.255.255.252/30"
        );
        assert!(p.is_member("10.200.3.8/30"));
    }

    #[test]
    fn pick_free_avoids_taken_in_sparse_and_dense_pools() {
        let p = pool(NetworkSpec::One(NETWORK.into()), 24);
        let mut rng = rand::rng();
        let taken: HashSet<String> = (0..250).filter_map(|i| p.nth(Kind::Block, i)).collect();
        let free = p.pick_free(Kind::Block, &taken, 16, &mut rng);
        assert_eq!(free.len(), 5);
        assert!(free.iter().all(|s| !taken.contains(s) && p.is_member(s)));
        let sparse = p.pick_free(Kind::Block, &HashSet::new(), 8, &mut rng);
        assert_eq!(sparse.len(), 8);
        let all: HashSet<String> = (0..255).filter_map(|i| p.nth(Kind::Block, i)).collect();
        assert!(p.pick_free(Kind::Block, &all, 4, &mut rng).is_empty());
    }
}
