//! cni-teardown as pre-start runs it: deletes the configured state directories and legacy IFBs.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use std::process::Command;

use silk_testkit::netns::{run_ok, unshare_test_netns};

#[test]
#[ignore = "needs root: run via scripts/test"]
fn removes_paths_and_legacy_ifbs_only() {
    assert_eq!(
        std::env::var("SILK_TEST_ROOT").as_deref(),
        Ok("1"),
        "needs root: set SILK_TEST_ROOT=1 (scripts/test does)"
    );
    unshare_test_netns().unwrap();
    run_ok(&["ip", "link", "add", "i-010255030002", "type", "ifb"]).unwrap();
    run_ok(&["ip", "link", "add", "bwp3fe8b8fb7e62", "type", "ifb"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("host-local/ipam/silk");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("10.255.30.2"), "h\r\neth0").unwrap();
    let conf = dir.path().join("teardown-config.json");
    std::fs::write(&conf, serde_json::json!({"paths_to_delete": [dir.path().join("host-local"), dir.path().join("missing")]}).to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cni-teardown"))
        .args(["--config", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cfnetworking.cni-teardown.complete"));
    assert!(!dir.path().join("host-local").exists());
    let links = run_ok(&["ip", "-br", "link"]).unwrap();
    assert!(
        !links.contains("i-010255030002") && links.contains("bwp3fe8b8fb7e62"),
        "{links}"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_cni-teardown"))
        .args(["--config", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
}
