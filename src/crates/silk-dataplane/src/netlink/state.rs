//! Reading the VTEP's actual state: one route dump, one IPv4 neighbour dump and one bridge
//! FDB dump, filtered to the device (the kernel filters dumps only in strict mode, so the
//! filter runs here).

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;
use silk_core::HardwareAddr;

use super::{Netlink, NetlinkError};
use crate::vtep::{ArpEntry, FdbEntry, Route, VtepState};

impl Netlink {
    /// Gateway routes in the main table leaving through `index`, permanent ARP entries and
    /// permanent self FDB entries on `index`.
    pub async fn read_vtep_state(&self, index: u32) -> Result<VtepState, NetlinkError> {
        let mut state = VtepState::default();
        let dump = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut routes = self.handle.route().get(dump).execute();
        while let Some(m) = routes.try_next().await.map_err(|e| NetlinkError::Request {
            what: "dump routes".into(),
            detail: e.to_string(),
        })? {
            if let Some(r) = route_on(&m, index) {
                state.routes.push(r);
            }
        }
        let mut arp = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        while let Some(m) = arp.try_next().await.map_err(|e| NetlinkError::Request {
            what: "dump neighbours".into(),
            detail: e.to_string(),
        })? {
            if m.header.ifindex != index || m.header.state != NeighbourState::Permanent {
                continue;
            }
            if let (Some(IpAddr::V4(ip)), Some(mac)) = (neigh_dst(&m), neigh_mac(&m)) {
                state.arp.push(ArpEntry { ip, mac });
            }
        }
        let mut fdb = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute();
        while let Some(m) = fdb.try_next().await.map_err(|e| NetlinkError::Request {
            what: "dump fdb".into(),
            detail: e.to_string(),
        })? {
            if m.header.ifindex != index
                || m.header.state != NeighbourState::Permanent
                || !m.header.flags.contains(NeighbourFlags::Own)
            {
                continue;
            }
            if let (Some(IpAddr::V4(dst)), Some(mac)) = (neigh_dst(&m), neigh_mac(&m)) {
                state.fdb.push(FdbEntry { mac, dst });
            }
        }
        Ok(state)
    }
}

fn route_on(m: &RouteMessage, index: u32) -> Option<Route> {
    if m.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut table = u32::from(m.header.table);
    let (mut dst, mut gateway, mut src, mut oif, mut metric) = (None, None, None, None, 0);
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => src = Some(*ip),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || oif != Some(index) {
        return None;
    }
    Some(Route {
        dst: Ipv4Network::new(
            dst.unwrap_or(Ipv4Addr::UNSPECIFIED),
            m.header.destination_prefix_length,
        )
        .ok()?,
        gateway: gateway?,
        src: src.unwrap_or(Ipv4Addr::UNSPECIFIED),
        onlink: m.header.flags.contains(RouteFlags::Onlink),
        metric,
    })
}

fn neigh_dst(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        // AF_BRIDGE (FDB) messages carry NDA_DST raw; the parser cannot know its family.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
            Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
        }
        _ => None,
    })
}

fn neigh_mac(m: &NeighbourMessage) -> Option<HardwareAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(b);
            Some(HardwareAddr(mac))
        }
        _ => None,
    })
}
