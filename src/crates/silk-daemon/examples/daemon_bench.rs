//! The daemon benchmark behind `scripts/bench daemon` (needs root and the PostgreSQL cluster
//! that script starts). Prints figures; asserts nothing about them.
//!
//! 1. Propagation: 20 cells with a 1 s poll interval; one more cell joins, and we time from its
//!    acquire (its local API answering) to its route, ARP and FDB entries existing on all 20.
//! 2. Scale: one real cell and N fake leases inserted into the controller's table; the first
//!    converge and steady cycles (nothing changed) timed from the daemon's own cycle log
//!    (wall) and /proc/<pid>/task/*/schedstat (CPU), plus the daemon's RSS.
//!
//! Usage: daemon_bench <path to silk-daemon> [cells] [lease counts...]

#![allow(clippy::unwrap_used)] // a benchmark program: any failure aborts it loudly

use std::time::{Duration, Instant};

use serde_json::Value;
use silk_lab::fabric::render::Timing;
use silk_lab::fabric::{Binaries, Options, Testbed};

/// How long steady cycles are watched (about 20 cycles at the 1 s poll interval).
const STEADY_WINDOW: Duration = Duration::from_secs(20);

/// CPU time of `pid` in seconds, user and system, summed over its threads from
/// `/proc/<pid>/task/*/schedstat` (nanoseconds; `/proc/<pid>/stat` counts 10 ms ticks, too
/// coarse for a cycle of a few milliseconds).
fn cpu_seconds(pid: u32) -> f64 {
    let mut ns: u64 = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = t.unwrap().path().join("schedstat");
        // A thread that exited between listing and reading has nothing left to count.
        if let Ok(text) = std::fs::read_to_string(path) {
            ns += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ns as f64 / 1e9
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `poll-cycle-done` records of the daemon's log: (elapsed µs, applied ops, leases listed).
fn cycles(log: &str) -> Vec<(u64, u64, u64)> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.ends_with(".poll-cycle-done"))
        })
        .map(|v| {
            let d = &v["data"];
            (
                d["elapsed_us"].as_u64().unwrap_or(0),
                d["applied"].as_u64().unwrap_or(0),
                d["leases"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn has_entries_for(bed: &Testbed, i: usize, subnet: &str, mac: &str) -> bool {
    let gw = subnet.split('/').next().unwrap();
    let routes = bed
        .in_cell(i, &["ip", "route", "show", subnet, "dev", "silk-vtep"])
        .unwrap_or_default();
    let neigh = bed
        .in_cell(i, &["ip", "neigh", "show", gw, "dev", "silk-vtep"])
        .unwrap_or_default();
    let fdb = bed
        .in_cell(i, &["bridge", "fdb", "show", "dev", "silk-vtep"])
        .unwrap_or_default();
    routes.contains(gw) && neigh.contains("PERMANENT") && fdb.contains(mac)
}

async fn propagation(bins: &Binaries, cells: usize) {
    let mut bed = Testbed::build(
        bins.clone(),
        Options {
            cells,
            timing: Timing {
                poll_interval_seconds: 1,
                lease_expiration_seconds: 60,
                partition_tolerance_seconds: 600,
            },
            ..Options::default()
        },
    )
    .await
    .unwrap();
    bed.start_controller().unwrap();
    let t = Instant::now();
    bed.start_daemons().unwrap();
    println!(
        "propagation: {cells} cells started in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let new = bed.add_cell().unwrap();
    let started = Instant::now();
    bed.start_daemon(new).unwrap();
    let acquired = Instant::now();
    let ip = bed.cells[new].underlay_ip.to_string();
    let lease = bed
        .lease_table()
        .await
        .into_iter()
        .find(|l| l.0 == ip)
        .unwrap();
    let mut pending: Vec<usize> = (0..cells).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "cells {pending:?} never got the new lease"
        );
        pending.retain(|&i| !has_entries_for(&bed, i, &lease.1, &lease.2));
    }
    let done = acquired.elapsed();
    let case = "new cell acquire -> entries on every other cell";
    let ms = done.as_secs_f64() * 1000.0;
    silk_testkit::figures::record("daemon", case, cells as f64, "cells", "wall_ms", ms);
    println!(
        "propagation: new cell acquire -> entries on all {cells} other cells: {:.2} s \
         (daemon start -> acquired: {:.2} s; poll interval 1 s)",
        done.as_secs_f64(),
        (acquired - started).as_secs_f64()
    );
}

async fn scale(bins: &Binaries, n: usize) {
    let mut bed = Testbed::build(
        bins.clone(),
        Options {
            cells: 1,
            timing: Timing {
                poll_interval_seconds: 1,
                lease_expiration_seconds: 3600,
                partition_tolerance_seconds: 600,
            },
            log_level: "debug".into(),
            overlay: "10.0.0.0/8".into(),
            prefix: 24,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    bed.start_controller().unwrap();
    // Fake remote cells: 10.<1+i/256>.<i%256>.0/24 on underlay 198.18.<i/256>.<i%256>
    // (RFC 2544 range; these addresses only ever appear as FDB destinations in the namespace).
    let client = bed.db().client().await;
    client
        .execute(
            "INSERT INTO subnets (underlay_ip, overlay_subnet, overlay_hwaddr, last_renewed_at) \
             SELECT '198.18.' || (i / 256) || '.' || (i % 256), \
                    '10.' || (1 + i / 256) || '.' || (i % 256) || '.0/24', \
                    'ee:ee:0a:' || lpad(to_hex(1 + i / 256), 2, '0') || ':' || lpad(to_hex(i % 256), 2, '0') || ':00', \
                    EXTRACT(EPOCH FROM now())::bigint \
             FROM generate_series(0, $1::int - 1) AS i",
            &[&(n as i32)],
        )
        .await
        .unwrap();
    let started = Instant::now();
    bed.start_daemon(0).unwrap();
    let pid = bed.daemon_pid(0).unwrap();
    // Wait for the first converge (the cycle that applied the remote entries).
    let deadline = Instant::now() + Duration::from_secs(120);
    let first = loop {
        let c = cycles(&bed.daemon_log(0));
        if let Some(first) = c.iter().find(|c| c.1 > 0) {
            break *first;
        }
        assert!(
            Instant::now() < deadline,
            "no converge; log:\n{}",
            bed.daemon_log(0)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let cpu_first = cpu_seconds(pid);
    let to_first = started.elapsed();
    // Steady cycles: nothing changes any more.
    let before = cycles(&bed.daemon_log(0)).len();
    let cpu0 = cpu_seconds(pid);
    let window = Instant::now();
    tokio::time::sleep(STEADY_WINDOW).await;
    let cpu1 = cpu_seconds(pid);
    let all = cycles(&bed.daemon_log(0));
    let steady: Vec<&(u64, u64, u64)> = all[before..].iter().collect();
    assert!(
        steady.iter().all(|c| c.1 == 0),
        "steady cycles applied changes: {steady:?}"
    );
    let k = steady.len().max(1) as f64;
    let mut walls: Vec<u64> = steady.iter().map(|c| c.0).collect();
    walls.sort_unstable();
    let median = walls.get(walls.len() / 2).copied().unwrap_or(0);
    let (rss, hwm) = rss_kib(pid);
    let entries = bed
        .in_cell(0, &["ip", "route", "show", "dev", "silk-vtep"])
        .unwrap()
        .lines()
        .count();
    for (case, metric, v) in [
        ("first converge cycle", "wall_ms", first.0 as f64 / 1e3),
        ("steady cycle", "wall_ms", median as f64 / 1e3),
        ("steady cycle", "cpu_ms", (cpu1 - cpu0) * 1e3 / k),
        ("resident memory", "rss_kib", rss as f64),
    ] {
        silk_testkit::figures::record("daemon", case, n as f64, "leases", metric, v);
    }
    println!(
        "scale {n} leases: first converge cycle {:.3} s wall ({} ops; daemon start -> converged {:.2} s, \
         process CPU so far {:.2} s incl. start-up)",
        first.0 as f64 / 1e6,
        first.1,
        to_first.as_secs_f64(),
        cpu_first
    );
    println!(
        "scale {n} leases: steady cycle median {:.1} ms wall over {} cycles; CPU {:.1} ms per cycle \
         ({:.2} s over {:.1} s); RSS {} KiB (peak {} KiB); {} routes on silk-vtep",
        median as f64 / 1e3,
        steady.len(),
        (cpu1 - cpu0) * 1e3 / k,
        cpu1 - cpu0,
        window.elapsed().as_secs_f64(),
        rss,
        hwm,
        entries
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let daemon = args
        .next()
        .expect("usage: daemon_bench <silk-daemon> [cells] [counts...]");
    let cells: usize = args.next().map(|c| c.parse().unwrap()).unwrap_or(20);
    let mut counts: Vec<usize> = args.map(|c| c.parse().unwrap()).collect();
    if counts.is_empty() {
        counts = vec![1000, 5000];
    }
    let bins = Binaries::beside(&daemon).unwrap();
    propagation(&bins, cells).await;
    for n in counts {
        scale(&bins, n).await;
    }
}
