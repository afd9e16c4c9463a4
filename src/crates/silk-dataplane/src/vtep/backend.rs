//! The port where the daemon's converge meets the kernel: find the VTEP, tell whether the
//! kernel may have changed it since the last look, read its routes, neighbours and FDB entries,
//! apply a [`VtepPlan`]. [`NetlinkVtep`] is the real one (rtnetlink dumps and batches, change
//! notifications from a [`ChangeMonitor`]); [`RecordingVtep`] keeps the kernel state in memory,
//! applies plans to it and records every call, so the converge loop's decisions are
//! table-tested without root.

use std::future::Future;
use std::sync::Mutex;

use super::{VtepPlan, VtepState};
use crate::netlink::monitor::ChangeMonitor;
use crate::netlink::{Netlink, NetlinkError};

/// The kernel side of converging the VTEP.
pub trait VtepBackend: Send {
    /// The interface index of `name`, `None` when there is no such link.
    fn link_index(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<u32>, NetlinkError>> + Send;

    /// True when anything of interface `index` may have changed since the last call; true
    /// whenever the backend cannot tell. Consumes the notifications it read.
    fn kernel_changed(&mut self, index: u32) -> bool;

    /// One dump per object kind of what the VTEP holds.
    fn read_state(
        &self,
        index: u32,
    ) -> impl Future<Output = Result<VtepState, NetlinkError>> + Send;

    /// Applies `plan`; returns the number of operations applied.
    fn apply(
        &self,
        index: u32,
        plan: &VtepPlan,
    ) -> impl Future<Output = Result<usize, NetlinkError>> + Send;
}

// === impl NetlinkVtep ===

/// The real backend: rtnetlink, with change notifications when a monitor could be opened.
pub struct NetlinkVtep {
    nl: Netlink,
    monitor: Option<ChangeMonitor>,
}

impl NetlinkVtep {
    /// Without a monitor every [`VtepBackend::kernel_changed`] is true, so every cycle dumps
    /// (as upstream does).
    pub fn new(nl: Netlink, monitor: Option<ChangeMonitor>) -> Self {
        NetlinkVtep { nl, monitor }
    }
}

impl VtepBackend for NetlinkVtep {
    async fn link_index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        self.nl.link_index(name).await
    }

    fn kernel_changed(&mut self, index: u32) -> bool {
        self.monitor.as_mut().is_none_or(|m| m.drain(index))
    }

    async fn read_state(&self, index: u32) -> Result<VtepState, NetlinkError> {
        self.nl.read_vtep_state(index).await
    }

    async fn apply(&self, index: u32, plan: &VtepPlan) -> Result<usize, NetlinkError> {
        self.nl.apply_vtep_plan(index, plan).await
    }
}

// === impl RecordingVtep ===

/// One call a [`RecordingVtep`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VtepCall {
    LinkIndex,
    KernelChanged,
    Read,
    Apply(VtepPlan),
}

/// An in-memory kernel for tests: `index` is the VTEP's (`None`: no VTEP), `state` what it
/// holds (plans are applied to it, as the kernel would), `changed` the answer of the next
/// [`VtepBackend::kernel_changed`] (reset to false once asked), `fail_apply` makes the next
/// apply fail and leave the state alone.
#[derive(Debug, Default)]
pub struct RecordingVtep {
    pub index: Option<u32>,
    pub state: Mutex<VtepState>,
    pub changed: bool,
    pub fail_apply: Mutex<bool>,
    pub calls: Mutex<Vec<VtepCall>>,
}

impl RecordingVtep {
    pub fn new(index: u32, state: VtepState) -> Self {
        RecordingVtep {
            index: Some(index),
            state: Mutex::new(state),
            ..RecordingVtep::default()
        }
    }

    /// The calls so far, forgotten.
    pub fn take_calls(&self) -> Vec<VtepCall> {
        self.calls
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }

    /// The kernel state now.
    pub fn state(&self) -> VtepState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn record(&self, call: VtepCall) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(call);
        }
    }
}

/// `state` after `plan`, as the kernel applies it: replaces are keyed like the kernel keys
/// the objects (route: destination and metric; neighbour: IP; FDB: MAC), deletes of missing
/// entries are no-ops.
pub fn apply_to_state(state: &mut VtepState, plan: &VtepPlan) {
    state.routes.retain(|r| !plan.remove_routes.contains(r));
    state.arp.retain(|a| !plan.remove_arp.contains(a));
    state.fdb.retain(|f| !plan.remove_fdb.contains(f));
    for r in &plan.upsert_routes {
        state
            .routes
            .retain(|have| (have.dst, have.metric) != (r.dst, r.metric));
        state.routes.push(*r);
    }
    for a in &plan.upsert_arp {
        state.arp.retain(|have| have.ip != a.ip);
        state.arp.push(*a);
    }
    for f in &plan.upsert_fdb {
        state.fdb.retain(|have| have.mac != f.mac);
        state.fdb.push(*f);
    }
    state.routes.sort();
    state.arp.sort();
    state.fdb.sort();
}

impl VtepBackend for RecordingVtep {
    async fn link_index(&self, _name: &str) -> Result<Option<u32>, NetlinkError> {
        self.record(VtepCall::LinkIndex);
        Ok(self.index)
    }

    fn kernel_changed(&mut self, _index: u32) -> bool {
        self.record(VtepCall::KernelChanged);
        std::mem::take(&mut self.changed)
    }

    async fn read_state(&self, _index: u32) -> Result<VtepState, NetlinkError> {
        self.record(VtepCall::Read);
        Ok(self.state())
    }

    async fn apply(&self, _index: u32, plan: &VtepPlan) -> Result<usize, NetlinkError> {
        self.record(VtepCall::Apply(plan.clone()));
        let fail = self
            .fail_apply
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or(false);
        if fail {
            return Err(NetlinkError::Request {
                what: "apply vtep plan".into(),
                detail: "injected failure".into(),
            });
        }
        if let Ok(mut s) = self.state.lock() {
            apply_to_state(&mut s, plan);
        }
        Ok(plan.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vtep::{ArpEntry, FdbEntry, Route};

    #[test]
    fn plans_apply_to_the_in_memory_kernel_by_kernel_keys() {
        let route = |dst: &str, gw: &str, metric| Route {
            dst: dst.parse().unwrap(),
            gateway: gw.parse().unwrap(),
            src: "10.255.1.0".parse().unwrap(),
            onlink: false,
            metric,
        };
        let arp = |ip: &str, mac: &str| ArpEntry {
            ip: ip.parse().unwrap(),
            mac: mac.parse().unwrap(),
        };
        let fdb = |mac: &str, dst: &str| FdbEntry {
            mac: mac.parse().unwrap(),
            dst: dst.parse().unwrap(),
        };
        let mut state = VtepState {
            routes: vec![
                route("10.255.2.0/24", "10.255.2.0", 0),
                route("10.255.3.0/24", "10.255.3.0", 4),
            ],
            arp: vec![arp("10.255.3.0", "ee:ee:0a:ff:03:00")],
            fdb: vec![fdb("ee:ee:0a:ff:03:00", "10.0.0.3")],
        };
        let plan = VtepPlan {
            upsert_routes: vec![route("10.255.2.0/24", "10.255.2.0", 3)],
            upsert_arp: vec![arp("10.255.2.0", "ee:ee:0a:ff:02:00")],
            upsert_fdb: vec![fdb("ee:ee:0a:ff:03:00", "10.0.0.33")],
            remove_routes: vec![route("10.255.3.0/24", "10.255.3.0", 4)],
            remove_arp: vec![arp("10.255.3.0", "ee:ee:0a:ff:03:00")],
            remove_fdb: vec![],
        };
        apply_to_state(&mut state, &plan);
        assert_eq!(
            state,
            VtepState {
                // Another metric is another kernel route: both stay.
                routes: vec![
                    route("10.255.2.0/24", "10.255.2.0", 0),
                    route("10.255.2.0/24", "10.255.2.0", 3)
                ],
                arp: vec![arp("10.255.2.0", "ee:ee:0a:ff:02:00")],
                fdb: vec![fdb("ee:ee:0a:ff:03:00", "10.0.0.33")],
            }
        );
    }
}
