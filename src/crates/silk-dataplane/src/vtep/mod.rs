//! The VTEP (`silk-vtep`) data model: the link the daemon creates, its addresses, and the
//! per-remote-lease route, permanent ARP neighbour and FDB entry it keeps on it
//! (control-plane contract §5.7, upstream-delta §3.1). Pure types; [`plan`] diffs desired
//! against actual state and [`crate::netlink`] reads and applies it.

pub mod plan;

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use silk_core::{HardwareAddr, OverlayNetworks};

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

/// A route to a remote lease: `dst via gateway dev silk-vtep src src [onlink]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dst: Ipv4Network,
    pub gateway: Ipv4Addr,
    pub src: Ipv4Addr,
    pub onlink: bool,
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
}
