//! The VTEP link and its addresses: find it (and the lease it carries), create it at acquire
//! time with every attribute set in the create request, delete it.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::LinkVxlan;
use silk_core::HardwareAddr;

use super::{Netlink, NetlinkError, CREATE, DELETE, REPLACE};
use crate::vtep::{VtepLink, VtepSpec};

const ENODEV: i32 = nix::libc::ENODEV;

fn is_enodev(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.code.map(|c| -c.get()) == Some(ENODEV))
}

fn request_error(what: String, e: rtnetlink::Error) -> NetlinkError {
    match e {
        rtnetlink::Error::NetlinkError(m) if m.code.is_some() => NetlinkError::Kernel {
            what,
            source: std::io::Error::from_raw_os_error(-m.raw_code()),
        },
        e => NetlinkError::Request {
            what,
            detail: e.to_string(),
        },
    }
}

impl Netlink {
    async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(l) => Ok(l),
            Err(e) if is_enodev(&e) => Ok(None),
            Err(e) => Err(request_error(format!("get link {name}"), e)),
        }
    }

    /// The interface index of `name`, if it exists.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        Ok(self.link_by_name(name).await?.map(|l| l.header.index))
    }

    /// The VTEP as the kernel has it: index, MAC, MTU and IPv4 addresses in dump order.
    pub async fn find_vtep(&self, name: &str) -> Result<Option<VtepLink>, NetlinkError> {
        let Some(link) = self.link_by_name(name).await? else {
            return Ok(None);
        };
        let mut mac = None;
        let mut mtu = None;
        for attr in &link.attributes {
            match attr {
                LinkAttribute::Address(a) if a.len() == 6 => {
                    let mut b = [0u8; 6];
                    b.copy_from_slice(a);
                    mac = Some(HardwareAddr(b));
                }
                LinkAttribute::Mtu(m) => mtu = Some(*m),
                _ => {}
            }
        }
        let index = link.header.index;
        let ipv4 = self
            .ipv4_addresses(Some(index))
            .await?
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        Ok(Some(VtepLink {
            index,
            mac,
            mtu,
            ipv4,
        }))
    }

    /// `(ifindex, address)` for every IPv4 address, optionally of one link, in dump order.
    pub async fn ipv4_addresses(
        &self,
        index: Option<u32>,
    ) -> Result<Vec<(u32, Ipv4Network)>, NetlinkError> {
        let mut req = self.handle.address().get();
        if let Some(i) = index {
            req = req.set_link_index_filter(i);
        }
        let mut stream = req.execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| request_error("dump addresses".into(), e))?
        {
            if msg.header.family != AddressFamily::Inet {
                continue;
            }
            let ip = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(net) = ip.and_then(|ip| Ipv4Network::new(ip, msg.header.prefix_len).ok()) {
                out.push((msg.header.index, net));
            }
        }
        Ok(out)
    }

    /// The interface holding `ip` (the VTEP's lower device when none is configured).
    pub async fn index_of_address(&self, ip: Ipv4Addr) -> Result<u32, NetlinkError> {
        self.ipv4_addresses(None)
            .await?
            .into_iter()
            .find(|(_, n)| n.ip() == ip)
            .map(|(i, _)| i)
            .ok_or(NetlinkError::NoInterfaceWithAddress(ip))
    }

    /// Creates the VTEP with VNI, port, GBP, learning off, local address, lower device and
    /// MAC in the one create request, adds its scope-link addresses and sets it up.
    /// Returns its interface index.
    pub async fn create_vtep(&self, spec: &VtepSpec) -> Result<u32, NetlinkError> {
        let mut b = LinkVxlan::new(&spec.name, spec.vni)
            .dev(spec.lower_ifindex)
            .port(spec.port)
            .local(spec.local)
            .learning(false)
            .proxy(false)
            .rsc(false)
            .l2miss(false)
            .l3miss(false)
            .ttl(0)
            .tos(0)
            .gbp()
            .address(spec.mac.0.to_vec());
        if let Some(mtu) = spec.mtu {
            b = b.mtu(mtu);
        }
        let name = spec.name.clone();
        self.request(
            RouteNetlinkMessage::NewLink(b.build()),
            CREATE,
            || format!("create vxlan link {name}"),
            false,
        )
        .await?;
        let index = self
            .link_index(&spec.name)
            .await?
            .ok_or_else(|| NetlinkError::LinkNotFound(spec.name.clone()))?;
        for addr in &spec.addresses {
            self.add_scope_link_address(index, *addr).await?;
        }
        let up = rtnetlink::LinkUnspec::new_with_index(index).up().build();
        self.request(
            RouteNetlinkMessage::SetLink(up),
            REPLACE & !rtnetlink::packet_core::NLM_F_CREATE,
            || format!("set link {name} up"),
            false,
        )
        .await?;
        Ok(index)
    }

    async fn add_scope_link_address(
        &self,
        index: u32,
        addr: Ipv4Network,
    ) -> Result<(), NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = addr.prefix();
        msg.header.scope = AddressScope::Link;
        msg.header.index = index;
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(addr.ip())));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(addr.ip())));
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            REPLACE,
            || format!("add address {addr} scope link"),
            false,
        )
        .await
    }

    /// Deletes link `name`; `Ok(false)` when it did not exist.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let Some(index) = self.link_index(name).await? else {
            return Ok(false);
        };
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(
            RouteNetlinkMessage::DelLink(msg),
            DELETE,
            || format!("delete link {name}"),
            true,
        )
        .await?;
        Ok(true)
    }
}
