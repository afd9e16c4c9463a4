//! The drain and pre-start helpers refuse a bad config or bad flags with exit 64 before they
//! ask the policy server anything or signal the daemon.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::process::{Command, Stdio};

#[test]
fn bootstrap_refuses_an_invalid_config_before_asking_the_policy_server() {
    let dir = tempfile::tempdir().unwrap();
    let policy = TcpListener::bind("127.0.0.1:0").unwrap();
    policy.set_nonblocking(true).unwrap();
    let config = dir.path().join("bootstrap-config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"policy_server_url":"http://{}","policy_server_ca_cert_file":"/c/ca.crt",
                "policy_client_cert_file":"/c/client.crt","policy_client_key_file":"",
                "iptables_lock_file":"{}/iptables.lock","single_ip_only":true}}"#,
            policy.local_addr().unwrap(),
            dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_silk-daemon-bootstrap"))
        .arg(format!("--config={}", config.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid config: policy_server_url: must be an https URL")
            && err.contains("policy_client_key_file: must not be empty"),
        "{err}"
    );
    assert_eq!(
        policy.accept().unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "the policy server was dialled"
    );
    assert!(!dir.path().join("iptables.lock").exists());

    let missing = Command::new(env!("CARGO_BIN_EXE_silk-daemon-bootstrap"))
        .arg(format!("-config={}/absent.json", dir.path().display()))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("absent.json"));
}

#[test]
fn shutdown_refuses_bad_flags_before_signalling_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Command::new("sleep")
        .arg("60")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pidfile = dir.path().join("silk-daemon.pid");
    std::fs::write(&pidfile, daemon.id().to_string()).unwrap();
    let meta = dir.path().join("store.json");
    for bad in [
        &["--containerMetadataFileCheckInterval", "0"][..],
        &["--silkDaemonTimeout", "two"][..],
        &["--silkDaemonURL", "http://localhost:1/ping"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_silk-daemon-shutdown"))
            .arg(format!("--containerMetadataFile={}", meta.display()))
            .arg(format!("--silkDaemonPidPath={}", pidfile.display()))
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .starts_with("cfnetworking.silk-daemon-shutdown error: invalid config: "),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "{bad:?}: the daemon was signalled"
        );
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();
}
