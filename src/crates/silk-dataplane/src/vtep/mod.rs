//! The VTEP (`silk-vtep`) data model: the link the daemon creates, its addresses, and the
//! per-remote-lease route, permanent ARP neighbour and FDB entry it keeps on it
//! (control-plane contract §5.7, upstream-delta §3.1). Pure types; [`plan`] diffs desired
//! against actual state, [`crate::netlink`] reads and applies it, behind the
//! [`backend::VtepBackend`] port the daemon's converge loop drives.

pub mod backend;
pub mod plan;

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use silk_core::{HardwareAddr, OverlayNetworks};

pub use backend::{NetlinkVtep, RecordingVtep, VtepBackend, VtepCall};
pub use plan::{desired_from_leases, plan_vtep, DesiredVtep, NetlinkOp, RemovalPolicy, VtepPlan};

/// Everything needed to create `silk-vtep` at acquire time. The MAC is set at creation
/// (upstream works around systemd-networkd rewriting MACs set afterwards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtepSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: Ipv4Addr,
    /// Interface index of the underlay device (`vxlan_interface_name` or the one holding `local`).
    pub lower_ifindex: u32,
    pub mac: HardwareAddr,
    /// `None` leaves the kernel default (lower device MTU - 50).
    pub mtu: Option<u32>,
    /// Scope-link addresses, from [`vtep_addresses`].
    pub addresses: Vec<Ipv4Network>,
}

/// The local lease as the converger needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalVtep {
    /// The lease's first address, the VTEP's own overlay IP.
    pub overlay_ip: Ipv4Addr,
    /// The lease subnet, masked.
    pub subnet: Ipv4Network,
    pub networks: OverlayNetworks,
    /// Routes get `onlink` on single-IP VMs (upstream-delta §3.1).
    pub single_ip_only: bool,
}

/// A route to a remote lease: `dst via gateway dev silk-vtep src src metric metric [onlink]`.
/// The kernel keys a route by table, destination, TOS and priority (`metric`), so two routes
/// to one destination with different metrics coexist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dst: Ipv4Network,
    pub gateway: Ipv4Addr,
    pub src: Ipv4Addr,
    pub onlink: bool,
    /// RTA_PRIORITY; see [`route_metric`]. 0 on routes read back without one.
    pub metric: u32,
}

/// The metric (route priority) of the route to `dst`: `1 + ((network >> (32 - prefix)) & 0xffff)`,
/// i.e. one plus the low 16 bits of the destination's subnet number (0 for a /0).
///
/// The kernel's `fib_info` hash covers device, source, protocol, scope and priority but not
/// the gateway, so lease routes that share all of those land in one hash bucket and each
/// insert walks the earlier ones. A metric that differs per destination spreads them: it is
/// distinct for up to 65,536 leases of one size in any overlay, always in `1..=65536`, and a
/// pure function of the destination, so a restarted daemon computes the same value and finds
/// its routes already in place. Every destination has exactly one lease route, so the value
/// never decides between routes.
pub fn route_metric(dst: Ipv4Network) -> u32 {
    let subnet = u32::from(dst.network())
        .checked_shr(32 - u32::from(dst.prefix()))
        .unwrap_or(0);
    1 + (subnet & 0xffff)
}

/// A permanent ARP entry: the remote VTEP IP resolves to the remote VTEP MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArpEntry {
    pub ip: Ipv4Addr,
    pub mac: HardwareAddr,
}

/// A permanent FDB entry (`M dst U self permanent`): frames for the remote VTEP MAC are
/// encapsulated to the remote underlay IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub mac: HardwareAddr,
    pub dst: Ipv4Addr,
}

/// What the kernel holds on the VTEP, read with one dump per object kind: gateway routes on
/// the device, permanent IPv4 neighbours and permanent self FDB entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VtepState {
    pub routes: Vec<Route>,
    pub arp: Vec<ArpEntry>,
    pub fdb: Vec<FdbEntry>,
}

/// What an existing VTEP tells about the local lease (contract §5.5 step 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtepLink {
    pub index: u32,
    pub mac: Option<HardwareAddr>,
    pub mtu: Option<u32>,
    /// The device's IPv4 addresses in dump order; the first one is the lease IP.
    pub ipv4: Vec<Ipv4Network>,
}

/// The VTEP's addresses: one scope-link address per overlay CIDR. For the CIDR holding the
/// lease, `<lease IP>/<its prefix>`; for every other CIDR `<network>/<prefix>`
/// (upstream-delta §3.1). `None` when the lease is outside every CIDR.
pub fn vtep_addresses(lease_ip: Ipv4Addr, networks: &OverlayNetworks) -> Option<Vec<Ipv4Network>> {
    networks.which_contains(lease_ip)?;
    Some(
        networks
            .as_slice()
            .iter()
            .map(|n| {
                let ip = if n.contains(lease_ip) {
                    lease_ip
                } else {
                    n.network()
                };
                // Invariant: the prefix comes from a valid network.
                Ipv4Network::new(ip, n.prefix()).unwrap_or(*n)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use silk_core::NetworkSpec;
    use std::collections::BTreeSet;

    #[test]
    fn one_address_per_cidr() {
        let nets = OverlayNetworks::parse(&NetworkSpec::Many(vec![
            "10.255.0.0/16".into(),
            "10.240.0.0/20".into(),
        ]))
        .unwrap();
        let got = vtep_addresses("10.255.7.0".parse().unwrap(), &nets).unwrap();
        let want: Vec<Ipv4Network> = vec![
            "10.255.7.0/16".parse().unwrap(),
            "10.240.0.0/20".parse().unwrap(),
        ];
        assert_eq!(got, want);
        assert!(vtep_addresses("10.1.0.0".parse().unwrap(), &nets).is_none());
    }

    #[test]
    fn route_metric_is_the_subnet_number_plus_one() {
        let m = |s: &str| route_metric(s.parse().unwrap());
        assert_eq!(m("10.255.0.0/24"), 0xff00 + 1);
        assert_eq!(m("10.255.8.0/24"), 65289);
        assert_eq!(m("10.255.255.0/24"), 65536);
        assert_eq!(m("10.255.0.5/32"), 6);
        assert_eq!(m("10.255.255.255/32"), 65536);
        assert_eq!(m("0.0.0.0/0"), 1);
        // Distinct for every /24 of a /8 and every /32 of a /16.
        let mut seen = BTreeSet::new();
        for i in 0..65536u32 {
            let a = Ipv4Addr::from((10 << 24) | (i << 8));
            assert!(seen.insert(route_metric(Ipv4Network::new(a, 24).unwrap())));
        }
        let mut seen = BTreeSet::new();
        for i in 0..65536u32 {
            let a = Ipv4Addr::from((10 << 24) | (255 << 16) | i);
            assert!(seen.insert(route_metric(Ipv4Network::new(a, 32).unwrap())));
        }
    }
}
