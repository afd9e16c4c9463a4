//! Messages for a container's veth pair (silk-cni, cni.md §3.5), sent in order on a
//! [`BatchSocket`] opened in the namespace they apply to: no `ip` process, one datagram per
//! side. The peer is created straight in the container namespace under its final name, with
//! MTU, MAC and NOARP set in the create request itself. Neighbours, addresses and routes take
//! either address family (the IPv6 side of a container uses the same shapes around `fe80::1`).

use std::net::IpAddr;
use std::os::fd::RawFd;

use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{LinkMessageBuilder, LinkUnspec};

use super::batch::{BatchOp, BatchSocket};
use super::{NetlinkError, CREATE, DELETE, REPLACE};

/// One end of the pair as created.
#[derive(Debug, Clone)]
pub struct VethEnd {
    pub name: String,
    pub mac: [u8; 6],
}

/// `ip link add <host> mtu M address <hm> arp off type veth peer name <peer> mtu M
/// address <pm> arp off netns <fd>`: both ends down.
pub fn create_pair(host: &VethEnd, peer: &VethEnd, mtu: u32, peer_netns: RawFd) -> BatchOp {
    let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.name.clone())
        .mtu(mtu)
        .address(peer.mac.to_vec())
        .arp(false)
        .setns_by_fd(peer_netns)
        .build();
    let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
        .name(host.name.clone())
        .mtu(mtu)
        .address(host.mac.to_vec())
        .arp(false)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
        .build();
    BatchOp {
        msg: RouteNetlinkMessage::NewLink(msg),
        flags: CREATE,
        accept_missing: false,
        what: format!("create veth pair {} / {}", host.name, peer.name),
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// `ip neigh replace <ip> lladdr <mac> dev <index> nud permanent` (`ip -6 neigh …` for IPv6).
pub fn permanent_neighbour(index: u32, ip: impl Into<IpAddr>, mac: [u8; 6]) -> BatchOp {
    let ip = ip.into();
    let mut m = NeighbourMessage::default();
    m.header.family = family(ip);
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unspec;
    m.attributes.push(NeighbourAttribute::Destination(match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    BatchOp {
        msg: RouteNetlinkMessage::NewNeighbour(m),
        flags: REPLACE,
        accept_missing: false,
        what: format!("set neighbour {ip} permanent"),
    }
}

/// `ip addr add <local>/32 peer <peer>/32 dev <index> scope link`, or for IPv6
/// `ip -6 addr add <local>/128 peer <peer>/128 dev <index> nodad` (the kernel derives an IPv6
/// address's scope from the address itself; `nodad` makes it usable at once).
pub fn point_to_point_address(
    index: u32,
    local: impl Into<IpAddr>,
    peer: impl Into<IpAddr>,
) -> BatchOp {
    let (local, peer) = (local.into(), peer.into());
    let mut m = AddressMessage::default();
    m.header.family = family(local);
    m.header.scope = AddressScope::Link;
    m.header.index = index;
    if local.is_ipv6() {
        m.header.prefix_len = 128;
        m.header.flags = AddressHeaderFlags::Nodad;
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    } else {
        m.header.prefix_len = 32;
    }
    m.attributes.push(AddressAttribute::Local(local));
    m.attributes.push(AddressAttribute::Address(peer));
    let len = m.header.prefix_len;
    BatchOp {
        msg: RouteNetlinkMessage::NewAddress(m),
        flags: CREATE,
        accept_missing: false,
        what: format!("add address {local}/{len} peer {peer}/{len}"),
    }
}

/// `ip link set <index> up`.
pub fn link_up(index: u32) -> BatchOp {
    BatchOp {
        msg: RouteNetlinkMessage::SetLink(LinkUnspec::new_with_index(index).up().build()),
        flags: DELETE,
        accept_missing: false,
        what: format!("set link {index} up"),
    }
}

/// `ip route replace default via <gw> dev <index> [src <src>]` (main table, proto boot); an
/// IPv6 gateway makes it `ip -6 route replace default via <gw> dev <index>`.
pub fn default_route(index: u32, gateway: impl Into<IpAddr>, src: Option<IpAddr>) -> BatchOp {
    let gateway = gateway.into();
    let addr = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    };
    let mut m = RouteMessage::default();
    m.header.address_family = family(gateway);
    m.header.destination_prefix_length = 0;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Gateway(addr(gateway)));
    if let Some(src) = src {
        m.attributes.push(RouteAttribute::PrefSource(addr(src)));
    }
    m.attributes.push(RouteAttribute::Oif(index));
    let what = match src {
        Some(src) => format!("replace default route via {gateway} src {src}"),
        None => format!("replace default route via {gateway}"),
    };
    BatchOp {
        msg: RouteNetlinkMessage::NewRoute(m),
        flags: REPLACE,
        accept_missing: false,
        what,
    }
}

/// `ip route replace <dst>/32 dev <index> metric 256` (`/128` for IPv6; main table, proto
/// boot): the route to a point-to-point peer, at the metric the kernel gives its own peer
/// routes, so when the kernel installs that route later it finds this one and adds nothing.
pub fn peer_route(index: u32, dst: impl Into<IpAddr>) -> BatchOp {
    let dst = dst.into();
    let mut m = RouteMessage::default();
    m.header.address_family = family(dst);
    m.header.destination_prefix_length = if dst.is_ipv6() { 128 } else { 32 };
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = if dst.is_ipv6() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Destination(match dst {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }));
    m.attributes.push(RouteAttribute::Priority(256));
    m.attributes.push(RouteAttribute::Oif(index));
    BatchOp {
        msg: RouteNetlinkMessage::NewRoute(m),
        flags: REPLACE,
        accept_missing: false,
        what: format!("replace route {dst} dev {index}"),
    }
}

/// `ip link del <name>`; a missing link counts as done.
pub fn delete_link_by_name(name: &str) -> BatchOp {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    BatchOp {
        msg: RouteNetlinkMessage::DelLink(m),
        flags: DELETE,
        accept_missing: true,
        what: format!("delete link {name}"),
    }
}

/// Runs `ops` in order on `socket`, stopping at the first failure. Operations that failed
/// with EINTR/EAGAIN/EBUSY are sent again a bounded number of times.
pub fn run_all(socket: &mut BatchSocket, ops: &[BatchOp]) -> Result<(), NetlinkError> {
    use nix::libc::{EAGAIN, EBUSY, EINTR};
    let mut start = 0;
    let mut attempt = 0;
    while start < ops.len() {
        let results = socket.run(&ops[start..]);
        let Some(pos) = results.iter().position(|r| r.is_err()) else {
            return Ok(());
        };
        let Some(Err(e)) = results.into_iter().nth(pos) else {
            return Ok(());
        };
        if matches!(e.errno(), Some(EINTR | EAGAIN | EBUSY)) && attempt < 5 {
            attempt += 1;
            std::thread::sleep(std::time::Duration::from_millis(5 << attempt));
            // Everything before the failure is applied; later ops ran on a state missing it,
            // so they are sent again too (each is idempotent or fails the same way).
            start += pos;
            continue;
        }
        return Err(e);
    }
    Ok(())
}

/// The kernel's interface index of `name` in the calling thread's namespace.
pub fn index_of(name: &str) -> Result<u32, NetlinkError> {
    nix::net::if_::if_nametoindex(name).map_err(|e| NetlinkError::Kernel {
        what: format!("find link {name}"),
        source: std::io::Error::from_raw_os_error(e as i32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::link::LinkFlags;

    #[test]
    fn pair_is_created_with_peer_attributes_in_the_request() {
        let op = create_pair(
            &VethEnd {
                name: "s-010255030002".into(),
                mac: [0xaa, 0xaa, 10, 255, 30, 2],
            },
            &VethEnd {
                name: "eth0".into(),
                mac: [0xee, 0xee, 10, 255, 30, 2],
            },
            1450,
            7,
        );
        let RouteNetlinkMessage::NewLink(m) = op.msg else {
            panic!("not a NewLink")
        };
        assert!(m.header.flags.contains(LinkFlags::Noarp));
        assert!(m.attributes.contains(&LinkAttribute::Mtu(1450)));
        let peer = m
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                    rtnetlink::packet_route::link::LinkInfo::Data(InfoData::Veth(
                        InfoVeth::Peer(p),
                    )) => Some(p.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .expect("peer");
        assert!(peer.attributes.contains(&LinkAttribute::NetNsFd(7)));
        assert!(peer
            .attributes
            .contains(&LinkAttribute::IfName("eth0".into())));
        assert!(peer.header.flags.contains(LinkFlags::Noarp));
        assert_eq!(op.flags, CREATE);
    }

    #[test]
    fn ipv6_variants_use_the_inet6_family_and_128_bit_prefixes() {
        let v6: std::net::Ipv6Addr = "2001:db8:ab::2".parse().unwrap();
        let gw: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
        let RouteNetlinkMessage::NewNeighbour(n) =
            permanent_neighbour(3, v6, [0xee, 0xee, 10, 255, 30, 2]).msg
        else {
            panic!("not a NewNeighbour")
        };
        assert_eq!(n.header.family, AddressFamily::Inet6);
        assert!(n
            .attributes
            .contains(&NeighbourAttribute::Destination(NeighbourAddress::Inet6(
                v6
            ))));
        let RouteNetlinkMessage::NewAddress(a) = point_to_point_address(3, gw, v6).msg else {
            panic!("not a NewAddress")
        };
        assert_eq!(
            (a.header.family, a.header.prefix_len),
            (AddressFamily::Inet6, 128)
        );
        assert!(a.attributes.contains(&AddressAttribute::Local(gw.into())));
        assert!(a.attributes.contains(&AddressAttribute::Address(v6.into())));
        assert!(a
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
        let RouteNetlinkMessage::NewAddress(a4) = point_to_point_address(
            3,
            std::net::Ipv4Addr::new(169, 254, 0, 1),
            std::net::Ipv4Addr::new(10, 255, 30, 2),
        )
        .msg
        else {
            panic!("not a NewAddress")
        };
        assert_eq!(
            (a4.header.family, a4.header.prefix_len),
            (AddressFamily::Inet, 32)
        );
        let RouteNetlinkMessage::NewRoute(r) = default_route(3, gw, None).msg else {
            panic!("not a NewRoute")
        };
        assert_eq!(r.header.address_family, AddressFamily::Inet6);
        assert!(r
            .attributes
            .contains(&RouteAttribute::Gateway(RouteAddress::Inet6(gw))));
        assert!(!r
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::PrefSource(_))));
        let RouteNetlinkMessage::NewRoute(p) = peer_route(3, v6).msg else {
            panic!("not a NewRoute")
        };
        assert_eq!(
            (p.header.address_family, p.header.destination_prefix_length),
            (AddressFamily::Inet6, 128)
        );
        assert!(p
            .attributes
            .contains(&RouteAttribute::Destination(RouteAddress::Inet6(v6))));
        assert!(p.attributes.contains(&RouteAttribute::Priority(256)));
    }
}
