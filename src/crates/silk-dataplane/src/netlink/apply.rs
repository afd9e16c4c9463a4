//! Applying a [`VtepPlan`]: each phase's operations are pipelined on the one socket (they
//! touch distinct kernel keys), phases run in order, and the first failing phase stops the
//! list so later phases never run on a half-applied earlier one.

use futures::StreamExt;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, NetlinkError, DELETE, REPLACE};
use crate::vtep::{ArpEntry, FdbEntry, NetlinkOp, Route, VtepPlan};

/// Requests in flight at once inside one phase.
const PIPELINE: usize = 64;

impl Netlink {
    /// Applies `plan` to the device `index`. Returns the number of operations applied.
    pub async fn apply_vtep_plan(
        &self,
        index: u32,
        plan: &VtepPlan,
    ) -> Result<usize, NetlinkError> {
        let total = plan.len();
        for phase in plan.phases() {
            let results: Vec<Result<(), NetlinkError>> = futures::stream::iter(phase)
                .map(|op| self.apply_op(index, op))
                .buffer_unordered(PIPELINE)
                .collect()
                .await;
            let mut errors = results.into_iter().filter_map(Result::err);
            if let Some(first) = errors.next() {
                return Err(NetlinkError::Apply {
                    failed: 1 + errors.count(),
                    total,
                    first: Box::new(first),
                });
            }
        }
        Ok(total)
    }

    async fn apply_op(&self, index: u32, op: NetlinkOp) -> Result<(), NetlinkError> {
        match op {
            NetlinkOp::ReplaceArp(a) => {
                let msg = RouteNetlinkMessage::NewNeighbour(arp_message(index, a));
                self.request(
                    msg,
                    REPLACE,
                    || format!("set neighbour {} lladdr {}", a.ip, a.mac),
                    false,
                )
                .await
            }
            NetlinkOp::DeleteArp(a) => {
                let msg = RouteNetlinkMessage::DelNeighbour(arp_message(index, a));
                self.request(msg, DELETE, || format!("delete neighbour {}", a.ip), true)
                    .await
            }
            NetlinkOp::ReplaceFdb(f) => {
                let msg = RouteNetlinkMessage::NewNeighbour(fdb_message(index, f));
                self.request(
                    msg,
                    REPLACE,
                    || format!("set fdb {} dst {}", f.mac, f.dst),
                    false,
                )
                .await
            }
            NetlinkOp::DeleteFdb(f) => {
                let msg = RouteNetlinkMessage::DelNeighbour(fdb_message(index, f));
                self.request(
                    msg,
                    DELETE,
                    || format!("delete fdb {} dst {}", f.mac, f.dst),
                    true,
                )
                .await
            }
            NetlinkOp::ReplaceRoute(r) => {
                let msg = RouteNetlinkMessage::NewRoute(route_message(index, r));
                self.request(
                    msg,
                    REPLACE,
                    || format!("replace route {} via {}", r.dst, r.gateway),
                    false,
                )
                .await
            }
            NetlinkOp::DeleteRoute(r) => {
                let msg = RouteNetlinkMessage::DelRoute(route_message(index, r));
                self.request(
                    msg,
                    DELETE,
                    || format!("delete route {} via {}", r.dst, r.gateway),
                    true,
                )
                .await
            }
        }
    }
}

fn arp_message(index: u32, a: ArpEntry) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            a.ip,
        )));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(a.mac.0.to_vec()));
    m
}

/// `bridge fdb replace M dev silk-vtep dst U self permanent`.
fn fdb_message(index: u32, f: FdbEntry) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(f.mac.0.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            f.dst,
        )));
    m
}

/// `ip route replace S via G dev silk-vtep src <src> [onlink]`, main table, proto boot (the
/// Go netlink library's default, which upstream daemons install).
fn route_message(index: u32, r: Route) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = r.dst.prefix();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    if r.onlink {
        m.header.flags = RouteFlags::Onlink;
    }
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(
            r.dst.network(),
        )));
    m.attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(r.gateway)));
    if !r.src.is_unspecified() {
        m.attributes
            .push(RouteAttribute::PrefSource(RouteAddress::Inet(r.src)));
    }
    m.attributes.push(RouteAttribute::Oif(index));
    m
}
