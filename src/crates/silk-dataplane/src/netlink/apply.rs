//! Applying a [`VtepPlan`]: each phase's operations go out as one batch (they touch distinct
//! kernel keys), phases run in order, and the first failing phase stops the list so later
//! phases never run on a half-applied earlier one.

use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::batch::BatchOp;
use super::{Netlink, NetlinkError, DELETE, REPLACE};
use crate::vtep::{ArpEntry, FdbEntry, NetlinkOp, Route, VtepPlan};

/// Rounds of re-sending operations that failed with EINTR/EAGAIN/EBUSY.
const RETRIES: usize = 5;

impl Netlink {
    /// Applies `plan` to the device `index`, phase by phase, each phase as one batch on the
    /// blocking socket (see [`super::batch`]). Returns the number of operations applied.
    pub async fn apply_vtep_plan(
        &self,
        index: u32,
        plan: &VtepPlan,
    ) -> Result<usize, NetlinkError> {
        let total = plan.len();
        for phase in plan.phases() {
            let mut ops: Vec<BatchOp> = phase.into_iter().map(|op| batch_op(index, op)).collect();
            let mut errors = Vec::new();
            for attempt in 0..=RETRIES {
                let results = {
                    let mut socket = self.batch.lock().unwrap_or_else(|p| p.into_inner());
                    socket.run(&ops)
                };
                let mut retry = Vec::new();
                for (op, r) in ops.into_iter().zip(results) {
                    match r {
                        Err(e) if is_transient(&e) && attempt < RETRIES => retry.push(op),
                        Err(e) => errors.push(e),
                        Ok(()) => {}
                    }
                }
                if retry.is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10 << attempt)).await;
                ops = retry;
            }
            let failed = errors.len();
            if let Some(first) = errors.into_iter().next() {
                return Err(NetlinkError::Apply {
                    failed,
                    total,
                    first: Box::new(first),
                });
            }
        }
        Ok(total)
    }
}

fn is_transient(e: &NetlinkError) -> bool {
    use nix::libc::{EAGAIN, EBUSY, EINTR};
    matches!(e.errno(), Some(EINTR | EAGAIN | EBUSY))
}

fn batch_op(index: u32, op: NetlinkOp) -> BatchOp {
    let (msg, flags, accept_missing, what) = match op {
        NetlinkOp::ReplaceArp(a) => (
            RouteNetlinkMessage::NewNeighbour(arp_message(index, a)),
            REPLACE,
            false,
            format!("set neighbour {} lladdr {}", a.ip, a.mac),
        ),
        NetlinkOp::DeleteArp(a) => (
            RouteNetlinkMessage::DelNeighbour(arp_message(index, a)),
            DELETE,
            true,
            format!("delete neighbour {}", a.ip),
        ),
        NetlinkOp::ReplaceFdb(f) => (
            RouteNetlinkMessage::NewNeighbour(fdb_message(index, f)),
            REPLACE,
            false,
            format!("set fdb {} dst {}", f.mac, f.dst),
        ),
        NetlinkOp::DeleteFdb(f) => (
            RouteNetlinkMessage::DelNeighbour(fdb_message(index, f)),
            DELETE,
            true,
            format!("delete fdb {} dst {}", f.mac, f.dst),
        ),
        NetlinkOp::ReplaceRoute(r) => (
            RouteNetlinkMessage::NewRoute(route_message(index, r)),
            REPLACE,
            false,
            format!(
                "replace route {} via {} metric {}",
                r.dst, r.gateway, r.metric
            ),
        ),
        NetlinkOp::DeleteRoute(r) => (
            RouteNetlinkMessage::DelRoute(route_message(index, r)),
            DELETE,
            true,
            format!(
                "delete route {} via {} metric {}",
                r.dst, r.gateway, r.metric
            ),
        ),
    };
    BatchOp {
        msg,
        flags,
        accept_missing,
        what,
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

/// `ip route replace S via G dev silk-vtep src <src> metric <metric> [onlink]`, main table,
/// proto boot (the Go netlink library's default, which upstream daemons install).
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
    // Always sent. A delete with priority 0 matches any priority, but the kernel keeps a
    // destination's routes sorted by priority, so it hits the priority-0 route first.
    m.attributes.push(RouteAttribute::Priority(r.metric));
    m
}
