//! End to end on the multi-cell test bed: real silk-controller, PostgreSQL, silk-daemons, one
//! vxlan-policy-agent per cell (dynamic ASGs on, as cf-deployment runs it) against the lab
//! policy server, and containers (namespaces held by a process) created through each cell's
//! conflist (rendered from the silk-cni job's template: cni-wrapper-plugin with silk-cni, then
//! bandwidth) invoked in the cell's namespace as garden-external-networker invokes it.
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
use silk_lab::fabric::render::AgentSettings;
use silk_lab::fabric::vcap::VcapUser;
use silk_lab::fabric::{garden, sibling_binary, Binaries, Options, Testbed};
use silk_lab::policy_server::data::{
    AsgRule, FilePolicy, FileRules, FileSecurityGroup, PolicyFile,
};
use silk_lab::policy_server::write_file;
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

/// One cell's CNI side: the fabric's garden-external-networker running the cell's conflist,
/// rendered from the silk-cni job's template (with iptables logging off, as these tests read
/// the chains without LOG rules).
struct Garden {
    _vcap: VcapUser,
    ns: PathBuf,
    store: PathBuf,
    underlay_ip: Ipv4Addr,
    garden: garden::Garden,
}

impl Garden {
    fn new(bed: &Testbed, i: usize, plugin_dir: &Path) -> Garden {
        bed.render_conflist(i, &json!({"properties/iptables_logging": false}))
            .unwrap();
        let c = &bed.cells[i];
        Garden {
            _vcap: VcapUser::ensure().unwrap(),
            ns: c.ns.path().to_path_buf(),
            store: c.metadata_store(),
            underlay_ip: c.underlay_ip,
            garden: c.garden(plugin_dir),
        }
    }

    /// ADD through the conflist for container `handle` of `app` (garden's metadata as Diego
    /// sets it, `net_out_rules` as its runtime config); the container's IPv4 address.
    fn add(&self, handle: &str, holder: &NsHolder, app: &str, net_out_rules: Value) -> Ipv4Addr {
        let result = self
            .garden
            .up(&garden::Container {
                handle: handle.into(),
                netns: holder.path().to_path_buf(),
                metadata: json!({"app_id": app, "container_workload": "app", "org_id": ORG,
                                 "policy_group_id": app, "ports": "8080", "space_id": SPACE}),
                port_mappings: json!([]),
                net_out_rules,
            })
            .unwrap_or_else(|e| panic!("ADD {handle}: {e}"));
        garden::result_ipv4(&result).unwrap_or_else(|| panic!("no IPv4 in {result}"))
    }

    /// DEL through the conflist, in reverse, with the cached result.
    fn del(&self, handle: &str, holder: &NsHolder) {
        self.garden
            .down(handle, holder.path())
            .unwrap_or_else(|e| panic!("DEL {handle}: {e}"));
    }

    fn filter(&self) -> String {
        run_in_ok(&self.ns, &["iptables-save", "-t", "filter"]).unwrap()
    }
}

/// The binaries the tests run.
struct Bins {
    lab: PathBuf,
    agent: PathBuf,
    /// Where the CNI plugins are (`CNI_PATH`).
    plugins: PathBuf,
}

/// A bed of `cells` cells with an "outside" host on the underlay, the controller, the daemons
/// and the lab policy server serving `content` from a file; the bed, the outside host's
/// namespace, the file and the binaries.
fn bed_with_policy_server(cells: usize, content: &PolicyFile) -> (Testbed, PathBuf, PathBuf, Bins) {
    let lab = PathBuf::from(env!("CARGO_BIN_EXE_silk-lab"));
    let dir = lab.parent().unwrap().to_path_buf();
    let bins = Bins {
        agent: sibling_binary(&dir, "vxlan-policy-agent", "vxlan-policy-agent").unwrap(),
        plugins: dir.clone(),
        lab,
    };
    for plugin in ["cni-wrapper-plugin", "silk-cni", "bandwidth"] {
        sibling_binary(&dir, plugin, plugin).unwrap();
    }
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
        .map(|i| Garden::new(&bed, i, &bins.plugins))
        .collect();

    // The containers, through the plugins; each ADD made its cell's agent sync at once.
    let (a, b) = (NsHolder::spawn().unwrap(), NsHolder::spawn().unwrap());
    let ip_b = cells[1].add(HANDLE_B, &b, APP_B, json!([]));
    let ip_a = cells[0].add(HANDLE_A, &a, APP_A, json!([]));
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
    cells[0].del(HANDLE_A, &a);
    cells[1].del(HANDLE_B, &b);
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
    let cell = Garden::new(&bed, 0, &bins.plugins);
    let a = NsHolder::spawn().unwrap();
    let rules = json!([{"protocol": 1, "networks": [{"start": OUTSIDE_IP, "end": OUTSIDE_IP}],
                        "ports": [{"start": FIRST_PORT, "end": FIRST_PORT}]}]);
    cell.add(HANDLE_A, &a, APP_A, rules);
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
    cell.del(HANDLE_A, &a);
    assert!(!cell.filter().contains(&format!(":{asg_chain} ")));
    eprintln!(
        "static to dynamic: the running container moved {:.2}s after the agent restarted (asg poll {POLL}s)",
        moved.as_secs_f64()
    );
}
