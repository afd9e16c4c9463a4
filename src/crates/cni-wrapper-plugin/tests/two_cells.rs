//! Two cells of the multi-cell test bed (real silk-controller, PostgreSQL, silk-daemons, VXLAN),
//! with the wrapper (its conflist entry rendered from the silk-cni job's template) and silk-cni
//! run inside each cell's namespace as garden-external-networker runs them, and containers that
//! are namespaces held by a process:
//!
//! - c2c: a container on cell 0 reaches a listener in a container on cell 1 across `silk-vtep`
//!   once vxlan-policy-agent style `vpa--` rules mark its packets at the source and accept the
//!   mark at the destination, and is refused without them;
//! - NetIn: the listener is reached through its host port mapping on cell 1's underlay address;
//! - NetOut: with a static ASG allowing one port of a host on the underlay segment, that port
//!   connects (masqueraded to the cell address) and another is rejected; `deny_networks` beats
//!   the same ASG;
//! - DEL removes every rule, chain, link and reservation of the containers.
//!
//! Every packet stays inside the bed's namespaces and the containers' namespaces.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

mod common;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use serde_json::{json, Value};
use silk_dataplane::iptables::save::normalize;
use silk_lab::fabric::render::{self, DAEMON_PORT};
use silk_lab::fabric::vcap::VcapUser;
use silk_lab::fabric::{garden, Binaries, Options, Testbed};
use silk_testkit::cni::CniRunner;
use silk_testkit::netns::{command_in, output_with_stdin, run_in_ok, NsHolder};

/// The host on the underlay segment that containers reach through NetOut.
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
/// Its port the ASG allows, and one it does not.
const ALLOWED_PORT: u16 = 8443;
const OTHER_PORT: u16 = 9443;
const CONTAINER_PORT: u16 = 8080;
const HOST_PORT: u16 = 61000;
const INGRESS_TAG: &str = "ffff0000";
/// The VPA-style tag of container A's policy group.
const SOURCE_TAG: &str = "0x1";

const HANDLE_A: &str = "a11ce000-0000-4000-8000-00000000000a";
const HANDLE_B: &str = "b0b00000-0000-4000-8000-00000000000b";
const HANDLE_C: &str = "c0c00000-0000-4000-8000-00000000000c";

/// Runs `f` on a thread that has entered the network namespace at `ns`; sockets it creates
/// belong to that namespace for good.
fn in_netns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let file = File::open(&ns).unwrap_or_else(|e| panic!("open {}: {e}", ns.display()));
        setns(&file, CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {}: {e}", ns.display()));
        f()
    })
    .join()
    .unwrap()
}

// === impl Server ===

/// A TCP server bound inside a namespace, handling one connection at a time; stopped and its
/// socket closed on drop.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(
        ns: &Path,
        addr: SocketAddrV4,
        mut handle: impl FnMut(TcpStream, SocketAddr) + Send + 'static,
    ) -> Server {
        let listener = in_netns(ns, move || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", ns.display()));
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        handle(s, peer);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Answers one line `<payload>` with `<tag> <peer ip> <payload>`.
    fn echo(ns: &Path, addr: SocketAddrV4, tag: &'static str) -> Server {
        Server::start(ns, addr, move |s, peer| {
            let mut line = String::new();
            if BufReader::new(&s).read_line(&mut line).is_ok() {
                let _ = (&s).write_all(format!("{tag} {} {line}", peer.ip()).as_bytes());
            }
        })
    }

    /// vxlan-policy-agent's local endpoints as the wrapper sees them with dynamic ASGs disabled
    /// (405 to the ASG calls, so the static ASGs of `netOutRules` apply); records request lines.
    fn policy_agent(ns: &Path, requests: Arc<Mutex<Vec<String>>>) -> Server {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        Server::start(ns, addr, move |mut s, _| {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head);
            let line = text.lines().next().unwrap_or("").to_string();
            let (code, body) = if line.starts_with("GET /force-policy-poll-cycle") {
                (200, "")
            } else if line.starts_with("GET /force-asgs-for-container")
                || line.starts_with("GET /force-orphaned-asgs-cleanup")
            {
                (405, "ASG syncing has been disabled administratively")
            } else {
                (404, "not found")
            };
            requests.lock().unwrap().push(line);
            let resp = format!(
                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes());
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from namespace `ns` to `dst`, sends one line and returns the answer.
fn talk(ns: &Path, dst: SocketAddrV4) -> io::Result<String> {
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&dst.into(), Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(format!("hello {dst}\n").as_bytes())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    })
}

fn assert_reaches(ns: &Path, dst: SocketAddrV4, tag: &str, seen_from: Ipv4Addr, what: &str) {
    match talk(ns, dst) {
        Ok(a) => assert_eq!(a, format!("{tag} {seen_from} hello {dst}\n"), "{what}"),
        Err(e) => panic!("{what}: connecting to {dst} failed: {e}"),
    }
}

fn assert_refused(ns: &Path, dst: SocketAddrV4, what: &str) {
    match talk(ns, dst) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => panic!("{what}: expected the connection to {dst} to be rejected, got {other:?}"),
    }
}

// === impl CellCtx ===

/// A cell's CNI side: state directories and the fake policy agent inside its namespace.
struct CellCtx {
    ns: PathBuf,
    underlay_ip: Ipv4Addr,
    dir: tempfile::TempDir,
    agent: Server,
    agent_requests: Arc<Mutex<Vec<String>>>,
}

impl CellCtx {
    fn new(bed: &Testbed, i: usize) -> CellCtx {
        let ns = bed.cells[i].ns.path().to_path_buf();
        let agent_requests = Arc::new(Mutex::new(Vec::new()));
        CellCtx {
            agent: Server::policy_agent(&ns, agent_requests.clone()),
            agent_requests,
            underlay_ip: bed.cells[i].underlay_ip,
            dir: tempfile::tempdir().unwrap(),
            ns,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The wrapper's entry of this cell's conflist, rendered from the silk-cni job's template
    /// (state under the cell's temp dir, the fake agent's port as the vpa link's, iptables
    /// logging off, `deny_always` as `deny_networks.always`), as libcni passes it on ADD.
    fn config(&self, deny_always: &[&str], runtime: Value) -> Value {
        let text = render::cni_conflist_with(
            self.dir.path(),
            self.underlay_ip,
            &json!({
                "properties/iptables_logging": false,
                "properties/no_masquerade_cidr_range": "10.255.0.0/16",
                "properties/deny_networks/always": deny_always,
                "links/vpa/properties/force_policy_poll_cycle_port": self.agent.port,
            }),
        )
        .unwrap();
        let list: Value = serde_json::from_str(&text).unwrap();
        let metadata = json!({"container_workload": "app", "policy_group_id": "pg",
                              "space_id": "sp", "ports": "8080"});
        let conf = garden::conf_for(
            &list,
            &list["plugins"][0],
            garden::Call::Add {
                metadata: &metadata,
                runtime: &runtime,
                prev: None,
            },
        );
        assert_eq!(conf["type"], "cni-wrapper-plugin");
        assert_eq!(conf["ingress_tag"], INGRESS_TAG);
        assert_eq!(conf["delegate"]["daemonPort"], DAEMON_PORT);
        conf
    }

    /// The wrapper as libcni invokes it, in the cell's namespace.
    fn cni(&self) -> CniRunner {
        CniRunner {
            ns: self.ns.clone(),
            plugin: env!("CARGO_BIN_EXE_cni-wrapper-plugin").into(),
            cni_path: common::plugin_dir(),
        }
    }

    /// ADD; the result and the container's IP.
    fn add(&self, handle: &str, holder: &NsHolder, conf: &Value) -> (Value, Ipv4Addr) {
        self.cni().add(handle, holder, conf)
    }

    /// DEL with the config libcni would pass: no runtime injections, the cached result.
    fn del(&self, handle: &str, holder: &NsHolder, conf: Value, prev: &Value) {
        self.cni().del(handle, holder, conf, prev)
    }

    fn save(&self) -> String {
        run_in_ok(&self.ns, &["iptables-save"]).unwrap()
    }

    /// Rules and user chains (v4), normalised; builtin chains and empty tables left out.
    fn rules(&self) -> Vec<String> {
        normalize(&self.save())
            .into_iter()
            .filter(|l| {
                !(l.starts_with('*')
                    || l == "COMMIT"
                    || (l.starts_with(':') && l.contains(" ACCEPT ")))
            })
            .collect()
    }

    fn links(&self) -> Vec<String> {
        let v: Value =
            serde_json::from_str(&run_in_ok(&self.ns, &["ip", "-j", "link", "show"]).unwrap())
                .unwrap();
        let mut names: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(String::from))
            .collect();
        names.sort();
        names
    }

    /// One `iptables-restore --noflush` batch in the cell, as vxlan-policy-agent writes its own.
    fn restore(&self, payload: &str) {
        let mut c = command_in(&self.ns, "iptables-restore");
        c.arg("--noflush");
        let o = output_with_stdin(&mut c, payload.as_bytes()).unwrap();
        assert!(
            o.status.success(),
            "iptables-restore {payload}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn requests(&self) -> Vec<String> {
        self.agent_requests.lock().unwrap().clone()
    }
}

/// The cell's leased overlay subnet as silk-daemon serves it to silk-cni.
fn lease(ctx: &CellCtx) -> String {
    let url = format!("http://127.0.0.1:{DAEMON_PORT}/");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(body) = run_in_ok(&ctx.ns, &["curl", "-sf", "-m", "2", &url]) {
            if let Ok(v) = serde_json::from_str::<Value>(&body) {
                if let Some(s) = v["overlay_subnet"].as_str() {
                    return s.to_string();
                }
            }
        }
        assert!(Instant::now() < deadline, "no lease on {}", ctx.underlay_ip);
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until each cell's VTEP address answers pings from the other's across VXLAN.
fn wait_overlay(cells: &[CellCtx]) {
    let vtep: Vec<String> = cells
        .iter()
        .map(|c| lease(c).split('/').next().unwrap().to_string())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, j) in [(0, 1), (1, 0)] {
        loop {
            let ok = run_in_ok(
                &cells[i].ns,
                &["ping", "-c", "1", "-W", "1", "-I", &vtep[i], &vtep[j]],
            )
            .is_ok();
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cells' VTEPs did not converge: {} -> {}",
                vtep[i],
                vtep[j]
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn tcp_asg(ip: Ipv4Addr, port: u16) -> Value {
    json!([{"protocol": 1, "networks": [{"start": ip, "end": ip}], "ports": [{"start": port, "end": port}]}])
}

/// Lines of `chain` in `iptables-save` text.
fn chain_rules(saved: &str, chain: &str) -> Vec<String> {
    let prefix = format!("-A {chain} ");
    saved
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(String::from)
        .collect()
}

#[test]
#[ignore = "needs postgres/root: run via scripts/test"]
fn containers_on_two_cells_c2c_netin_netout() {
    silk_testkit::require_root_and_pg();
    // The rendered conflist makes the wrapper chown its store to vcap, as on a cell.
    let _vcap = VcapUser::ensure().unwrap();
    let started = Instant::now();
    let bins = Binaries::in_dir(&common::plugin_dir()).unwrap();
    let options = Options {
        cells: 2,
        log_level: "debug".into(),
        ..Options::default()
    };
    let (mut bed, outside) = Testbed::with_underlay_host(bins, options, OUTSIDE_IP).unwrap();
    bed.start_controller().unwrap();
    bed.start_daemons().unwrap();
    let cells: Vec<CellCtx> = (0..2).map(|i| CellCtx::new(&bed, i)).collect();
    wait_overlay(&cells);
    let before: Vec<(Vec<String>, Vec<String>)> =
        cells.iter().map(|c| (c.rules(), c.links())).collect();

    let any = |port| SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    let _allowed = Server::echo(&outside, any(ALLOWED_PORT), "outside-allowed");
    let _other = Server::echo(&outside, any(OTHER_PORT), "outside-other");
    let allowed_dst = SocketAddrV4::new(OUTSIDE_IP, ALLOWED_PORT);
    let other_dst = SocketAddrV4::new(OUTSIDE_IP, OTHER_PORT);

    // A on cell 0 with an ASG for one port of the outside host; B on cell 1 with a port
    // mapping and a listener; C on cell 0 with the same ASG, but the host in deny_networks.
    let (a, b, c) = (
        NsHolder::spawn().unwrap(),
        NsHolder::spawn().unwrap(),
        NsHolder::spawn().unwrap(),
    );
    let asg = tcp_asg(OUTSIDE_IP, ALLOWED_PORT);
    let conf_a = cells[0].config(&[], json!({"netOutRules": asg}));
    let conf_b = cells[1].config(
        &[],
        json!({"portMappings": [{"host_port": HOST_PORT, "container_port": CONTAINER_PORT}]}),
    );
    let deny = format!("{OUTSIDE_IP}/32");
    let conf_c = cells[0].config(&[&deny], json!({"netOutRules": asg}));
    let (res_a, ip_a) = cells[0].add(HANDLE_A, &a, &conf_a);
    let (res_b, ip_b) = cells[1].add(HANDLE_B, &b, &conf_b);
    let (res_c, ip_c) = cells[0].add(HANDLE_C, &c, &conf_c);
    let listener_b = Server::echo(b.path(), any(CONTAINER_PORT), "container-b");
    let b_dst = SocketAddrV4::new(ip_b, CONTAINER_PORT);

    // c2c across VXLAN. No policy: B's overlay chain rejects A.
    assert_refused(a.path(), b_dst, "A -> B without any policy");
    // The destination accepts A's tag, but nothing marks A's packets: still rejected.
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let vpa = format!("vpa--{ts}");
    cells[1].restore(&format!(
        "*filter\n:{vpa} - [0:0]\n-I FORWARD 1 -j {vpa}\n\
         -A {vpa} -d {ip_b}/32 -p tcp -m tcp --dport {CONTAINER_PORT} -m mark --mark {SOURCE_TAG} -j ACCEPT\nCOMMIT\n"
    ));
    assert_refused(a.path(), b_dst, "A -> B with the destination rule only");
    // The source cell marks A's packets; the mark travels as the VXLAN GBP id and is accepted.
    cells[0].restore(&format!(
        "*filter\n:{vpa} - [0:0]\n-I FORWARD 1 -j {vpa}\n\
         -A {vpa} -s {ip_a}/32 -j MARK --set-xmark {SOURCE_TAG}/0xffffffff\nCOMMIT\n"
    ));
    assert_reaches(
        a.path(),
        b_dst,
        "container-b",
        ip_a,
        "A -> B with c2c policy",
    );
    // The packets went through the VTEPs.
    let tx = |c: &CellCtx| -> u64 {
        let v: Value = serde_json::from_str(
            &run_in_ok(&c.ns, &["ip", "-s", "-j", "link", "show", "silk-vtep"]).unwrap(),
        )
        .unwrap();
        v[0]["stats64"]["tx"]["packets"].as_u64().unwrap()
    };
    assert!(
        tx(&cells[0]) > 0 && tx(&cells[1]) > 0,
        "traffic crossed silk-vtep"
    );

    // NetIn: the outside host reaches B's listener at cell 1's underlay address.
    let mapped = SocketAddrV4::new(cells[1].underlay_ip, HOST_PORT);
    assert_reaches(
        &outside,
        mapped,
        "container-b",
        OUTSIDE_IP,
        "host port mapping",
    );

    // NetOut: the ASG's port connects (masqueraded to cell 0's address), the other is rejected
    // by A's netout chain although the outside host listens on it (cell 0 itself reaches it).
    assert_reaches(
        a.path(),
        allowed_dst,
        "outside-allowed",
        cells[0].underlay_ip,
        "A -> ASG-allowed port",
    );
    assert_refused(a.path(), other_dst, "A -> port outside the ASG");
    assert_reaches(
        &cells[0].ns,
        other_dst,
        "outside-other",
        cells[0].underlay_ip,
        "cell 0 -> the other port (control)",
    );
    // deny_networks wins over the same ASG.
    let saved = cells[0].save();
    let netout_c: Vec<String> = chain_rules(&saved, "netout--c0c00000-0000-4000-8")
        .into_iter()
        .filter(|r| r.contains(&OUTSIDE_IP.to_string()))
        .collect();
    assert_eq!(netout_c.len(), 2, "deny and ASG rules for C: {saved}");
    assert!(
        netout_c[0].contains(&format!("-d {deny} -j REJECT"))
            && netout_c[1].contains(&format!("--dport {ALLOWED_PORT} -j ACCEPT")),
        "deny rule above the ASG: {netout_c:?}"
    );
    assert_refused(
        c.path(),
        allowed_dst,
        "C -> ASG-allowed port in deny_networks",
    );
    assert_refused(c.path(), other_dst, "C -> other port");

    // The wrapper asked the cell's agent for a poll cycle and the ASGs of each container.
    for (cell, handle) in [(0, HANDLE_A), (1, HANDLE_B), (0, HANDLE_C)] {
        let reqs = cells[cell].requests();
        assert!(
            reqs.iter()
                .any(|l| l.starts_with("GET /force-policy-poll-cycle ")),
            "{reqs:?}"
        );
        assert!(
            reqs.iter().any(|l| l.starts_with(&format!(
                "GET /force-asgs-for-container?container={handle} "
            ))),
            "{reqs:?}"
        );
    }

    // DEL (after the agent's chain is gone, as when the policy is removed) leaves each cell as
    // it was before the first ADD.
    for cell in &cells {
        cell.restore(&format!(
            "*filter\n-D FORWARD -j {vpa}\n-F {vpa}\n-X {vpa}\nCOMMIT\n"
        ));
    }
    drop(listener_b);
    cells[0].del(HANDLE_A, &a, conf_a, &res_a);
    cells[1].del(HANDLE_B, &b, conf_b, &res_b);
    cells[0].del(HANDLE_C, &c, conf_c, &res_c);
    for (i, cell) in cells.iter().enumerate() {
        let (rules, links) = &before[i];
        assert_eq!(&cell.rules(), rules, "cell {i}: rules after DEL");
        assert_eq!(&cell.links(), links, "cell {i}: links after DEL");
        assert_eq!(
            std::fs::read_to_string(cell.path("data/container-metadata/store.json")).unwrap(),
            "{}\n",
            "cell {i}: metadata store"
        );
        let ipam = cell.path("data/host-local/ipam/silk");
        let reserved: Vec<String> = std::fs::read_dir(&ipam)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            reserved.is_empty(),
            "cell {i}: reservations left {reserved:?}"
        );
    }
    for ip in [ip_a, ip_b, ip_c] {
        for cell in &cells {
            assert!(!cell.save().contains(&ip.to_string()), "{ip} left in rules");
        }
    }
    for holder in [&a, &b, &c] {
        let out = holder.run_ok(&["ip", "-j", "link", "show"]).unwrap();
        assert!(!out.contains("\"eth0\""), "container eth0 left: {out}");
    }
    for i in 0..2 {
        assert!(bed.daemon_running(i), "daemon {i}: {}", bed.daemon_log(i));
    }
    eprintln!("two cells: {:.1}s", started.elapsed().as_secs_f64());
}
