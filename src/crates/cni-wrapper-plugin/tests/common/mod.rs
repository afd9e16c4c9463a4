//! A cell in a test namespace for the wrapper's binary tests: a veth `eth0` carrying the cell
//! IP, silk-daemon's network-info endpoint and vxlan-policy-agent's local endpoints served on
//! 127.0.0.1, state directories in a temp dir, and the real plugin binaries in `CNI_PATH`.

#![allow(clippy::unwrap_used, dead_code)] // test fixture: panics are the failure report

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use silk_dataplane::iptables::{Family, Iptables, SystemIptables};
use silk_testkit::netns::{output_with_stdin, run_ok, unshare_test_netns};

pub const CELL_IP: &str = "10.0.16.15";

/// Serves fixed responses per path prefix and records request lines. With `asg_status` 200 and
/// `acts_as_agent` set it also does what a dynamic vxlan-policy-agent does before answering: one
/// restore giving the container an `asg-…` chain (established, then REJECT) and its netout
/// chain the jump to it followed by REJECT (policy contract §3.7.5).
pub struct FakeServer {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<String>>>,
    pub asg_status: Arc<AtomicU16>,
    pub acts_as_agent: Arc<AtomicBool>,
}

/// The payload a dynamic agent's forced sync writes for `handle` (no ASG rules granted).
pub fn dynamic_agent_payload(handle: &str) -> String {
    let asg = silk_dataplane::iptables::ChainName::asg(handle);
    let netout = silk_dataplane::iptables::ChainName::netout(handle);
    format!(
        "*filter\n:{asg} - [0:0]\n:{netout} - [0:0]\n\
         -A {asg} -m state --state RELATED,ESTABLISHED -j ACCEPT\n\
         -A {asg} -j REJECT --reject-with icmp-port-unreachable\n\
         -A {netout} -j {asg}\n\
         -A {netout} -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n"
    )
}

pub fn serve(daemon_body: &'static str) -> FakeServer {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let asg_status = Arc::new(AtomicU16::new(405));
    let acts_as_agent = Arc::new(AtomicBool::new(false));
    let (reqs, status, acts) = (requests.clone(), asg_status.clone(), acts_as_agent.clone());
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let (reqs, status, acts) = (reqs.clone(), status.clone(), acts.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let n = c.read(&mut buf).unwrap_or(0);
                let line = String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                reqs.lock().unwrap().push(line.clone());
                let (code, body) = if line.starts_with("GET /force-asgs-for-container") {
                    let s = status.load(Ordering::SeqCst);
                    let handle = line
                        .split_once("container=")
                        .and_then(|(_, rest)| rest.split_whitespace().next())
                        .unwrap_or("");
                    if s == 200 && acts.load(Ordering::SeqCst) && !handle.is_empty() {
                        // The agent's restore: no lock taken here, the restore waits (-w)
                        SystemIptables::new("unused.lock")
                            .restore(Family::V4, &dynamic_agent_payload(handle))
                            .unwrap();
                    }
                    (
                        s,
                        if s == 405 {
                            "ASG syncing has been disabled administratively"
                        } else {
                            "updated"
                        },
                    )
                } else if line.starts_with("GET /force") {
                    (200, "")
                } else {
                    (200, daemon_body)
                };
                // One write: a split response meets Nagle and delayed ACK (40 ms a request).
                let resp = format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(resp.as_bytes());
            });
        }
    });
    FakeServer {
        port,
        requests,
        asg_status,
        acts_as_agent,
    }
}

pub struct Cell {
    pub dir: tempfile::TempDir,
    pub server: FakeServer,
    pub cni_path: PathBuf,
    /// The rendered conflist gives the metadata store to `vcap`.
    _vcap: silk_lab::fabric::vcap::VcapUser,
}

pub fn plugin_dir() -> PathBuf {
    let wrapper = PathBuf::from(env!("CARGO_BIN_EXE_cni-wrapper-plugin"));
    let dir = wrapper.parent().unwrap().to_path_buf();
    if !dir.join("silk-cni").exists() {
        // `cargo test -p cni-wrapper-plugin` alone does not build the delegate; build it.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "silk-cni"])
            .status()
            .unwrap();
        assert!(st.success(), "building silk-cni failed");
    }
    assert!(
        dir.join("silk-cni").exists(),
        "silk-cni binary not next to the wrapper"
    );
    dir
}

impl Cell {
    /// Enters a fresh namespace (this thread) and sets the cell up in it.
    pub fn new() -> Cell {
        Cell::with_daemon(r#"{"overlay_subnet":"10.255.30.0/24","mtu":1450}"#)
    }

    /// As [`Cell::new`], with silk-daemon's network info answering `daemon_body`.
    pub fn with_daemon(daemon_body: &'static str) -> Cell {
        silk_testkit::require_root();
        unshare_test_netns().unwrap();
        run_ok(&[
            "ip",
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0-peer",
        ])
        .unwrap();
        run_ok(&["ip", "addr", "add", &format!("{CELL_IP}/24"), "dev", "eth0"]).unwrap();
        run_ok(&["ip", "link", "set", "eth0", "up"]).unwrap();
        let server = serve(daemon_body);
        Cell {
            dir: tempfile::tempdir().unwrap(),
            server,
            cni_path: plugin_dir(),
            _vcap: silk_lab::fabric::vcap::VcapUser::ensure().unwrap(),
        }
    }

    /// `rel` under the cell's data directory (`<root>/data`, as the rendered conflist puts it).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join("data").join(rel)
    }

    /// The wrapper entry of the silk-cni job's conflist, rendered from the release's template
    /// with the state under this cell's temp dir, silk-daemon's and the agent's port as this
    /// cell's server, iptables logging off, and `metadata` / `runtimeConfig` injected as libcni
    /// passes them.
    pub fn config(
        &self,
        metadata: serde_json::Value,
        runtime: serde_json::Value,
    ) -> serde_json::Value {
        let text = silk_lab::fabric::render::cni_conflist_with(
            self.dir.path(),
            CELL_IP.parse().unwrap(),
            &serde_json::json!({
                "properties/iptables_logging": false,
                "properties/no_masquerade_cidr_range": "10.255.0.0/16",
                "properties/silk_daemon/listen_port": self.server.port,
                "links/vpa/properties/force_policy_poll_cycle_port": self.server.port,
            }),
        )
        .unwrap();
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut conf = silk_lab::fabric::garden::conf_for(
            &list,
            &list["plugins"][0],
            silk_lab::fabric::garden::Call::Add {
                metadata: &metadata,
                runtime: &runtime,
                prev: None,
            },
        );
        assert_eq!(conf["type"], "cni-wrapper-plugin");
        conf["metadata"] = metadata;
        conf
    }
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
}

/// Invokes the wrapper as libcni does.
pub fn cni(
    cell_path: &Path,
    cmd: &str,
    id: &str,
    netns: &str,
    stdin: &str,
    env_drop: &[&str],
) -> Out {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cni-wrapper-plugin"));
    silk_testkit::cni::cni_env(&mut c, cmd, id, netns, cell_path);
    for k in env_drop {
        c.env_remove(k);
    }
    let o = output_with_stdin(&mut c, stdin.as_bytes()).unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// iptables-save of this namespace (v4, all tables).
pub fn save() -> String {
    run_ok(&["iptables-save"]).unwrap()
}

/// Rules and user chains of this namespace (v4), normalised; empty tables and builtin chains
/// are left out (the nft backend creates tables on first use).
pub fn rules_and_chains() -> Vec<String> {
    silk_dataplane::iptables::save::normalize(&save())
        .into_iter()
        .filter(|l| {
            !(l.starts_with('*') || l == "COMMIT" || (l.starts_with(':') && l.contains(" ACCEPT ")))
        })
        .collect()
}

/// Interfaces in this namespace other than lo and eth0.
pub fn extra_links() -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&run_ok(&["ip", "-j", "link", "show"]).unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(String::from))
        .filter(|n| n != "lo" && n != "eth0" && n != "eth0-peer")
        .collect()
}
