//! Shared by the netns tests: a fake policy server (HTTPS, client certificates required), the
//! agent as a child process, its config, the metadata store of the worked example, and helpers
//! reading the live `vpa--` chain.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // shared test helpers

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde_json::json;
use silk_dataplane::datastore::MetadataStore;
use silk_testkit::certs::{path_str, TestCerts};
use silk_testkit::netns::run_ok;

pub const BACKEND: &str = "6f1e4f5a-1b2c-4d3e-8f9a-0b1c2d3e4f5a";
pub const FRONTEND: &str = "1d2e3f4a-5b6c-4d7e-8f90-a1b2c3d4e5f6";
pub const BACKEND_APP: &str = "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13";
pub const FRONTEND_APP: &str = "0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f";
pub const SPACE: &str = "7d2c0e5a-9b1f-4a3c-8e6d-2f1a0b9c8d7e";

/// The policy contract's §1.3 example policies.
pub fn policy(
    src: &str,
    src_tag: &str,
    dst: &str,
    proto: &str,
    start: u32,
    end: u32,
) -> serde_json::Value {
    json!({"source": {"id": src, "tag": src_tag},
           "destination": {"id": dst, "tag": "0002", "protocol": proto, "ports": {"start": start, "end": end}}})
}

pub fn example_policies() -> Vec<serde_json::Value> {
    vec![
        policy(FRONTEND_APP, "0001", BACKEND_APP, "tcp", 8080, 8080),
        policy(
            "9e4d2c1b-6a5f-4e3d-8c2b-1a0f9e8d7c6b",
            "0003",
            BACKEND_APP,
            "udp",
            9000,
            9100,
        ),
        policy(
            BACKEND_APP,
            "0002",
            "51d0e8a7-3b6c-4f29-a8d4-0e7f6c5b4a39",
            "tcp",
            5432,
            5432,
        ),
    ]
}

/// §3.12's `vpa--` rules, without `-A <chain> `.
pub const WORKED_EXAMPLE: [&str; 4] = [
    r#"-s 10.255.7.3/32 -m comment --comment "src:0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f" -j MARK --set-xmark 0x1/0xffffffff"#,
    r#"-s 10.255.7.4/32 -m comment --comment "src:c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13" -j MARK --set-xmark 0x2/0xffffffff"#,
    r#"-d 10.255.7.4/32 -p tcp -m tcp --dport 8080 -m mark --mark 0x1 -m comment --comment "src:0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f_dst:c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13" -j ACCEPT"#,
    r#"-d 10.255.7.4/32 -p udp -m udp --dport 9000:9100 -m mark --mark 0x3 -m comment --comment "src:9e4d2c1b-6a5f-4e3d-8c2b-1a0f9e8d7c6b_dst:c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13" -j ACCEPT"#,
];

// === fake policy server ===

#[derive(Default)]
pub struct FakeState {
    pub policies: Vec<serde_json::Value>,
    pub last_updated: i64,
    /// Request lines seen (`GET /path?query`).
    requests: Vec<String>,
    /// Bodies of the PUT requests.
    pub bodies: Vec<String>,
}

/// An HTTPS policy server on 127.0.0.1 that requires a client certificate from the test CA.
/// One thread per connection, `Connection: close` on every answer. [`FakeServer::stop`]
/// closes the listener, so later connections are refused.
pub struct FakeServer {
    pub port: u16,
    pub state: Arc<Mutex<FakeState>>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

pub fn server_config(certs: &TestCerts) -> Arc<ServerConfig> {
    let pem = |p: &Path| std::fs::read(p).unwrap();
    let mut roots = RootCertStore::empty();
    for c in silk_client::tls::parse_certs("ca", &pem(&certs.ca_cert)).unwrap() {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let chain = silk_client::tls::parse_certs("server", &pem(&certs.server_cert)).unwrap();
    let key = silk_client::tls::parse_key(&pem(&certs.server_key)).unwrap();
    Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

pub fn answer(state: &Mutex<FakeState>, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    let mut s = state.lock().unwrap();
    s.requests.push(format!("{method} {target}"));
    if method == "PUT" {
        s.bodies.push(String::from_utf8_lossy(body).into_owned());
    }
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/networking/v1/internal/policies") => {
            let ids: Option<Vec<&str>> = target
                .split_once("?id=")
                .map(|(_, q)| q.split(',').collect());
            let policies: Vec<_> = s
                .policies
                .iter()
                .filter(|p| {
                    ids.as_ref().is_none_or(|ids| {
                        ids.contains(&p["source"]["id"].as_str().unwrap())
                            || ids.contains(&p["destination"]["id"].as_str().unwrap())
                    })
                })
                .cloned()
                .collect();
            let body = json!({"total_policies": policies.len(), "policies": policies});
            (200, body.to_string())
        }
        ("GET", "/networking/v1/internal/policies_last_updated") => {
            (200, s.last_updated.to_string())
        }
        ("PUT", "/networking/v1/internal/tags") => (
            200,
            r#"{"id":"INGRESS_ROUTER","tag":"0006","type":"router"}"#.into(),
        ),
        _ => (404, "404 page not found\n".into()),
    }
}

pub fn serve_one(config: Arc<ServerConfig>, tcp: TcpStream, state: Arc<Mutex<FakeState>>) {
    tcp.set_nonblocking(false).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        match tls.read_line(&mut line) {
            Ok(0) | Err(_) => return, // handshake refused or peer gone
            Ok(_) if line == "\r\n" => break,
            Ok(_) => head.push(line),
        }
    }
    let Some(request_line) = head.first() else {
        return;
    };
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let length: usize = head
        .iter()
        .find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    if tls.read_exact(&mut body).is_err() {
        return;
    }
    let (code, text) = answer(&state, method, target, &body);
    let reply = format!(
        "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let stream = tls.get_mut();
    let _ = stream.write_all(reply.as_bytes());
    let _ = stream.flush();
    stream.conn.send_close_notify();
    let _ = stream.flush();
}

impl FakeServer {
    pub fn start(certs: &TestCerts, policies: Vec<serde_json::Value>) -> FakeServer {
        let config = server_config(certs);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(FakeState {
            policies,
            last_updated: 1729785226123456000,
            requests: vec![],
            bodies: vec![],
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((tcp, _)) => {
                            let (config, state) = (Arc::clone(&config), Arc::clone(&state));
                            thread::spawn(move || serve_one(config, tcp, state));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        FakeServer {
            port,
            state,
            stop,
            accept: Some(accept),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            t.join().unwrap();
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// === helpers ===

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP request to 127.0.0.1:`port`: (status, body).
pub fn http(method: &str, port: u16, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http("GET", port, path, "")
}

pub struct Agent {
    child: Child,
}

impl Agent {
    pub fn spawn(config: &Path) -> Agent {
        Self::spawn_logged(config, None)
    }

    /// With the lager lines (stdout) appended to `log` when given.
    pub fn spawn_logged(config: &Path, log: Option<&Path>) -> Agent {
        let stdout = match log {
            Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
            None => Stdio::null(),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_vxlan-policy-agent"))
            .arg(format!("-config-file={}", config.display()))
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Agent { child }
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM to this child only, then its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the agent with the config at `config`, expecting it to exit 1 at start-up; returns
/// its stderr.
pub fn agent_fails_to_start(config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vxlan-policy-agent"))
        .arg(format!("-config-file={}", config.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

pub fn write_config(
    dir: &Path,
    certs: &TestCerts,
    server_port: u16,
    force_port: u16,
    debug_port: u16,
) -> std::path::PathBuf {
    let config = json!({
        "log_level": "debug",
        "log_prefix": "cfnetworking",
        "iptables_c2c_logging": false,
        "iptables_asg_logging": false,
        "iptables_accepted_udp_logs_per_sec": 100,
        "poll_interval": 1,
        "enable_asg_syncing": false,
        "asg_poll_interval": 60,
        "iptables_denied_logs_per_sec": 1,
        "deny_networks": {"always": [], "running": [], "staging": []},
        "outbound_connections": {"limit": false, "logging": false, "burst": 1000, "rate_per_sec": 100},
        "policy_server_url": format!("https://127.0.0.1:{server_port}"),
        "metron_address": format!("127.0.0.1:{}", free_port()),
        "underlay_ips": ["127.0.0.1"],
        "debug_server_port": debug_port,
        "force_policy_poll_cycle_port": force_port,
        "enable_overlay_ingress_rules": false,
        "disable_container_network_policy": false,
        "overlay_network": ["10.255.0.0/16"],
        "ca_cert_file": path_str(&certs.ca_cert),
        "client_cert_file": path_str(&certs.client_cert),
        "client_key_file": path_str(&certs.client_key),
        "cni_datastore_path": dir.join("store.json"),
        "iptables_lock_file": dir.join("iptables.lock"),
        "debug_server_host": "127.0.0.1",
        "client_timeout_seconds": 5,
        "vni": 1,
        "force_policy_poll_cycle_host": "127.0.0.1",
        "loggregator": {"loggregator_use_v2_api": false}
    });
    let path = dir.join("vxlan-policy-agent.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// Sets top-level keys of the config file at `path`.
pub fn patch_config(path: &Path, patch: serde_json::Value) {
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for (k, v) in patch.as_object().unwrap() {
        config[k] = v.clone();
    }
    std::fs::write(path, config.to_string()).unwrap();
}

/// The lines of `iptables-save -t filter` that mention a `vpa--` chain, with every jump to a
/// `vpa-d-` group chain replaced by that chain's rules behind the jump's `-d`: upstream's
/// single chain, which the agent's layout must equal rule for rule.
pub fn vpa_lines() -> Vec<String> {
    let saved = run_ok(&["iptables-save", "-t", "filter"]).unwrap();
    let group_rules = |chain: &str| -> Vec<String> {
        saved
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("-A {chain} ")))
            .map(str::to_string)
            .collect()
    };
    let mut out = Vec::new();
    for l in saved.lines().filter(|l| l.contains("vpa--")) {
        let l = l.split(" [").next().unwrap_or(l);
        let jump = l
            .split_once(" -j vpa-d-")
            .filter(|(head, _)| head.starts_with("-A vpa--") && head.contains(" -d "));
        match jump {
            Some((head, group)) => out.extend(
                group_rules(&format!("vpa-d-{group}"))
                    .iter()
                    .map(|r| format!("{head} {r}")),
            ),
            None => out.push(l.to_string()),
        }
    }
    out
}

/// The `vpa-d-` group chains that exist.
pub fn group_chains() -> Vec<String> {
    run_ok(&["iptables-save", "-t", "filter"])
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix(":vpa-d-"))
        .map(|l| format!("vpa-d-{}", l.split_whitespace().next().unwrap()))
        .collect()
}

/// The name of the single `vpa--` chain, if there is exactly one.
pub fn vpa_chain() -> Option<String> {
    let chains: Vec<String> = vpa_lines()
        .iter()
        .filter_map(|l| l.strip_prefix(':'))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    (chains.len() == 1).then(|| chains[0].clone())
}

pub fn expected(chain: &str, rules: &[&str]) -> Vec<String> {
    let mut out = vec![format!(":{chain} -"), format!("-A FORWARD -j {chain}")];
    out.extend(rules.iter().map(|r| format!("-A {chain} {r}")));
    out
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

pub fn store_two_containers(dir: &Path) {
    let store = MetadataStore::new(dir.join("store.json"), None);
    store
        .add(
            BACKEND,
            "10.255.7.4",
            None,
            json!({"app_id": BACKEND_APP, "container_workload": "app", "policy_group_id": BACKEND_APP,
                   "ports": "8080", "space_id": SPACE}),
        )
        .unwrap();
    store
        .add(
            FRONTEND,
            "10.255.7.3",
            None,
            json!({"app_id": FRONTEND_APP, "container_workload": "app", "policy_group_id": FRONTEND_APP,
                   "space_id": SPACE}),
        )
        .unwrap();
}

/// The start of the agent's root tests: a network namespace of the test's own, fresh
/// certificates, a directory whose metadata store holds the two example containers, and the
/// fake policy server answering `policies`.
pub struct Bed {
    pub certs: TestCerts,
    pub dir: tempfile::TempDir,
    pub server: FakeServer,
}

impl Bed {
    pub fn new(policies: Vec<serde_json::Value>) -> Bed {
        silk_testkit::netns::enter_root_test_netns();
        let certs = TestCerts::generate(silk_testkit::certs::ServerKey::Ecdsa).unwrap();
        let dir = tempfile::tempdir().unwrap();
        store_two_containers(dir.path());
        let server = FakeServer::start(&certs, policies);
        Bed { certs, dir, server }
    }
}
