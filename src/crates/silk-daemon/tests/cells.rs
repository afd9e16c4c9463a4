//! netns tier: real silk-controller, real silk-daemons, real PostgreSQL, real kernel, in the
//! multi-cell test bed (silk_lab::fabric). Kernel state is checked by parsing `ip -j` /
//! `bridge -j` output inside the cell namespaces.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::time::{Duration, Instant};

use serde_json::Value;
use silk_lab::fabric::render::Timing;
use silk_lab::fabric::{Binaries, Options, Testbed, OVERLAY};
use silk_testkit::ipjson::{assert_silk_vtep, assert_vtep_v4, items};

async fn bed(cells: usize, timing: Timing) -> Testbed {
    silk_testkit::require_root_and_pg();
    let bins = Binaries::beside(env!("CARGO_BIN_EXE_silk-daemon")).unwrap();
    let mut bed = Testbed::build(
        bins,
        Options {
            cells,
            timing,
            log_level: "debug".into(),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    bed.start_controller().unwrap();
    bed.start_daemons().unwrap();
    bed
}

fn json(bed: &Testbed, i: usize, argv: &[&str]) -> Value {
    serde_json::from_str(&bed.in_cell(i, argv).unwrap()).unwrap()
}

/// What a cell's VTEP carries for remote cells: sorted (dst, gateway) routes, (ip, mac)
/// permanent neighbours and (mac, dst) FDB entries.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Entries {
    routes: Vec<(String, String)>,
    neigh: Vec<(String, String)>,
    fdb: Vec<(String, String)>,
}

fn entries(bed: &Testbed, i: usize) -> Entries {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut routes: Vec<(String, String)> = items(&json(
        bed,
        i,
        &["ip", "-j", "route", "show", "dev", "silk-vtep"],
    ))
    .iter()
    .filter(|r| r.get("gateway").is_some())
    .map(|r| (s(&r["dst"]), s(&r["gateway"])))
    .collect();
    let mut neigh: Vec<(String, String)> = items(&json(
        bed,
        i,
        &["ip", "-j", "neigh", "show", "dev", "silk-vtep"],
    ))
    .iter()
    .filter(|n| {
        n["state"]
            .as_array()
            .is_some_and(|st| st.iter().any(|x| x == "PERMANENT"))
    })
    .map(|n| (s(&n["dst"]), s(&n["lladdr"])))
    .collect();
    let mut fdb: Vec<(String, String)> = items(&json(
        bed,
        i,
        &["bridge", "-j", "fdb", "show", "dev", "silk-vtep"],
    ))
    .iter()
    .filter(|f| f.get("dst").is_some())
    .map(|f| (s(&f["mac"]), s(&f["dst"])))
    .collect();
    routes.sort();
    neigh.sort();
    fdb.sort();
    Entries { routes, neigh, fdb }
}

/// The entries cell `i` should have, from the lease table.
fn expected(leases: &[(String, String, String)], own_underlay: &str) -> Entries {
    let mut e = Entries {
        routes: vec![],
        neigh: vec![],
        fdb: vec![],
    };
    for (underlay, subnet, mac) in leases.iter().filter(|l| l.0 != own_underlay) {
        let gw = subnet.split('/').next().unwrap().to_string();
        e.routes.push((subnet.clone(), gw.clone()));
        e.neigh.push((gw, mac.clone()));
        e.fdb.push((mac.clone(), underlay.clone()));
    }
    e.routes.sort();
    e.neigh.sort();
    e.fdb.sort();
    e
}

/// Polls `f` every 250 ms until it returns true or `timeout` passes.
fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

async fn wait_converged(bed: &Testbed, n: usize) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leases = bed.lease_table().await;
        let ok = leases.len() == n
            && (0..bed.cells.len())
                .filter(|&i| {
                    leases
                        .iter()
                        .any(|l| l.0 == bed.cells[i].underlay_ip.to_string())
                })
                .all(|i| {
                    entries(bed, i) == expected(&leases, &bed.cells[i].underlay_ip.to_string())
                });
        if ok {
            return leases;
        }
        assert!(
            Instant::now() < deadline,
            "cells did not converge; leases {leases:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn lease_of(
    leases: &[(String, String, String)],
    bed: &Testbed,
    i: usize,
) -> (String, String, String) {
    let ip = bed.cells[i].underlay_ip.to_string();
    leases.iter().find(|l| l.0 == ip).unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: run via scripts/test"]
async fn three_cells_program_vteps_and_ping_across_vxlan() {
    let bed = bed(3, Timing::default()).await;
    let leases = wait_converged(&bed, 3).await;
    for i in 0..3 {
        let (underlay, subnet, mac) = lease_of(&leases, &bed, i);
        let link = &json(&bed, i, &["ip", "-d", "-j", "link", "show", "silk-vtep"])[0];
        assert_silk_vtep(link, &underlay, "eth0");
        assert_eq!(link["address"], mac.as_str());
        assert_eq!(link["mtu"], 1450);
        let addrs = &json(&bed, i, &["ip", "-j", "addr", "show", "silk-vtep"])[0]["addr_info"];
        assert_vtep_v4(
            addrs,
            subnet.split('/').next().unwrap(),
            OVERLAY.split('/').nth(1).unwrap().parse().unwrap(),
        );
        let e = entries(&bed, i);
        assert_eq!(e.routes.len(), 2, "one route per other cell: {e:?}");
        // local API: any path, compact body
        let body = bed
            .in_cell(
                i,
                &[
                    "curl",
                    "-sf",
                    "-m",
                    "2",
                    "-X",
                    "POST",
                    "-H",
                    "Authorization: Basic Og==",
                    "http://127.0.0.1:23954/any/path",
                ],
            )
            .unwrap();
        assert_eq!(
            body,
            format!(r#"{{"overlay_subnet":"{subnet}","mtu":1450}}"#)
        );
    }
    // Overlay traffic: cell 0's VTEP address pings cell 1's and cell 2's across VXLAN.
    let a = lease_of(&leases, &bed, 0)
        .1
        .split('/')
        .next()
        .unwrap()
        .to_string();
    for j in [1, 2] {
        let b = lease_of(&leases, &bed, j)
            .1
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let out = bed.in_cell(0, &["ping", "-c", "2", "-W", "2", "-I", &a, &b]);
        assert!(out.is_ok(), "ping {a} -> {b}: {out:?}");
    }
    // The packets really went through the VTEP (encapsulated on eth0).
    let stats = &json(&bed, 0, &["ip", "-s", "-j", "link", "show", "silk-vtep"])[0]["stats64"]
        ["tx"]["packets"];
    assert!(stats.as_u64().unwrap() >= 4, "{stats}");

    // Steady cycles skip the kernel dumps (nothing changed, no notification)...
    let converged = entries(&bed, 0);
    eventually(
        Duration::from_secs(10),
        "a steady cycle without dumps",
        || bed.daemon_log(0).contains("unchanged since last check"),
    );
    // ...yet a change made behind the daemon's back is noticed and repaired at once: each
    // kind of entry of cell 1 removed from cell 0's VTEP comes back within a few cycles.
    let (underlay1, subnet1, mac1) = lease_of(&leases, &bed, 1);
    let gw1 = subnet1.split('/').next().unwrap().to_string();
    for argv in [
        vec!["ip", "route", "del", subnet1.as_str(), "dev", "silk-vtep"],
        vec!["ip", "neigh", "del", gw1.as_str(), "dev", "silk-vtep"],
        vec![
            "bridge",
            "fdb",
            "del",
            mac1.as_str(),
            "dev",
            "silk-vtep",
            "dst",
            underlay1.as_str(),
        ],
    ] {
        bed.in_cell(0, &argv).unwrap();
        assert_ne!(entries(&bed, 0), converged, "{argv:?} removed nothing");
        eventually(
            Duration::from_secs(10),
            "the removed entry is restored",
            || entries(&bed, 0) == converged,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: run via scripts/test"]
async fn expiry_restart_and_controller_outage() {
    let timing = Timing {
        poll_interval_seconds: 1,
        lease_expiration_seconds: 6,
        partition_tolerance_seconds: 600,
    };
    let mut bed = bed(3, timing).await;
    let leases = wait_converged(&bed, 3).await;

    // A cell that stops renewing disappears from the others after expiry.
    bed.kill_daemon(2).unwrap();
    let gone = lease_of(&leases, &bed, 2).1;
    eventually(
        Duration::from_secs(30),
        "cell 2 removed from cells 0 and 1",
        || (0..2).all(|i| !entries(&bed, i).routes.iter().any(|r| r.0 == gone)),
    );
    assert!(bed.daemon_running(0) && bed.daemon_running(1));

    // A restarted daemon keeps its lease, read back from silk-vtep.
    let before = lease_of(&bed.lease_table().await, &bed, 1);
    assert_eq!(bed.stop_daemon(1).unwrap(), Some(0), "SIGTERM exits 0");
    assert_eq!(
        entries(&bed, 1).routes.len(),
        1,
        "kernel state stays while the daemon is down"
    );
    bed.start_daemon(1).unwrap();
    let after = lease_of(&wait_converged(&bed, 2).await, &bed, 1);
    assert_eq!(before, after);
    assert!(
        bed.daemon_log(1).contains("renewed-lease"),
        "{}",
        bed.daemon_log(1)
    );

    // A 60 s controller outage changes nothing, and the daemons stay up and healthy. The
    // outage outlasts the 6 s lease expiry, so when the controller returns every lease has
    // expired: the first lists after the outage are partial, and must not remove entries.
    let snapshot: Vec<Entries> = (0..2).map(|i| entries(&bed, i)).collect();
    bed.stop_controller().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        for (i, want) in snapshot.iter().enumerate() {
            assert!(
                bed.daemon_running(i),
                "daemon {i} exited during the outage:\n{}",
                bed.daemon_log(i)
            );
            assert_eq!(
                &entries(&bed, i),
                want,
                "cell {i} changed during the outage"
            );
            bed.in_cell(i, &["curl", "-sf", "-m", "2", "http://127.0.0.1:23954/"])
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    bed.start_controller().unwrap();
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        for (i, want) in snapshot.iter().enumerate() {
            assert_eq!(
                &entries(&bed, i),
                want,
                "cell {i} changed after the controller returned"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        bed.lease_table().await.len(),
        2,
        "both leases renewed again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: run via scripts/test"]
async fn drain_and_teardown_release_and_are_repeatable() {
    let mut bed = bed(2, Timing::default()).await;
    wait_converged(&bed, 2).await;
    let dir = bed.dir.join("c0");
    let meta_dir = dir.join("container-metadata");
    std::fs::create_dir_all(&meta_dir).unwrap();
    let pidfile = dir.join("silk-daemon.pid");
    std::fs::write(&pidfile, bed.daemon_pid(0).unwrap().to_string()).unwrap();
    let shutdown = env!("CARGO_BIN_EXE_silk-daemon-shutdown");
    let teardown = env!("CARGO_BIN_EXE_silk-teardown");
    let meta = format!("{}/store.json", meta_dir.display());
    let pid = pidfile.display().to_string();
    let lock = format!("{}/iptables.lock", dir.display());
    let config = format!("-config={}", bed.cells[0].config.display());
    let drain_args = [
        shutdown,
        "--containerMetadataFile",
        &meta,
        "--containerMetadataFileCheckTimeout",
        "5",
        "--silkDaemonUrl",
        "http://localhost:23954/ping",
        "--silkDaemonPidPath",
        &pid,
        "--iptablesLockFile",
        &lock,
    ];
    for round in 0..2 {
        let out = bed.run_helper(0, &drain_args).unwrap();
        assert!(
            out.status.success(),
            "drain round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = bed.run_helper(0, &[teardown, &config]).unwrap();
        assert!(
            out.status.success(),
            "teardown round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if round == 0 {
            let code = bed.wait_daemon_exit(0, Duration::from_secs(10));
            assert_eq!(code, Some(0), "drain stopped the daemon (SIGTERM: exit 0)");
        }
        assert!(
            bed.in_cell(0, &["ip", "link", "show", "silk-vtep"])
                .is_err(),
            "VTEP removed"
        );
        let leases = bed.lease_table().await;
        assert!(
            !leases
                .iter()
                .any(|l| l.0 == bed.cells[0].underlay_ip.to_string()),
            "lease released"
        );
    }
    eventually(Duration::from_secs(15), "cell 1 forgets cell 0", || {
        entries(&bed, 1).routes.is_empty()
    });
    let _ = bed.stop_daemon(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: run via scripts/test"]
async fn emptied_lease_table_does_not_black_hole_the_fabric() {
    let bed = bed(3, Timing::default()).await;
    wait_converged(&bed, 3).await;
    let snapshot: Vec<Entries> = (0..3).map(|i| entries(&bed, i)).collect();
    // The database loses every row (restore, operator error). The next renews re-insert each
    // cell's own lease, so the first list each daemon gets lacks the cells that have not
    // renewed yet: upstream's rule would remove their routes right there.
    let client = bed.db().client().await;
    client.execute("DELETE FROM subnets", &[]).await.unwrap();
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        for (i, want) in snapshot.iter().enumerate() {
            assert_eq!(
                &entries(&bed, i),
                want,
                "cell {i} lost entries after the table was emptied"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        bed.lease_table().await.len(),
        3,
        "every cell re-registered by renewing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: run via scripts/test"]
async fn renew_conflict_and_exhausted_partition_tolerance_are_fatal() {
    let timing = Timing {
        poll_interval_seconds: 1,
        lease_expiration_seconds: 60,
        partition_tolerance_seconds: 4,
    };
    let mut bed = bed(2, timing).await;
    wait_converged(&bed, 2).await;
    // Someone else's subnet now stands against cell 0's underlay IP: the renew gets a 409.
    let ip = bed.cells[0].underlay_ip.to_string();
    let client = bed.db().client().await;
    client
        .execute(
            "UPDATE subnets SET overlay_subnet = '10.255.250.0/24', overlay_hwaddr = 'ee:ee:0a:ff:fa:00' \
             WHERE underlay_ip = $1",
            &[&ip],
        )
        .await
        .unwrap();
    assert_eq!(
        bed.wait_daemon_exit(0, Duration::from_secs(10)),
        Some(1),
        "409 on renew exits 1"
    );
    let log = bed.daemon_log(0);
    assert!(
        log.contains("This cell must be restarted") && log.contains("renew lease"),
        "{log}"
    );
    // The VTEP and its entries stay for the data plane.
    assert!(bed.in_cell(0, &["ip", "link", "show", "silk-vtep"]).is_ok());

    // Controller gone for longer than the 4 s partition tolerance: cell 1 serves until then,
    // then exits 1.
    bed.stop_controller().unwrap();
    let down = Instant::now();
    assert_eq!(
        bed.wait_daemon_exit(1, Duration::from_secs(20)),
        Some(1),
        "partition tolerance exhausted"
    );
    let waited = down.elapsed();
    assert!(
        waited >= Duration::from_secs(3),
        "exited only after the tolerance: {waited:?}"
    );
    assert!(bed.daemon_log(1).contains("This cell must be restarted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: run via scripts/test"]
async fn restart_with_containers_and_no_controller_exits() {
    let mut bed = bed(1, Timing::default()).await;
    wait_converged(&bed, 1).await;
    assert_eq!(bed.stop_daemon(0).unwrap(), Some(0));
    // A container on the cell, and the controller unreachable: the lease cannot be confirmed
    // and must not be given up, so the daemon refuses to start (monit retries).
    std::fs::write(
        &bed.cells[0].datastore,
        r#"{"c1":{"handle":"c1","ip":"10.255.7.2","metadata":null}}"#,
    )
    .unwrap();
    bed.stop_controller().unwrap();
    let err = bed.start_daemon(0).unwrap_err().to_string();
    assert!(
        err.contains("renew subnet lease with containers: 1"),
        "{err}"
    );
    assert!(
        bed.in_cell(0, &["ip", "link", "show", "silk-vtep"]).is_ok(),
        "VTEP kept"
    );
}
