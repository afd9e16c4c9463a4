//! silk-daemon-bootstrap's tag request against the lab policy server over real mutual TLS on
//! 127.0.0.1, through silk-client's policy client; and a client certificate the server does
//! not trust failing the request.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use silk_daemon::bootstrap::{fetch_tag, BootstrapConfig};
use silk_lab::policy_server::data::{FilePolicy, PolicyFile};
use silk_lab::policy_server::{write_file, LabPolicyServer, ServerOptions};
use silk_testkit::certs::{path_str, ServerKey, TestCerts};

fn config(certs: &TestCerts, url: String, foreign: bool) -> BootstrapConfig {
    let (cert, key) = if foreign {
        (&certs.other_client_cert, &certs.other_client_key)
    } else {
        (&certs.client_cert, &certs.client_key)
    };
    BootstrapConfig {
        policy_server_url: url,
        policy_server_ca_cert_file: path_str(&certs.ca_cert).into(),
        policy_client_cert_file: path_str(cert).into(),
        policy_client_key_file: path_str(key).into(),
        iptables_lock_file: String::new(),
        single_ip_only: true,
    }
}

#[tokio::test]
async fn asks_the_policy_server_for_the_router_tag_over_mtls() {
    let certs = TestCerts::generate(ServerKey::Ecdsa).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policies.json");
    let file = PolicyFile {
        policies: vec![FilePolicy::new("app-a", "app-b", "tcp", 8080, 8080)],
        security_groups: vec![],
    };
    write_file(&path, &file).unwrap();
    let server = LabPolicyServer::start(ServerOptions::loopback(&certs, &path)).unwrap();
    let url = server.url("localhost");

    let tag = fetch_tag(&config(&certs, url.clone(), false))
        .await
        .unwrap();
    // app-a and app-b hold 0001 and 0002; the router gets the next one, and the same one again.
    assert_eq!(tag, "0003");
    assert_eq!(
        fetch_tag(&config(&certs, url.clone(), false))
            .await
            .unwrap(),
        tag
    );
    let puts: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.contains("/networking/v1/internal/tags"))
        .collect();
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert!(puts[0].starts_with("PUT "), "{puts:?}");

    let e = fetch_tag(&config(&certs, url, true)).await.unwrap_err();
    assert!(e.to_string().starts_with("policy server request: "), "{e}");
    server.stop();
}
