//! The syncer binary against a fake garden on a unix socket (no network) and a real store file.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn copies_log_config_from_garden_into_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("garden.sock");
    let l = UnixListener::bind(&sock).unwrap();
    silk_testkit::fuzz::serve_unix(l, |line| {
        let body = if line.starts_with("GET /containers/h1/properties") {
            r#"{"log_config":"{\"guid\":\"app-guid\",\"index\":0,\"source_name\":\"CELL\",\"tags\":{}}","network.app_id":"app-guid"}"#
        } else if line.starts_with("GET /containers ") {
            r#"{"Handles":["h1","h2"]}"#
        } else {
            "{}"
        };
        (200, body.to_string())
    });
    let store = dir.path().join("store.json");
    std::fs::write(
        &store,
        r#"{"h1":{"handle":"h1","ip":"10.255.30.2","metadata":{"app_id":"app-guid"}}}"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_silk-datastore-syncer"))
        .args([
            "-n",
            "1",
            "-gardenNetwork",
            "unix",
            "-gardenAddr",
            sock.to_str().unwrap(),
            "-silkFile",
            store.to_str().unwrap(),
        ])
        .args([
            "-silkFileOwner",
            "",
            "-silkFileGroup",
            "",
            "-logLevel",
            "info",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ok = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let text = std::fs::read_to_string(&store).unwrap_or_default();
        if text.contains("app-guid\\\",\\\"index") {
            ok = true;
            break;
        }
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // lager's epoch format, as upstream's writer sink.
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0]["message"], "cfnetworking.silk-datastore-syncer.started",
        "{stdout}"
    );
    assert_eq!(lines[0]["log_level"], 1);
    assert_eq!(lines[0]["data"]["interval_seconds"], 1);
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .starts_with(r#"{"timestamp":""#),
        "{stdout}"
    );
    assert!(
        lines.iter().any(|l| l["message"]
            == "cfnetworking.silk-datastore-syncer.updated-log-config"
            && l["data"]["handle"] == "h1"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&store).unwrap()).unwrap();
    assert!(ok, "store not updated: {v}");
    assert_eq!(v["h1"]["metadata"]["app_id"], "app-guid");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("store.json_version")).unwrap(),
        "2"
    );
}

#[test]
fn invalid_flags_exit_64_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.json");
    for bad in [
        vec!["-n", "0"],
        vec!["-gardenNetwork", "udp"],
        vec!["-logLevel", "verbose"],
        vec!["-silkFileOwner", "vcap"],
        vec!["-silkFileOwner", "no-such-user-x", "-silkFileGroup", "root"],
        vec!["-unknownFlag", "1"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_silk-datastore-syncer"))
            .args(["-silkFile", store.to_str().unwrap(), "-gardenAddr"])
            .arg(dir.path().join("no-garden.sock"))
            .args(&bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{bad:?}: {stderr}");
        assert!(
            stderr.starts_with("cfnetworking.silk-datastore-syncer error: "),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "{bad:?}");
    }
    assert!(!store.exists());
}
