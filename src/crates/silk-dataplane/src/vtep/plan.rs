//! The VTEP planner: from the controller's lease list and the VTEP's actual state to the
//! ordered list of netlink operations that converges it. Pure and deterministic: sorted
//! output, no sockets, no clock.
//!
//! Writes come first (ARP neighbours, then FDB entries, then routes, so a route's gateway
//! resolves as soon as the route exists), removals after, in reverse (routes, FDB, ARP), as
//! upstream programs first and deletes after. Entries already equal to the desired ones are
//! not written again, so a cycle where nothing changed yields an empty plan.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use silk_core::{HardwareAddr, Lease};

use super::{route_metric, ArpEntry, FdbEntry, LocalVtep, Route, VtepState};

/// The entries every remote lease should have on the VTEP, keyed the way the kernel keys
/// them (route by destination, ARP by IP, FDB by MAC).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredVtep {
    pub routes: BTreeMap<Ipv4Network, Route>,
    pub arp: BTreeMap<Ipv4Addr, ArpEntry>,
    pub fdb: BTreeMap<HardwareAddr, FdbEntry>,
    /// Leases outside every overlay CIDR (upstream logs `non-routable-lease-count`).
    pub non_routable: usize,
    /// Leases whose fields do not parse (skipped; upstream would abort the whole cycle).
    pub invalid: usize,
}

/// Which stale entries a plan may remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemovalPolicy {
    /// Remove nothing (the list is not trusted).
    pub suppress_all: bool,
    /// Remote VTEP IPs (route gateways / ARP IPs, and the MACs derived from them) whose
    /// entries stay although their lease is missing from this list.
    pub keep: BTreeSet<Ipv4Addr>,
}

/// One netlink write on the VTEP device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetlinkOp {
    ReplaceArp(ArpEntry),
    ReplaceFdb(FdbEntry),
    ReplaceRoute(Route),
    DeleteRoute(Route),
    DeleteFdb(FdbEntry),
    DeleteArp(ArpEntry),
}

/// The writes that converge the VTEP, grouped by kind in apply order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VtepPlan {
    pub upsert_arp: Vec<ArpEntry>,
    pub upsert_fdb: Vec<FdbEntry>,
    pub upsert_routes: Vec<Route>,
    pub remove_routes: Vec<Route>,
    pub remove_fdb: Vec<FdbEntry>,
    pub remove_arp: Vec<ArpEntry>,
}

impl VtepPlan {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.upsert_arp.len()
            + self.upsert_fdb.len()
            + self.upsert_routes.len()
            + self.remove_routes.len()
            + self.remove_fdb.len()
            + self.remove_arp.len()
    }

    /// The operations as phases, in apply order. Operations inside one phase are independent
    /// of each other (distinct kernel keys), so a backend may pipeline them; phases must run
    /// one after the other.
    pub fn phases(&self) -> Vec<Vec<NetlinkOp>> {
        let phases = vec![
            self.upsert_arp
                .iter()
                .copied()
                .map(NetlinkOp::ReplaceArp)
                .collect(),
            self.upsert_fdb
                .iter()
                .copied()
                .map(NetlinkOp::ReplaceFdb)
                .collect(),
            self.upsert_routes
                .iter()
                .copied()
                .map(NetlinkOp::ReplaceRoute)
                .collect(),
            self.remove_routes
                .iter()
                .copied()
                .map(NetlinkOp::DeleteRoute)
                .collect(),
            self.remove_fdb
                .iter()
                .copied()
                .map(NetlinkOp::DeleteFdb)
                .collect(),
            self.remove_arp
                .iter()
                .copied()
                .map(NetlinkOp::DeleteArp)
                .collect(),
        ];
        phases
            .into_iter()
            .filter(|p: &Vec<NetlinkOp>| !p.is_empty())
            .collect()
    }
}

/// The desired entries for `leases` (contract §5.7): every lease except our own and those
/// outside the overlay networks gets `S via G src <src>`, `G lladdr M permanent` and
/// `M dst U self permanent`, where G is the lease's first IP, S its masked subnet, M its MAC
/// and U its underlay IP. The route carries the metric [`route_metric`]`(S)`. The route source is our lease IP when the destination's CIDR holds
/// our lease, else that CIDR's network address (upstream-delta §3.1).
pub fn desired_from_leases(leases: &[Lease], local: &LocalVtep) -> DesiredVtep {
    let mut d = DesiredVtep::default();
    let local_cidr = local.networks.which_contains(local.overlay_ip);
    for lease in leases {
        let (Ok(subnet), Ok(underlay), Ok(mac)) =
            (lease.subnet(), lease.underlay(), lease.hardware_addr())
        else {
            d.invalid += 1;
            continue;
        };
        let gateway = subnet.ip();
        let dst = Ipv4Network::new(subnet.network(), subnet.prefix()).unwrap_or(subnet);
        if dst == local.subnet {
            continue;
        }
        let Some(cidr) = local.networks.which_contains(gateway) else {
            d.non_routable += 1;
            continue;
        };
        let src = if Some(cidr) == local_cidr {
            local.overlay_ip
        } else {
            cidr.network()
        };
        let route = Route {
            dst,
            gateway,
            src,
            onlink: local.single_ip_only,
            metric: route_metric(dst),
        };
        d.routes.insert(dst, route);
        d.arp.insert(gateway, ArpEntry { ip: gateway, mac });
        d.fdb.insert(mac, FdbEntry { mac, dst: underlay });
    }
    d
}

/// Plans the writes that turn `actual` into the state `leases` ask for. Removal candidates are
/// entries on the VTEP that no lease asks for: routes whose gateway lies in an overlay
/// network (the kernel's connected routes have none and are never touched), permanent ARP
/// and FDB entries. `removal` may hold some or all of them back.
///
/// A route to a desired destination with another metric than the desired one (say metric 0,
/// left by an upstream daemon before an in-place restart) is a separate kernel route that the
/// replace does not overwrite: it is removed as a stale duplicate, whatever `removal.keep`
/// says, since its lease is in the list (only `suppress_all` holds it back).
pub fn plan_vtep(
    leases: &[Lease],
    local: &LocalVtep,
    actual: &VtepState,
    removal: &RemovalPolicy,
) -> VtepPlan {
    plan_desired(&desired_from_leases(leases, local), local, actual, removal)
}

/// [`plan_vtep`] for an already computed [`DesiredVtep`].
pub fn plan_desired(
    desired: &DesiredVtep,
    local: &LocalVtep,
    actual: &VtepState,
    removal: &RemovalPolicy,
) -> VtepPlan {
    let have_routes: BTreeSet<&Route> = actual.routes.iter().collect();
    let have_arp: BTreeSet<&ArpEntry> = actual.arp.iter().collect();
    let have_fdb: BTreeSet<&FdbEntry> = actual.fdb.iter().collect();
    let kept_macs: BTreeSet<HardwareAddr> = removal
        .keep
        .iter()
        .map(|ip| HardwareAddr::for_overlay_ip(*ip))
        .collect();

    let mut plan = VtepPlan {
        upsert_arp: desired
            .arp
            .values()
            .filter(|e| !have_arp.contains(e))
            .copied()
            .collect(),
        upsert_fdb: desired
            .fdb
            .values()
            .filter(|e| !have_fdb.contains(e))
            .copied()
            .collect(),
        upsert_routes: desired
            .routes
            .values()
            .filter(|r| !have_routes.contains(r))
            .copied()
            .collect(),
        ..VtepPlan::default()
    };
    if removal.suppress_all {
        return plan;
    }
    let mut remove_routes: Vec<Route> = actual
        .routes
        .iter()
        .filter(|r| local.networks.contains(r.gateway))
        .filter(|r| match desired.routes.get(&r.dst) {
            // Same metric: the same kernel route, which the replace above overwrites.
            Some(want) => want.metric != r.metric,
            None => !removal.keep.contains(&r.gateway),
        })
        .copied()
        .collect();
    let mut remove_arp: Vec<ArpEntry> = actual
        .arp
        .iter()
        .filter(|a| !desired.arp.contains_key(&a.ip) && !removal.keep.contains(&a.ip))
        .copied()
        .collect();
    let mut remove_fdb: Vec<FdbEntry> = actual
        .fdb
        .iter()
        .filter(|f| !desired.fdb.contains_key(&f.mac) && !kept_macs.contains(&f.mac))
        .copied()
        .collect();
    remove_routes.sort();
    remove_routes.dedup();
    remove_arp.sort();
    remove_arp.dedup();
    remove_fdb.sort();
    remove_fdb.dedup();
    plan.remove_routes = remove_routes;
    plan.remove_arp = remove_arp;
    plan.remove_fdb = remove_fdb;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use silk_core::{NetworkSpec, OverlayNetworks};

    const OVERLAY: &str = "10.255.0.0/16";

    fn local(single: bool) -> LocalVtep {
        LocalVtep {
            overlay_ip: "10.255.7.0".parse().unwrap(),
            subnet: "10.255.7.0/24".parse().unwrap(),
            networks: OverlayNetworks::parse(&NetworkSpec::One(OVERLAY.into())).unwrap(),
            single_ip_only: single,
        }
    }

    fn lease(underlay: &str, subnet: &str) -> Lease {
        Lease::new(underlay.parse().unwrap(), subnet.parse().unwrap())
    }

    fn leases() -> Vec<Lease> {
        vec![
            lease("10.0.16.12", "10.255.7.0/24"),
            lease("10.0.16.13", "10.255.8.0/24"),
            lease("10.0.16.14", "10.255.0.5/32"),
            lease("10.0.16.15", "10.99.1.0/24"),
        ]
    }

    fn route(dst: &str, gw: &str) -> Route {
        let dst: Ipv4Network = dst.parse().unwrap();
        Route {
            dst,
            gateway: gw.parse().unwrap(),
            src: "10.255.7.0".parse().unwrap(),
            onlink: false,
            metric: route_metric(dst),
        }
    }

    fn actual_for(leases: &[Lease]) -> VtepState {
        let d = desired_from_leases(leases, &local(false));
        VtepState {
            routes: d.routes.values().copied().collect(),
            arp: d.arp.values().copied().collect(),
            fdb: d.fdb.values().copied().collect(),
        }
    }

    #[test]
    fn worked_example_from_contract() {
        let d = desired_from_leases(&leases(), &local(false));
        assert_eq!(d.non_routable, 1);
        let routes: Vec<Route> = d.routes.values().copied().collect();
        assert_eq!(
            routes,
            vec![
                route("10.255.0.5/32", "10.255.0.5"),
                route("10.255.8.0/24", "10.255.8.0")
            ]
        );
        let fdb = d.fdb[&"ee:ee:0a:ff:08:00".parse().unwrap()];
        assert_eq!(fdb.dst, "10.0.16.13".parse::<Ipv4Addr>().unwrap());
        let arp = d.arp[&"10.255.8.0".parse().unwrap()];
        assert_eq!(arp.mac.to_string(), "ee:ee:0a:ff:08:00");
    }

    #[test]
    fn single_ip_routes_are_onlink_and_src_follows_cidr() {
        let mut l = local(true);
        l.networks = OverlayNetworks::parse(&NetworkSpec::Many(vec![
            OVERLAY.into(),
            "10.240.0.0/20".into(),
        ]))
        .unwrap();
        let d = desired_from_leases(&[lease("10.0.16.20", "10.240.3.0/24")], &l);
        let r = d.routes.values().next().unwrap();
        assert!(r.onlink);
        assert_eq!(r.src, "10.240.0.0".parse::<Ipv4Addr>().unwrap());
    }

    #[test]
    fn empty_actual_gets_every_entry_in_phase_order() {
        let plan = plan_vtep(
            &leases(),
            &local(false),
            &VtepState::default(),
            &RemovalPolicy::default(),
        );
        assert_eq!(plan.len(), 6);
        let phases = plan.phases();
        assert!(matches!(phases[0][0], NetlinkOp::ReplaceArp(_)));
        assert!(matches!(phases[1][0], NetlinkOp::ReplaceFdb(_)));
        assert!(matches!(phases[2][0], NetlinkOp::ReplaceRoute(_)));
    }

    #[test]
    fn converged_state_plans_nothing() {
        let plan = plan_vtep(
            &leases(),
            &local(false),
            &actual_for(&leases()),
            &RemovalPolicy::default(),
        );
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn vanished_lease_is_removed_in_reverse_order() {
        let actual = actual_for(&leases());
        let fewer: Vec<Lease> = leases()
            .into_iter()
            .filter(|l| l.underlay_ip != "10.0.16.13")
            .collect();
        let plan = plan_vtep(&fewer, &local(false), &actual, &RemovalPolicy::default());
        assert_eq!(
            plan.remove_routes,
            vec![route("10.255.8.0/24", "10.255.8.0")]
        );
        assert_eq!(plan.remove_arp.len(), 1);
        assert_eq!(plan.remove_fdb.len(), 1);
        assert!(plan.upsert_routes.is_empty());
        let phases = plan.phases();
        assert!(matches!(phases[0][0], NetlinkOp::DeleteRoute(_)));
        assert!(matches!(phases[2][0], NetlinkOp::DeleteArp(_)));
    }

    #[test]
    fn removal_policy_holds_entries_back() {
        let actual = actual_for(&leases());
        let none = plan_vtep(
            &[],
            &local(false),
            &actual,
            &RemovalPolicy {
                suppress_all: true,
                ..Default::default()
            },
        );
        assert!(none.is_empty());
        let keep = RemovalPolicy {
            suppress_all: false,
            keep: ["10.255.8.0".parse().unwrap()].into_iter().collect(),
        };
        let plan = plan_vtep(&[], &local(false), &actual, &keep);
        assert_eq!(
            plan.remove_routes,
            vec![route("10.255.0.5/32", "10.255.0.5")]
        );
        assert_eq!(plan.remove_fdb.len(), 1);
        assert_eq!(plan.remove_arp.len(), 1);
    }

    #[test]
    fn changed_entries_are_replaced_and_foreign_routes_untouched() {
        let mut actual = actual_for(&leases());
        actual.fdb[0].dst = "10.0.16.99".parse().unwrap();
        actual.routes.push(route("10.1.0.0/16", "192.0.2.1"));
        let plan = plan_vtep(&leases(), &local(false), &actual, &RemovalPolicy::default());
        assert_eq!(plan.upsert_fdb.len(), 1);
        assert!(plan.remove_fdb.is_empty(), "replace, not delete: {plan:?}");
        assert!(
            plan.remove_routes.is_empty(),
            "gateway outside the overlay is not ours"
        );
    }

    #[test]
    fn routes_carry_the_destination_metric() {
        let d = desired_from_leases(&leases(), &local(false));
        let metrics: Vec<u32> = d.routes.values().map(|r| r.metric).collect();
        // 10.255.0.5/32 -> 0x0005 + 1; 10.255.8.0/24 -> (0x0aff08 & 0xffff) + 1.
        assert_eq!(metrics, vec![6, 0xff08 + 1]);
    }

    #[test]
    fn metric_zero_duplicates_are_replaced_then_removed() {
        // An upstream daemon's routes (no metric) on a VTEP kept across an in-place restart.
        let mut actual = actual_for(&leases());
        let mut stale: Vec<Route> = actual.routes.clone();
        for r in &mut stale {
            r.metric = 0;
        }
        actual.routes = stale.clone();
        let plan = plan_vtep(&leases(), &local(false), &actual, &RemovalPolicy::default());
        assert_eq!(plan.upsert_routes.len(), 2);
        assert!(plan.upsert_routes.iter().all(|r| r.metric > 0));
        assert_eq!(plan.remove_routes, stale);
        let phases = plan.phases();
        let upsert = phases
            .iter()
            .position(|p| matches!(p[0], NetlinkOp::ReplaceRoute(_)));
        let delete = phases
            .iter()
            .position(|p| matches!(p[0], NetlinkOp::DeleteRoute(_)));
        assert!(upsert < delete, "new route first, stale one after");

        // Both present (mid-upgrade): only the stale ones go, even if their gateway is kept.
        actual.routes.extend(actual_for(&leases()).routes);
        let keep = RemovalPolicy {
            suppress_all: false,
            keep: stale.iter().map(|r| r.gateway).collect(),
        };
        let plan = plan_vtep(&leases(), &local(false), &actual, &keep);
        assert!(plan.upsert_routes.is_empty(), "{plan:?}");
        assert_eq!(plan.remove_routes, stale);

        // Nothing trusted: nothing removed.
        let frozen = RemovalPolicy {
            suppress_all: true,
            ..Default::default()
        };
        let plan = plan_vtep(&leases(), &local(false), &actual, &frozen);
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn same_metric_route_with_other_fields_is_replaced_not_deleted() {
        let mut actual = actual_for(&leases());
        actual.routes[0].onlink = true;
        let plan = plan_vtep(&leases(), &local(false), &actual, &RemovalPolicy::default());
        assert_eq!(plan.upsert_routes.len(), 1);
        assert!(
            plan.remove_routes.is_empty(),
            "a delete would hit the replaced route: {plan:?}"
        );
    }

    #[test]
    fn invalid_leases_are_skipped() {
        let bad = Lease {
            underlay_ip: "nope".into(),
            overlay_subnet: "10.255.9.0/24".into(),
            overlay_hardware_addr: "ee:ee:0a:ff:09:00".into(),
        };
        let d = desired_from_leases(&[bad], &local(false));
        assert_eq!(d.invalid, 1);
        assert!(d.routes.is_empty());
    }
}
