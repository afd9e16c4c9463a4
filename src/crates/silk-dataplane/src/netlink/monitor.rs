//! Change notifications for the VTEP: a non-blocking rtnetlink socket subscribed to the link,
//! neighbour (ARP and FDB) and IPv4 route groups. The poll loop drains it each cycle; when
//! nothing arrived for the VTEP since the last dump that found the kernel converged, and the
//! lease list is unchanged, the kernel cannot differ from the plan and the dumps are skipped.
//! Anything unclear counts as a change: a message that does not parse, a route without an
//! output interface, or a lost notification (ENOBUFS when the socket buffer overflowed).

use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::route::RouteAttribute;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{Socket, SocketAddr};

use super::NetlinkError;

/// rtnetlink multicast groups (linux/rtnetlink.h).
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_ROUTE: u32 = 7;

pub struct ChangeMonitor {
    socket: Socket,
}

impl ChangeMonitor {
    /// Subscribes in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Connect)?;
        socket
            .bind(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Connect)?;
        for group in [RTNLGRP_LINK, RTNLGRP_NEIGH, RTNLGRP_IPV4_ROUTE] {
            socket
                .add_membership(group)
                .map_err(NetlinkError::Connect)?;
        }
        socket
            .set_non_blocking(true)
            .map_err(NetlinkError::Connect)?;
        let _ = socket.set_rx_buf_sz(1 << 20);
        Ok(ChangeMonitor { socket })
    }

    /// Reads everything queued; true when any of it may concern interface `index`.
    pub fn drain(&mut self, index: u32) -> bool {
        let mut changed = false;
        let mut buf = Vec::with_capacity(1 << 16);
        loop {
            buf.clear();
            match self.socket.recv(&mut buf, 0) {
                Ok(0) => break,
                Ok(_) => changed |= concerns(&buf, index),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // ENOBUFS: notifications were dropped; anything may have changed.
                Err(_) => changed = true,
            }
        }
        changed
    }
}

/// True when a datagram of notifications may concern interface `index`.
fn concerns(mut data: &[u8], index: u32) -> bool {
    while data.len() >= 16 {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < 16 || len > data.len() {
            return true;
        }
        let msg = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[..len]) {
            Ok(m) => m,
            Err(_) => return true,
        };
        if message_concerns(&msg, index) {
            return true;
        }
        data = &data[((len + 3) & !3).min(data.len())..];
    }
    false
}

fn message_concerns(msg: &NetlinkMessage<RouteNetlinkMessage>, index: u32) -> bool {
    let NetlinkPayload::InnerMessage(inner) = &msg.payload else {
        return false;
    };
    match inner {
        RouteNetlinkMessage::NewLink(m) | RouteNetlinkMessage::DelLink(m) => {
            m.header.index == index
        }
        RouteNetlinkMessage::NewNeighbour(m) | RouteNetlinkMessage::DelNeighbour(m) => {
            m.header.ifindex == index
        }
        RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m) => {
            let oif = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            oif.is_none_or(|i| i == index)
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::NetlinkHeader;
    use rtnetlink::packet_route::neighbour::NeighbourMessage;
    use rtnetlink::packet_route::route::RouteMessage;

    fn datagram(msgs: Vec<RouteNetlinkMessage>) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            let mut nl =
                NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(m));
            nl.finalize();
            let start = out.len();
            out.resize(start + nl.buffer_len(), 0);
            nl.serialize(&mut out[start..]);
        }
        out
    }

    fn neigh(ifindex: u32) -> RouteNetlinkMessage {
        let mut m = NeighbourMessage::default();
        m.header.ifindex = ifindex;
        RouteNetlinkMessage::NewNeighbour(m)
    }

    fn route(oif: Option<u32>) -> RouteNetlinkMessage {
        let mut m = RouteMessage::default();
        if let Some(i) = oif {
            m.attributes.push(RouteAttribute::Oif(i));
        }
        RouteNetlinkMessage::DelRoute(m)
    }

    #[test]
    fn only_messages_about_the_vtep_count() {
        // A container veth's neighbour and route (silk-cni on a busy cell) do not count.
        assert!(!concerns(&datagram(vec![neigh(12), route(Some(12))]), 7));
        assert!(concerns(&datagram(vec![neigh(12), neigh(7)]), 7));
        assert!(concerns(&datagram(vec![route(Some(7))]), 7));
        assert!(concerns(&datagram(vec![route(None)]), 7));
        // Garbage is a change.
        assert!(concerns(&[0xff; 20], 7));
        assert!(!concerns(&[], 7));
    }
}
