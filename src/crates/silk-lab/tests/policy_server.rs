//! The lab policy server over real mutual TLS on 127.0.0.1: upstream's bodies through the
//! agent's client and through curl, the file changing under it, and every fault.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::Value;
use silk_client::mtls::MtlsClient;
use silk_client::tls::ClientTls;
use silk_lab::policy_server::data::{
    AsgRule, FilePolicy, FileRules, FileSecurityGroup, PolicyFile,
};
use silk_lab::policy_server::{
    write_file, Fault, FaultKind, LabPolicyServer, Route, ServerOptions,
};
use silk_testkit::certs::{path_str, ServerKey, TestCerts};

fn policy(src: &str, dst: &str, port: u32) -> FilePolicy {
    FilePolicy::new(src, dst, "tcp", port, port)
}

fn group(guid: &str, spaces: &[&str], dest: &str) -> FileSecurityGroup {
    FileSecurityGroup {
        guid: guid.into(),
        name: format!("{guid}-name"),
        rules: FileRules::Rules(vec![AsgRule::new("tcp", dest, "443")]),
        staging_default: false,
        running_default: spaces.is_empty(),
        staging_space_guids: vec![],
        running_space_guids: spaces.iter().map(|s| s.to_string()).collect(),
    }
}

fn start(certs: &TestCerts, file: &Path) -> LabPolicyServer {
    LabPolicyServer::start(ServerOptions::loopback(certs, file)).unwrap()
}

fn client(certs: &TestCerts, server: &LabPolicyServer) -> MtlsClient {
    let tls = ClientTls::from_files(
        path_str(&certs.ca_cert),
        path_str(&certs.client_cert),
        path_str(&certs.client_key),
    )
    .unwrap();
    MtlsClient::new(&server.url("localhost"), &tls, Duration::from_secs(5)).unwrap()
}

async fn get(c: &MtlsClient, path: &str) -> (StatusCode, String) {
    let (s, b) = c.call(Method::GET, path, None).await.unwrap();
    (s, String::from_utf8_lossy(&b).into_owned())
}

const POLICIES: &str = "/networking/v1/internal/policies";
const LAST: &str = "/networking/v1/internal/policies_last_updated";
const GROUPS: &str = "/networking/v1/internal/security_groups";
const GROUPS_LAST: &str = "/networking/v1/internal/security_groups_last_updated";

#[tokio::test]
async fn serves_the_internal_api_over_mtls_and_follows_the_file() {
    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.json");
    let mut file = PolicyFile {
        policies: vec![policy("app-a", "app-b", 8080)],
        security_groups: vec![
            group("g-all", &[], "10.0.0.0/8"),
            group("g-s1", &["s1"], "10.1.0.0/16"),
        ],
    };
    write_file(&path, &file).unwrap();
    let server = start(&certs, &path);
    let c = client(&certs, &server);

    let (s, body) = get(&c, &format!("{POLICIES}?id=app-b")).await;
    assert_eq!(s, 200);
    assert_eq!(
        body,
        r#"{"total_policies":1,"policies":[{"source":{"id":"app-a","tag":"0001"},"destination":{"id":"app-b","tag":"0002","protocol":"tcp","ports":{"start":8080,"end":8080}}}]}"#
    );
    let (_, t0) = get(&c, LAST).await;
    let t0: i64 = t0.parse().unwrap();
    assert_eq!(t0 % 1000, 0);
    let (_, g0) = get(&c, GROUPS_LAST).await;
    let g0: i64 = g0.parse().unwrap();
    let (_, groups) = get(&c, &format!("{GROUPS}?per_page=5000&space_guids=s1")).await;
    let v: Value = serde_json::from_str(&groups).unwrap();
    assert_eq!(v["next"], 0);
    assert_eq!(v["security_groups"].as_array().unwrap().len(), 2);
    let rules: Value =
        serde_json::from_str(v["security_groups"][1]["rules"].as_str().unwrap()).unwrap();
    assert_eq!(rules[0]["destination"], "10.1.0.0/16");
    let (s, tag) = c
        .call(
            Method::PUT,
            "/networking/v1/internal/tags",
            Some(br#"{"ID":"INGRESS_ROUTER","Type":"router"}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(
        (s.as_u16(), String::from_utf8_lossy(&tag).as_ref()),
        (
            200,
            r#"{"id":"INGRESS_ROUTER","tag":"0003","type":"router"}"#
        )
    );

    // curl, another TLS stack: the HSTS header, and no answer without a client certificate.
    let port = server.addr().port();
    let url = format!("https://localhost:{port}{LAST}");
    let out = Command::new("curl")
        .args(["-s", "-i", "-m", "5", "--cacert", path_str(&certs.ca_cert)])
        .args([
            "--cert",
            path_str(&certs.client_cert),
            "--key",
            path_str(&certs.client_key),
        ])
        .arg(&url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        text.contains("strict-transport-security: max-age=31536000"),
        "{text}"
    );
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "--cacert", path_str(&certs.ca_cert), &url])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "served a client without a certificate"
    );
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "--cacert", path_str(&certs.ca_cert)])
        .args([
            "--cert",
            path_str(&certs.other_client_cert),
            "--key",
            path_str(&certs.other_client_key),
            &url,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "served a client of another CA");

    // The file changes: policies move, groups do not.
    file.policies.push(policy("app-b", "app-a", 9090));
    write_file(&path, &file).unwrap();
    let (_, t1) = get(&c, LAST).await;
    assert!(t1.parse::<i64>().unwrap() > t0);
    assert_eq!(get(&c, GROUPS_LAST).await.1.parse::<i64>().unwrap(), g0);
    let (_, body) = get(&c, POLICIES).await;
    assert!(body.starts_with(r#"{"total_policies":2,"#), "{body}");
    // A group changes: groups move.
    file.security_groups[1].running_space_guids = vec!["s2".into()];
    write_file(&path, &file).unwrap();
    assert!(get(&c, GROUPS_LAST).await.1.parse::<i64>().unwrap() > g0);
    let (_, groups) = get(&c, &format!("{GROUPS}?space_guids=s1")).await;
    assert!(!groups.contains("g-s1"), "{groups}");

    // A broken file is refused and the last good content stays.
    std::fs::write(&path, "{\"policies\": [").unwrap();
    let (_, body) = get(&c, POLICIES).await;
    assert!(body.starts_with(r#"{"total_policies":2,"#), "{body}");
    assert!(server.load_error().unwrap().contains("parse policies file"));
    write_file(&path, &file).unwrap();
    assert_eq!(server.load_error(), None);
    assert!(server
        .requests()
        .contains(&format!("GET {GROUPS}?per_page=5000&space_guids=s1")));
}

#[tokio::test]
async fn faults_are_switched_from_the_test() {
    let certs = TestCerts::generate(ServerKey::Ecdsa).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.json");
    let file = PolicyFile {
        policies: vec![policy("app-a", "app-b", 8080)],
        security_groups: vec![
            group("g1", &[], "10.0.0.0/8"),
            group("g2", &[], "10.2.0.0/16"),
            group("g3", &[], "10.3.0.0/16"),
        ],
    };
    write_file(&path, &file).unwrap();
    let server = start(&certs, &path);
    let c = client(&certs, &server);

    server.set_fault(Fault::all(FaultKind::Error500)).unwrap();
    assert_eq!(
        get(&c, POLICIES).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error": "database read failed"}"#.to_string()
        )
    );
    server
        .set_fault(Fault {
            kind: FaultKind::MalformedJson,
            routes: vec![Route::Policies],
        })
        .unwrap();
    let (s, body) = get(&c, POLICIES).await;
    assert_eq!(s, 200);
    assert!(serde_json::from_str::<Value>(&body).is_err());
    assert_eq!(get(&c, LAST).await.0, 200);

    // Pagination, then the second page goes missing.
    server.set_fault(Fault::none()).unwrap();
    server.set_page_size(Some(2));
    let (_, p1) = get(&c, &format!("{GROUPS}?per_page=5000")).await;
    let v: Value = serde_json::from_str(&p1).unwrap();
    assert_eq!(v["next"], 3);
    let (_, p2) = get(&c, &format!("{GROUPS}?per_page=5000&from=3")).await;
    assert!(p2.contains("\"g3\""), "{p2}");
    server
        .set_fault(Fault::all(FaultKind::MissingPage))
        .unwrap();
    assert_eq!(get(&c, &format!("{GROUPS}?per_page=5000")).await.0, 200);
    assert_eq!(
        get(&c, &format!("{GROUPS}?per_page=5000&from=3")).await.0,
        500
    );

    // Down: connections are refused; back up on the same port.
    server.set_fault(Fault::all(FaultKind::Down)).unwrap();
    let fresh = client(&certs, &server);
    let e = fresh.call(Method::GET, LAST, None).await.unwrap_err();
    assert!(e.to_string().contains("connect"), "{e}");
    server.set_fault(Fault::none()).unwrap();
    assert_eq!(get(&fresh, LAST).await.0, 200);
    server.stop();
}

#[test]
fn the_binary_serves_and_takes_faults_on_its_control_port() {
    let certs = TestCerts::generate(ServerKey::Ecdsa).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.json");
    write_file(&path, &PolicyFile::default()).unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port, control) = (free(), free());
    let mut child = Command::new(env!("CARGO_BIN_EXE_silk-lab"))
        .args(["policy-server", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--file", path_str(&path)])
        .args(["--ca-cert", path_str(&certs.ca_cert)])
        .args(["--server-cert", path_str(&certs.server_cert)])
        .args(["--server-key", path_str(&certs.server_key)])
        .args(["--control", &format!("127.0.0.1:{control}")])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl")
            .args(["-s", "-m", "5"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let api = |p: &str| {
        curl(&[
            "--cacert",
            path_str(&certs.ca_cert),
            "--cert",
            path_str(&certs.client_cert),
            "--key",
            path_str(&certs.client_key),
            &format!("https://localhost:{port}{p}"),
        ])
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while api(POLICIES).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "server did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(api(POLICIES), r#"{"total_policies":0,"policies":[]}"#);
    let ctl = format!("http://127.0.0.1:{control}");
    curl(&[
        "-X",
        "PUT",
        "--data",
        r#"{"fault": {"kind": "error500"}}"#,
        &format!("{ctl}/settings"),
    ]);
    assert_eq!(api(POLICIES), r#"{"error": "database read failed"}"#);
    curl(&[
        "-X",
        "PUT",
        "--data",
        r#"{"fault": {"kind": "down"}}"#,
        &format!("{ctl}/settings"),
    ]);
    assert_eq!(api(POLICIES), "");
    curl(&["-X", "PUT", "--data", "{}", &format!("{ctl}/settings")]);
    assert_eq!(api(POLICIES), r#"{"total_policies":0,"policies":[]}"#);
    let state: Value = serde_json::from_str(&curl(&[&format!("{ctl}/state")])).unwrap();
    assert_eq!(state["policies"], 0);
    let requests: Value = serde_json::from_str(&curl(&[&format!("{ctl}/requests")])).unwrap();
    assert!(requests
        .as_array()
        .unwrap()
        .contains(&Value::String(format!("GET {POLICIES}"))));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
