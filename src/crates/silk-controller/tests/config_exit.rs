//! The binary's command line and start-up failures (control-plane §1.9, §4.2): invalid config
//! exits 64 listing every problem before anything is bound or connected; `-config=` and
//! `--config` both work; start-up failures exit 1 with upstream's one-line error.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;
use silk_testkit::certs::{ServerKey, TestCerts};

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_silk-controller"))
        .args(args)
        .output()
        .expect("run silk-controller");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_config_exits_64_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port();
    // The database points at a port nobody listens on: validation must stop first.
    let text = format!(
        r#"{{"debug_server_port": 0, "health_check_port": 19683, "listen_host": "127.0.0.1", "listen_port": {api_port},
        "ca_cert_file": "", "server_cert_file": "/x/server.crt", "server_key_file": "/x/server.key",
        "network": ["10.255.0.0/16", "10.255.7.0/24"], "subnet_prefix_length": 24,
        "database": {{"type": "oracle", "user": "u", "password": "", "host": "127.0.0.1", "port": 1, "timeout": 0,
          "database_name": "d", "require_ssl": false, "ca_cert": "", "skip_hostname_validation": false}},
        "lease_expiration_seconds": 604800, "metron_port": 3457, "staleness_threshold_seconds": 3600,
        "metrics_emit_seconds": 30, "log_prefix": "cfnetworking", "max_idle_connections": 10,
        "max_open_connections": -1, "connections_max_lifetime_seconds": 3600}}"#
    );
    let path = write_config(dir.path(), "bad.json", &text);
    let (code, stderr) = run(&[&format!("-config={}", path.display())]);
    assert_eq!(code, Some(64), "{stderr}");
    for want in [
        "debug_server_port",
        "ca_cert_file: must be set",
        "network: overlay networks",
        "database.type: unknown driver oracle",
        "database.timeout: must be at least 1",
        "max_open_connections: must be at least 0",
    ] {
        assert!(stderr.contains(want), "{want} missing in {stderr}");
    }
    // Nothing was bound.
    std::net::TcpListener::bind(("127.0.0.1", api_port)).expect("api port still free");

    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("usage: silk-controller -config=<path>"),
        "{stderr}"
    );
    let (code, stderr) = run(&["-config=/nonexistent/silk-controller.json"]);
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("read config /nonexistent/silk-controller.json"),
        "{stderr}"
    );
    let garbage = write_config(dir.path(), "garbage.json", "{\"listen_port\": \"x\"");
    let (code, _) = run(&[&format!("--config={}", garbage.display())]);
    assert_eq!(code, Some(64));
    let typo = write_config(dir.path(), "typo.json", r#"{"listen_prot": 4103}"#);
    let (code, stderr) = run(&["--config", typo.to_str().unwrap()]);
    assert_eq!(code, Some(64));
    assert!(stderr.contains("listen_prot"), "{stderr}");
}

async fn start_up_failures_exit_1_and_double_dash_config_works(engine: Engine) {
    let db = TestDb::create(engine).await;
    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    let ports = (free_port(), free_port(), free_port());
    let good = config_json(&db, &certs, &Settings::default(), ports);

    let missing_key = good.replace(
        certs.server_key.to_str().unwrap(),
        "/nonexistent/server.key",
    );
    let path = write_config(certs.dir(), "nokey.json", &missing_key);
    let (code, stderr) = run(&[&format!("-config={}", path.display())]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with("cfnetworking.silk-controller error: tls: read /nonexistent/server.key"),
        "{stderr}"
    );

    let port = good
        .split("\"port\":")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_string();
    let no_db = good
        .replace(
            &format!("\"port\":{port}"),
            &format!("\"port\":{}", free_port()),
        )
        .replace("\"timeout\":5", "\"timeout\":1");
    let path = write_config(certs.dir(), "nodb.json", &no_db);
    let (code, stderr) = run(&[&format!("-config={}", path.display())]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("error: connecting to database"), "{stderr}");

    // `--config <path>` starts and serves.
    let path = write_config(certs.dir(), "good.json", &good);
    let mut child = Command::new(env!("CARGO_BIN_EXE_silk-controller"))
        .args(["--config", path.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut healthy = false;
    for _ in 0..200 {
        if let Ok((200, _, _)) = plain_request(ports.1, "GET", "/health", "").await {
            healthy = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(healthy);
}

both_engines!(start_up_failures_exit_1_and_double_dash_config_works);
