//! When the daemon may remove a remote cell's entries: the guard against a transiently empty
//! or partial lease list black-holing the fabric.
//!
//! Upstream deletes every route, ARP and FDB entry whose lease is missing from the latest
//! `GET /leases`, so one empty answer (database emptied, restored from backup, or every lease
//! expired after a cluster-wide partition) removes all remote routes on every cell at once.
//! The rule here:
//!
//! 1. A failed renew or list changes nothing (as upstream).
//! 2. A list that does not contain our own lease is not trusted for removals: our renew just
//!    succeeded, so a consistent controller lists us. Such a list may add entries, never
//!    remove them. An empty list is the extreme case of this.
//! 3. A trusted list removes a remote cell's entries only after that cell has been missing
//!    from [`MISSES_BEFORE_REMOVAL`] consecutive trusted lists, so a list taken while the
//!    fleet is renewing again after an outage cannot flap routes. A released or expired cell
//!    disappears within two poll intervals instead of one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use silk_dataplane::vtep::{DesiredVtep, RemovalPolicy, VtepState};

/// Consecutive trusted lists a remote cell must be missing from before its entries go.
pub const MISSES_BEFORE_REMOVAL: u32 = 2;

/// Counts, per remote VTEP IP present in the kernel, how many trusted lists in a row missed it.
#[derive(Debug, Default)]
pub struct Retention {
    misses: BTreeMap<Ipv4Addr, u32>,
}

impl Retention {
    /// The removal policy for this cycle. `trusted` is whether the list contains our own lease.
    pub fn policy(
        &mut self,
        trusted: bool,
        desired: &DesiredVtep,
        actual: &VtepState,
    ) -> RemovalPolicy {
        if !trusted {
            return RemovalPolicy {
                suppress_all: true,
                keep: BTreeSet::new(),
            };
        }
        let present: BTreeSet<Ipv4Addr> = actual
            .routes
            .iter()
            .map(|r| r.gateway)
            .chain(actual.arp.iter().map(|a| a.ip))
            .filter(|g| !desired.arp.contains_key(g))
            .collect();
        self.misses.retain(|g, _| present.contains(g));
        let mut keep = BTreeSet::new();
        for g in present {
            let n = self.misses.entry(g).or_insert(0);
            *n += 1;
            if *n < MISSES_BEFORE_REMOVAL {
                keep.insert(g);
            }
        }
        RemovalPolicy {
            suppress_all: false,
            keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silk_core::HardwareAddr;
    use silk_dataplane::vtep::{ArpEntry, Route};

    fn state(gws: &[&str]) -> VtepState {
        let mut s = VtepState::default();
        for g in gws {
            let ip: Ipv4Addr = g.parse().unwrap();
            s.routes.push(Route {
                dst: format!("{g}/24").parse().unwrap(),
                gateway: ip,
                src: "10.255.7.0".parse().unwrap(),
                onlink: false,
                metric: 1,
            });
            s.arp.push(ArpEntry {
                ip,
                mac: HardwareAddr::for_overlay_ip(ip),
            });
        }
        s
    }

    #[test]
    fn untrusted_list_removes_nothing() {
        let mut r = Retention::default();
        let p = r.policy(false, &DesiredVtep::default(), &state(&["10.255.8.0"]));
        assert!(p.suppress_all);
    }

    #[test]
    fn removal_needs_two_consecutive_misses() {
        let mut r = Retention::default();
        let actual = state(&["10.255.8.0"]);
        let p = r.policy(true, &DesiredVtep::default(), &actual);
        assert!(p.keep.contains(&"10.255.8.0".parse().unwrap()));
        let p = r.policy(true, &DesiredVtep::default(), &actual);
        assert!(p.keep.is_empty() && !p.suppress_all);
    }

    #[test]
    fn reappearing_cell_resets_its_count() {
        let mut r = Retention::default();
        let actual = state(&["10.255.8.0"]);
        r.policy(true, &DesiredVtep::default(), &actual);
        let mut desired = DesiredVtep::default();
        let ip: Ipv4Addr = "10.255.8.0".parse().unwrap();
        desired.arp.insert(
            ip,
            ArpEntry {
                ip,
                mac: HardwareAddr::for_overlay_ip(ip),
            },
        );
        r.policy(true, &desired, &actual);
        let p = r.policy(true, &DesiredVtep::default(), &actual);
        assert!(
            p.keep.contains(&ip),
            "count restarted after the cell was listed again"
        );
    }
}
