//! netns tier: the rtnetlink backend against the real kernel, in a namespace of the test's
//! own. Creates `silk-vtep` over a veth underlay, applies plans, and checks the result both
//! through our own dump and through `ip -j`/`bridge -j` output.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::net::Ipv4Addr;

use serde_json::Value;
use silk_core::{HardwareAddr, Lease, NetworkSpec, OverlayNetworks};
use silk_dataplane::netlink::Netlink;
use silk_dataplane::vtep::{
    plan_vtep, route_metric, vtep_addresses, LocalVtep, RemovalPolicy, VtepSpec,
};
use silk_testkit::ipjson::{assert_silk_vtep, assert_vtep_v4, find, has_flag, items};
use silk_testkit::netns::{enter_root_test_netns, run_ok};

const OVERLAY: &str = "10.255.0.0/16";
const UNDERLAY: &str = "192.0.2.1";

fn json(argv: &[&str]) -> Value {
    serde_json::from_str(&run_ok(argv).unwrap()).unwrap()
}

fn lease(underlay: &str, subnet: &str) -> Lease {
    Lease::new(underlay.parse().unwrap(), subnet.parse().unwrap())
}

/// The start of every test here: root checked, a namespace of the test's own with an underlay
/// veth pair and a fresh `silk-vtep` on it.
async fn setup() -> (Netlink, u32, LocalVtep) {
    enter_root_test_netns();
    run_ok(&[
        "ip", "link", "add", "u0", "type", "veth", "peer", "name", "u1",
    ])
    .unwrap();
    run_ok(&["ip", "addr", "add", &format!("{UNDERLAY}/24"), "dev", "u0"]).unwrap();
    run_ok(&["ip", "link", "set", "u0", "up"]).unwrap();
    run_ok(&["ip", "link", "set", "u1", "up"]).unwrap();
    let nl = Netlink::connect().unwrap();
    let networks = OverlayNetworks::parse(&NetworkSpec::One(OVERLAY.into())).unwrap();
    let ip: Ipv4Addr = "10.255.7.0".parse().unwrap();
    let spec = VtepSpec {
        name: "silk-vtep".into(),
        vni: 1,
        port: 4789,
        local: UNDERLAY.parse().unwrap(),
        lower_ifindex: nl
            .index_of_address(UNDERLAY.parse().unwrap())
            .await
            .unwrap(),
        mac: HardwareAddr::for_overlay_ip(ip),
        mtu: None,
        addresses: vtep_addresses(ip, &networks).unwrap(),
    };
    let index = nl.create_vtep(&spec).await.unwrap();
    let local = LocalVtep {
        overlay_ip: ip,
        subnet: "10.255.7.0/24".parse().unwrap(),
        networks,
        single_ip_only: false,
    };
    (nl, index, local)
}

#[tokio::test]
#[ignore = "needs root: run via scripts/test"]
async fn vtep_is_created_with_upstream_attributes() {
    let (nl, _, _) = setup().await;
    let link = &json(&["ip", "-d", "-j", "link", "show", "silk-vtep"])[0];
    assert_silk_vtep(link, UNDERLAY, "u0");
    assert_eq!(link["address"], "ee:ee:0a:ff:07:00");
    assert_eq!(link["mtu"], 1450, "kernel default: lower MTU 1500 - 50");
    assert!(has_flag(&link["flags"], "UP"));
    let addrs = &json(&["ip", "-j", "addr", "show", "silk-vtep"])[0]["addr_info"];
    assert_vtep_v4(addrs, "10.255.7.0", 16);

    let found = nl.find_vtep("silk-vtep").await.unwrap().unwrap();
    assert_eq!(
        found.mac,
        Some(HardwareAddr::for_overlay_ip("10.255.7.0".parse().unwrap()))
    );
    assert_eq!(found.ipv4[0].to_string(), "10.255.7.0/16");
    assert_eq!(found.mtu, Some(1450));

    assert!(nl.delete_link("silk-vtep").await.unwrap());
    assert!(
        !nl.delete_link("silk-vtep").await.unwrap(),
        "second delete is harmless"
    );
    assert!(nl.find_vtep("silk-vtep").await.unwrap().is_none());
}

#[tokio::test]
#[ignore = "needs root: run via scripts/test"]
async fn plans_apply_converge_and_remove() {
    let (nl, index, local) = setup().await;
    let leases = vec![
        lease(UNDERLAY, "10.255.7.0/24"),
        lease("192.0.2.13", "10.255.8.0/24"),
        lease("192.0.2.14", "10.255.0.5/32"),
    ];
    let actual = nl.read_vtep_state(index).await.unwrap();
    assert_eq!(
        actual,
        Default::default(),
        "fresh VTEP has no entries of ours"
    );
    let plan = plan_vtep(&leases, &local, &actual, &RemovalPolicy::default());
    assert_eq!(plan.len(), 6);
    assert_eq!(nl.apply_vtep_plan(index, &plan).await.unwrap(), 6);

    let actual = nl.read_vtep_state(index).await.unwrap();
    assert!(
        plan_vtep(&leases, &local, &actual, &RemovalPolicy::default()).is_empty(),
        "{actual:?}"
    );
    let routes = json(&["ip", "-j", "route", "show", "dev", "silk-vtep"]);
    let r = find(&routes, "dst", "10.255.8.0/24");
    assert_eq!(r["gateway"], "10.255.8.0");
    assert_eq!(r["prefsrc"], "10.255.7.0");
    // route_metric: (0x0aff08 & 0xffff) + 1.
    assert_eq!(r["metric"], 0xff08 + 1, "{r}");
    let r = find(&routes, "dst", "10.255.0.5");
    assert_eq!(r["metric"], 6, "{r}");
    let neigh = json(&["ip", "-j", "neigh", "show", "dev", "silk-vtep"]);
    let n = find(&neigh, "dst", "10.255.8.0");
    assert_eq!(n["lladdr"], "ee:ee:0a:ff:08:00");
    assert_eq!(n["state"][0], "PERMANENT");
    let fdb = json(&["bridge", "-j", "fdb", "show", "dev", "silk-vtep"]);
    let f = find(&fdb, "mac", "ee:ee:0a:ff:08:00");
    assert_eq!(f["dst"], "192.0.2.13");
    assert_eq!(f["state"], "permanent");

    // The /32 lease leaves; its three entries go, the other lease's stay.
    let plan = plan_vtep(&leases[..2], &local, &actual, &RemovalPolicy::default());
    assert_eq!(
        (
            plan.remove_routes.len(),
            plan.remove_arp.len(),
            plan.remove_fdb.len()
        ),
        (1, 1, 1)
    );
    nl.apply_vtep_plan(index, &plan).await.unwrap();
    let after = nl.read_vtep_state(index).await.unwrap();
    assert_eq!(after.routes.len(), 1);
    assert_eq!(after.arp.len(), 1);
    assert_eq!(after.fdb.len(), 1);
    // Applying the same removals again (already gone) is harmless.
    nl.apply_vtep_plan(index, &plan).await.unwrap();
}

#[tokio::test]
#[ignore = "needs root: run via scripts/test"]
async fn single_ip_routes_are_onlink() {
    let (nl, index, mut local) = setup().await;
    local.single_ip_only = true;
    let leases = vec![lease("192.0.2.13", "10.255.8.0/24")];
    let plan = plan_vtep(
        &leases,
        &local,
        &Default::default(),
        &RemovalPolicy::default(),
    );
    nl.apply_vtep_plan(index, &plan).await.unwrap();
    let routes = json(&["ip", "-j", "route", "show", "dev", "silk-vtep"]);
    let r = find(&routes, "dst", "10.255.8.0/24");
    assert!(has_flag(&r["flags"], "onlink"), "{r}");
    let actual = nl.read_vtep_state(index).await.unwrap();
    assert!(actual.routes[0].onlink, "{actual:?}");
    let again = plan_vtep(&leases, &local, &actual, &RemovalPolicy::default());
    assert!(again.is_empty(), "{again:?}");
}

#[tokio::test]
#[ignore = "needs root: run via scripts/test"]
async fn failed_writes_are_reported_and_the_rest_of_the_phase_applies() {
    let (nl, index, local) = setup().await;
    let good = silk_dataplane::vtep::Route {
        dst: "10.255.8.0/24".parse().unwrap(),
        gateway: "10.255.8.0".parse().unwrap(),
        src: local.overlay_ip,
        onlink: false,
        metric: 9,
    };
    // A gateway no connected route covers: the kernel answers ENETUNREACH.
    let bad = silk_dataplane::vtep::Route {
        dst: "10.255.9.0/24".parse().unwrap(),
        gateway: "203.0.113.9".parse().unwrap(),
        src: local.overlay_ip,
        onlink: false,
        metric: 9,
    };
    let plan = silk_dataplane::vtep::VtepPlan {
        upsert_routes: vec![bad, good],
        ..Default::default()
    };
    let err = nl.apply_vtep_plan(index, &plan).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("1 of 2") && text.contains("10.255.9.0/24"),
        "{text}"
    );
    let actual = nl.read_vtep_state(index).await.unwrap();
    assert_eq!(
        actual.routes,
        vec![good],
        "the good route went in despite the failure"
    );
}

#[tokio::test]
#[ignore = "needs root: run via scripts/test"]
async fn metric_zero_routes_of_an_upstream_daemon_are_superseded() {
    let (nl, index, local) = setup().await;
    // What an upstream daemon leaves behind: the same route without a metric.
    run_ok(&[
        "ip",
        "route",
        "add",
        "10.255.8.0/24",
        "via",
        "10.255.8.0",
        "dev",
        "silk-vtep",
        "src",
        "10.255.7.0",
        "proto",
        "boot",
    ])
    .unwrap();
    let leases = vec![
        lease(UNDERLAY, "10.255.7.0/24"),
        lease("192.0.2.13", "10.255.8.0/24"),
    ];
    let actual = nl.read_vtep_state(index).await.unwrap();
    assert_eq!(actual.routes.len(), 1);
    assert_eq!(actual.routes[0].metric, 0);
    let plan = plan_vtep(&leases, &local, &actual, &RemovalPolicy::default());
    assert_eq!((plan.upsert_routes.len(), plan.remove_routes.len()), (1, 1));
    nl.apply_vtep_plan(index, &plan).await.unwrap();

    let routes = json(&["ip", "-j", "route", "show", "dev", "silk-vtep"]);
    let ours: Vec<&Value> = items(&routes)
        .iter()
        .filter(|r| r["dst"] == "10.255.8.0/24")
        .collect();
    assert_eq!(ours.len(), 1, "{routes}");
    let want = route_metric("10.255.8.0/24".parse().unwrap());
    assert_eq!(ours[0]["metric"], want, "{routes}");
    assert!(
        items(&routes)
            .iter()
            .any(|r| r["dst"] == "10.255.0.0/16" && r.get("gateway").is_none()),
        "the connected route stays: {routes}"
    );
    let actual = nl.read_vtep_state(index).await.unwrap();
    assert!(
        plan_vtep(&leases, &local, &actual, &RemovalPolicy::default()).is_empty(),
        "{actual:?}"
    );
}
