//! End to end on the multi-cell test bed: real silk-controller, PostgreSQL, silk-daemons, one
//! vxlan-policy-agent per cell (dynamic ASGs on, as cf-deployment runs it) against the lab
//! policy server, and containers (namespaces held by a process) created by cni-wrapper-plugin
//! and silk-cni invoked in each cell's namespace as garden-external-networker invokes them.
//!
//! - c2c: app A on cell 0 reaches app B on cell 1 on tcp 8080 by policy; B -> A and A -> B:8081
//!   are refused; removing the policy in the server's file revokes it, adding it back restores
//!   it, each within a bounded wait of a few policy polls;
//! - ASGs: A's egress to an "outside" host on the underlay follows its space's security groups;
//!   changing them in the file changes it within a bounded wait of a few ASG polls with no
//!   restart, and a TCP connection established while allowed survives the swap;
//! - DEL removes the containers' chains, the agent's `asg-` chains included.
//!
//! Every packet stays inside the bed's namespaces and the containers' namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use silk_lab::fabric::render::{AgentSettings, AGENT_FORCE_PORT, DAEMON_PORT};
use silk_lab::fabric::{sibling_binary, Binaries, Options, Testbed};
use silk_lab::policy_server::data::{
    AsgRule, FilePolicy, FileRules, FileSecurityGroup, PolicyFile,
};
use silk_lab::policy_server::write_file;
use silk_testkit::cni::CniRunner;
use silk_testkit::netns::{run_in_ok, NsHolder};
use silk_testkit::tcp::{echo_answer, talk, Conn, EchoServer};

const APP_A: &str = "a0a0a0a0-1111-4222-8333-000000000001";
const APP_B: &str = "b0b0b0b0-1111-4222-8333-000000000002";
const SPACE: &str = "5ace0000-1111-4222-8333-000000000003";
const ORG: &str = "0a900000-1111-4222-8333-000000000004";
const HANDLE_A: &str = "a11ce000-0000-4000-8000-0000000000a1";
const HANDLE_B: &str = "b0b00000-0000-4000-8000-0000000000b2";
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
const FIRST_PORT: u16 = 8443;
const SECOND_PORT: u16 = 9443;
const POLL: u64 = 1;
/// Bound of every "within one poll" wait: several polls, for a loaded 2-core machine.
const WITHIN: Duration = Duration::from_secs(10 * POLL + 5);

fn policy_a_to_b() -> FilePolicy {
    FilePolicy::new(APP_A, APP_B, "tcp", 8080, 8080)
}

/// A security group for A's space allowing tcp `port` of the outside host.
fn space_group(port: u16) -> FileSecurityGroup {
    FileSecurityGroup {
        guid: "6a4c2e0b-8d7f-4e1a-9c3b-5d2e1f0a9b84".into(),
        name: "outside".into(),
        rules: FileRules::Rules(vec![AsgRule::new(
            "tcp",
            &OUTSIDE_IP.to_string(),
            &port.to_string(),
        )]),
        staging_default: false,
        running_default: false,
        staging_space_guids: vec![],
        running_space_guids: vec![SPACE.into()],
    }
}

/// One cell's CNI side, as garden-external-networker drives it.
struct Garden {
    ns: PathBuf,
    dir: PathBuf,
    store: PathBuf,
    lock: PathBuf,
    silk_store: PathBuf,
    underlay_ip: Ipv4Addr,
    cni: CniRunner,
}

impl Garden {
    fn new(bed: &Testbed, i: usize, wrapper: &Path) -> Garden {
        let c = &bed.cells[i];
        Garden {
            ns: c.ns.path().to_path_buf(),
            dir: c.dir.clone(),
            store: c.metadata_store(),
            lock: c.iptables_lock(),
            silk_store: c.datastore.clone(),
            underlay_ip: c.underlay_ip,
            cni: CniRunner {
                ns: c.ns.path().to_path_buf(),
                plugin: wrapper.to_path_buf(),
                cni_path: wrapper.parent().unwrap().to_path_buf(),
            },
        }
    }

    /// The conflist's wrapper entry with garden's runtime injections (the silk-cni job's
    /// defaults, the cell's paths).
    fn config(&self, app: &str, runtime: Value) -> Value {
        let ip = self.underlay_ip.to_string();
        json!({
            "cniVersion": "1.0.0", "name": "cni-wrapper", "type": "cni-wrapper-plugin",
            "datastore": self.store, "datastore_file_owner": "", "datastore_file_group": "",
            "iptables_lock_file": self.lock,
            "instance_address": ip, "no_masquerade_cidr_range": "10.255.0.0/16",
            "temporary_underlay_interface_names": [], "underlay_ips": [ip],
            "iptables_asg_logging": false, "iptables_c2c_logging": false,
            "iptables_denied_logs_per_sec": 1, "iptables_accepted_udp_logs_per_sec": 100,
            "ingress_tag": "ffff0000", "vtep_name": "silk-vtep",
            "policy_agent_force_poll_address": format!("127.0.0.1:{AGENT_FORCE_PORT}"),
            "dns_servers": ["169.254.0.53"], "host_tcp_services": [], "host_udp_services": [],
            "deny_networks": {"always": [], "running": [], "staging": []},
            "delegate": {"cniVersion": "1.0.0", "name": "silk", "type": "silk-cni",
                         "daemonPort": DAEMON_PORT, "dataDir": self.dir.join("host-local"),
                         "datastore": self.silk_store, "mtu": 0},
            "outbound_connections": {"limit": false, "logging": false, "burst": 1000, "rate_per_sec": 100, "dry_run": false},
            "metadata": {"app_id": app, "container_workload": "app", "org_id": ORG,
                         "policy_group_id": app, "ports": "8080", "space_id": SPACE},
            "runtimeConfig": runtime,
        })
    }

    fn filter(&self) -> String {
        run_in_ok(&self.ns, &["iptables-save", "-t", "filter"]).unwrap()
    }
}

/// The binaries the tests run.
struct Bins {
    lab: PathBuf,
    agent: PathBuf,
    wrapper: PathBuf,
}

/// A bed of `cells` cells with an "outside" host on the underlay, the controller, the daemons
/// and the lab policy server serving `content` from a file; the bed, the outside host's
/// namespace, the file and the binaries.
fn bed_with_policy_server(cells: usize, content: &PolicyFile) -> (Testbed, PathBuf, PathBuf, Bins) {
    let lab = PathBuf::from(env!("CARGO_BIN_EXE_silk-lab"));
    let dir = lab.parent().unwrap().to_path_buf();
    let bins = Bins {
        agent: sibling_binary(&dir, "vxlan-policy-agent", "vxlan-policy-agent").unwrap(),
        wrapper: sibling_binary(&dir, "cni-wrapper-plugin", "cni-wrapper-plugin").unwrap(),
        lab,
    };
    sibling_binary(&dir, "silk-cni", "silk-cni").unwrap();
    let options = Options {
        cells,
        log_level: "debug".into(),
        ..Options::default()
    };
    let (mut bed, outside) =
        Testbed::with_underlay_host(Binaries::in_dir(&dir).unwrap(), options, OUTSIDE_IP).unwrap();
    let file = bed.dir.join("policies.json");
    write_file(&file, content).unwrap();
    bed.start_controller().unwrap();
    bed.start_daemons().unwrap();
    bed.start_policy_server(&bins.lab, &file).unwrap();
    (bed, outside, file, bins)
}

/// Waits until `f` holds, at most `bound`; the time it took.
fn eventually(what: &str, bound: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < bound, "not within {bound:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

fn reaches(ns: &Path, dst: SocketAddrV4, tag: &str, seen_from: Ipv4Addr) -> bool {
    talk(ns, dst).is_ok_and(|a| a == echo_answer(tag, seen_from, dst))
}

fn refused(ns: &Path, dst: SocketAddrV4) -> bool {
    matches!(talk(ns, dst), Err(e) if e.kind() == io::ErrorKind::ConnectionRefused)
}

fn assert_refused(ns: &Path, dst: SocketAddrV4, what: &str) {
    let got = talk(ns, dst);
    assert!(
        matches!(&got, Err(e) if e.kind() == io::ErrorKind::ConnectionRefused),
        "{what}: expected {dst} to be rejected, got {got:?}"
    );
}

#[test]
#[ignore = "needs postgres/root: run via scripts/test"]
fn c2c_policy_and_dynamic_asgs_end_to_end_on_two_cells() {
    silk_testkit::require_root_and_pg();
    let mut content = PolicyFile {
        policies: vec![policy_a_to_b()],
        security_groups: vec![space_group(FIRST_PORT)],
    };
    let (mut bed, outside, file, bins) = bed_with_policy_server(2, &content);
    let settings = AgentSettings {
        poll_interval_seconds: POLL,
        asg_poll_interval_seconds: POLL,
        enable_asg_syncing: true,
        asg_logging: Some(false),
    };
    for i in 0..2 {
        bed.start_agent(i, &bins.agent, &settings)
            .unwrap_or_else(|e| panic!("agent {i}: {e}\n{}", bed.policy_server_log()));
    }
    let cells: Vec<Garden> = (0..2)
        .map(|i| Garden::new(&bed, i, &bins.wrapper))
        .collect();

    // The containers, through the plugins; each ADD made its cell's agent sync at once.
    let (a, b) = (NsHolder::spawn().unwrap(), NsHolder::spawn().unwrap());
    let conf_a = cells[0].config(APP_A, json!({"netOutRules": []}));
    let conf_b = cells[1].config(APP_B, json!({"netOutRules": []}));
    let (res_b, ip_b) = cells[1].cni.add(HANDLE_B, &b, &conf_b);
    let (res_a, ip_a) = cells[0].cni.add(HANDLE_A, &a, &conf_a);
    let any = |port| SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    let _b8080 = EchoServer::start(b.path(), any(8080), "b-8080").unwrap();
    let _b8081 = EchoServer::start(b.path(), any(8081), "b-8081").unwrap();
    let _a8080 = EchoServer::start(a.path(), any(8080), "a-8080").unwrap();
    let _o1 = EchoServer::start(&outside, any(FIRST_PORT), "outside-1").unwrap();
    let _o2 = EchoServer::start(&outside, any(SECOND_PORT), "outside-2").unwrap();
    let b8080 = SocketAddrV4::new(ip_b, 8080);
    let b8081 = SocketAddrV4::new(ip_b, 8081);
    let a8080 = SocketAddrV4::new(ip_a, 8080);

    // c2c by policy (the first wait also covers the cells learning each other's leases).
    eventually(
        "A reaches B:8080 by policy",
        Duration::from_secs(60),
        || reaches(a.path(), b8080, "b-8080", ip_a),
    );
    assert_refused(a.path(), b8081, "A -> B:8081 (port outside the policy)");
    assert_refused(b.path(), a8080, "B -> A (no policy that way)");
    let vpa_rules = |c: &Garden| -> Vec<String> {
        c.filter()
            .lines()
            .filter(|l| l.starts_with("-A vpa--"))
            .map(String::from)
            .collect()
    };
    assert!(
        vpa_rules(&cells[0])
            .iter()
            .any(|l| l.contains(&format!("-s {ip_a}/32")) && l.contains("MARK")),
        "cell 0 marks A: {:?}",
        vpa_rules(&cells[0])
    );

    // The policy goes away in the server: revoked within a few polls, and back.
    content.policies.clear();
    write_file(&file, &content).unwrap();
    let revoked = eventually("policy removal revokes A -> B", WITHIN, || {
        refused(a.path(), b8080)
    });
    content.policies.push(policy_a_to_b());
    write_file(&file, &content).unwrap();
    let restored = eventually("policy added back restores A -> B", WITHIN, || {
        reaches(a.path(), b8080, "b-8080", ip_a)
    });

    // ASGs: A's space allows the outside host's first port only (masqueraded to cell 0).
    let first = SocketAddrV4::new(OUTSIDE_IP, FIRST_PORT);
    let second = SocketAddrV4::new(OUTSIDE_IP, SECOND_PORT);
    let seen = cells[0].underlay_ip;
    assert!(
        reaches(a.path(), first, "outside-1", seen),
        "A -> outside:{FIRST_PORT} allowed by its ASG"
    );
    assert_refused(a.path(), second, "A -> outside port without an ASG");
    let asg_chain = silk_dataplane::iptables::ChainName::asg(HANDLE_A);
    let netout = silk_dataplane::iptables::ChainName::netout(HANDLE_A);
    let saved = cells[0].filter();
    assert!(
        saved.contains(&format!("-A {netout} -j {asg_chain}")),
        "netout jumps to the agent's chain: {saved}"
    );
    let mut open = Conn::open(a.path(), first).unwrap();
    assert_eq!(
        open.exchange("before").unwrap(),
        format!("outside-1 {seen} before\n")
    );

    // The space's group changes to the second port: egress follows with no restart, and the
    // connection opened while the first port was allowed carries on.
    let agent_pids: Vec<Option<u32>> = (0..2).map(|i| bed.agent_pid(i)).collect();
    content.security_groups = vec![space_group(SECOND_PORT)];
    write_file(&file, &content).unwrap();
    let swapped = eventually("ASG change reaches A's egress", WITHIN, || {
        reaches(a.path(), second, "outside-2", seen)
    });
    eventually("the first port is no longer allowed", WITHIN, || {
        refused(a.path(), first)
    });
    assert_eq!(
        open.exchange("after").unwrap(),
        format!("outside-1 {seen} after\n"),
        "established connection across the ASG swap"
    );
    for (i, pid) in agent_pids.into_iter().enumerate() {
        assert!(bed.agent_running(i), "agent {i}: {}", bed.agent_log(i));
        assert_eq!(bed.agent_pid(i), pid, "agent {i} was not restarted");
        assert!(bed.daemon_running(i), "daemon {i}: {}", bed.daemon_log(i));
    }
    drop(open);

    // DEL: the wrapper's chains and, through the agent's cleanup, its asg- chain go.
    cells[0].cni.del(HANDLE_A, &a, conf_a, &res_a);
    cells[1].cni.del(HANDLE_B, &b, conf_b, &res_b);
    for (i, c) in cells.iter().enumerate() {
        let saved = c.filter();
        for h in [HANDLE_A, HANDLE_B] {
            for chain in [
                silk_dataplane::iptables::ChainName::asg(h),
                silk_dataplane::iptables::ChainName::netout(h),
            ] {
                assert!(
                    !saved.contains(&format!(":{chain} ")),
                    "cell {i}: {chain} left: {saved}"
                );
            }
        }
        assert_eq!(
            std::fs::read_to_string(&c.store).unwrap(),
            "{}\n",
            "cell {i}: metadata store"
        );
    }
    eprintln!(
        "policy removal revoked after {:.2}s, re-added after {:.2}s, ASG change applied after {:.2}s (poll {POLL}s)",
        revoked.as_secs_f64(),
        restored.as_secs_f64(),
        swapped.as_secs_f64()
    );
}

/// What docs/policy-agent.md says an upgrade from static to dynamic ASGs does to a running
/// container: its netout chain moves to the agent's `asg-` chain at the restarted agent's first
/// ASG cycle, its egress then follows the policy server, and an open connection survives.
#[test]
#[ignore = "needs postgres/root: run via scripts/test"]
fn upgrade_from_static_to_dynamic_asgs_moves_a_running_container() {
    silk_testkit::require_root_and_pg();
    // The server grants the second port only; the container's static rules the first.
    let content = PolicyFile {
        policies: vec![],
        security_groups: vec![space_group(SECOND_PORT)],
    };
    let (mut bed, outside, _file, bins) = bed_with_policy_server(1, &content);
    let static_agent = AgentSettings {
        poll_interval_seconds: POLL,
        asg_poll_interval_seconds: POLL,
        enable_asg_syncing: false,
        asg_logging: Some(false),
    };
    bed.start_agent(0, &bins.agent, &static_agent).unwrap();
    let cell = Garden::new(&bed, 0, &bins.wrapper);
    let a = NsHolder::spawn().unwrap();
    let rules = json!([{"protocol": 1, "networks": [{"start": OUTSIDE_IP, "end": OUTSIDE_IP}],
                        "ports": [{"start": FIRST_PORT, "end": FIRST_PORT}]}]);
    let conf = cell.config(APP_A, json!({"netOutRules": rules}));
    let (res, _) = cell.cni.add(HANDLE_A, &a, &conf);
    let any = |port| SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    let _o1 = EchoServer::start(&outside, any(FIRST_PORT), "outside-1").unwrap();
    let _o2 = EchoServer::start(&outside, any(SECOND_PORT), "outside-2").unwrap();
    let first = SocketAddrV4::new(OUTSIDE_IP, FIRST_PORT);
    let second = SocketAddrV4::new(OUTSIDE_IP, SECOND_PORT);
    let seen = cell.underlay_ip;
    let asg_chain = silk_dataplane::iptables::ChainName::asg(HANDLE_A);

    // Static: Garden's rules decide.
    assert!(reaches(a.path(), first, "outside-1", seen), "static rule");
    assert_refused(a.path(), second, "no static rule for the second port");
    assert!(!cell.filter().contains(&format!(":{asg_chain} ")));
    let mut open = Conn::open(a.path(), first).unwrap();
    assert_eq!(
        open.exchange("static").unwrap(),
        format!("outside-1 {seen} static\n")
    );

    // The deploy turns enable_asg_syncing on and restarts the agent; the container stays.
    bed.stop_agent(0).unwrap();
    bed.start_agent(
        0,
        &bins.agent,
        &AgentSettings {
            enable_asg_syncing: true,
            ..static_agent
        },
    )
    .unwrap();
    let moved = eventually(
        "the running container's egress follows the server",
        WITHIN,
        || reaches(a.path(), second, "outside-2", seen),
    );
    assert_refused(a.path(), first, "the static rule is gone");
    let netout = silk_dataplane::iptables::ChainName::netout(HANDLE_A);
    let saved = cell.filter();
    let netout_rules: Vec<&str> = saved
        .lines()
        .filter(|l| l.starts_with(&format!("-A {netout} ")))
        .collect();
    assert_eq!(
        netout_rules,
        [
            format!("-A {netout} -j {asg_chain}"),
            format!("-A {netout} -j REJECT --reject-with icmp-port-unreachable"),
        ]
    );
    assert_eq!(
        open.exchange("dynamic").unwrap(),
        format!("outside-1 {seen} dynamic\n"),
        "connection opened under the static rules"
    );
    drop(open);
    cell.cni.del(HANDLE_A, &a, conf, &res);
    assert!(!cell.filter().contains(&format!(":{asg_chain} ")));
    eprintln!(
        "static to dynamic: the running container moved {:.2}s after the agent restarted (asg poll {POLL}s)",
        moved.as_secs_f64()
    );
}
