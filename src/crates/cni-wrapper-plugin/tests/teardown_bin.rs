//! cni-teardown as pre-start runs it: deletes the configured state directories and legacy IFBs.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use std::process::Command;

use silk_dataplane::iptables::{Family, Iptables, SystemIptables};
use silk_testkit::netns::{run_ok, unshare_test_netns};

#[test]
#[ignore = "needs root: run via scripts/test"]
fn removes_paths_and_legacy_ifbs_only() {
    silk_testkit::require_root();
    unshare_test_netns().unwrap();
    run_ok(&["ip", "link", "add", "i-010255030002", "type", "ifb"]).unwrap();
    run_ok(&["ip", "link", "add", "bwp3fe8b8fb7e62", "type", "ifb"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("host-local/ipam/silk");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("10.255.30.2"), "h\r\neth0").unwrap();
    let conf = dir.path().join("teardown-config.json");
    std::fs::write(&conf, serde_json::json!({"paths_to_delete": [dir.path().join("host-local"), dir.path().join("missing")], "iptables_lock_file": dir.path().join("iptables.lock")}).to_string()).unwrap();
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

/// Chains a crashed garden left behind, plus a chain and rule that are not silk's.
const STALE: &str =
    "*filter\n:input--gone - [0:0]\n:netout--gone - [0:0]\n:netout--gone--log - [0:0]\n\
:asg-000001 - [0:0]\n:other-chain - [0:0]\n\
-A INPUT -s 10.255.30.3/32 -j input--gone\n-A FORWARD -s 10.255.30.3/32 -o eth0 -j netout--gone\n\
-A INPUT -j other-chain\n-A netout--gone -j asg-000001\n-A asg-000001 -p tcp -g netout--gone--log\n\
-A input--gone -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n\
*nat\n:netin--gone - [0:0]\n-A PREROUTING -j netin--gone\n\
-A POSTROUTING -s 10.255.30.3/32 ! -d 10.255.0.0/16 ! -o silk-vtep -j MASQUERADE\n\
-A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE\nCOMMIT\n";

fn teardown(dir: &std::path::Path) -> String {
    let conf = dir.join("teardown-config.json");
    std::fs::write(
        &conf,
        serde_json::json!({"paths_to_delete": [], "iptables_lock_file": dir.join("garden-cni/iptables.lock")})
            .to_string(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cni-teardown"))
        .args(["--config", conf.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    stdout
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn sweeps_stale_chains_only_when_no_container_veth_exists() {
    silk_testkit::require_root();
    unshare_test_netns().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let restore = |text: &str| {
        SystemIptables::new(dir.path().join("iptables.lock"))
            .restore(Family::V4, text)
            .unwrap();
    };
    restore(STALE);
    let rules = || {
        let saved = run_ok(&["iptables-save"]).unwrap();
        saved
            .lines()
            .filter(|l| l.starts_with("-A ") || (l.starts_with(':') && l.contains(" - ")))
            .map(|l| l.split(" [").next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // A container's host veth exists: it may be alive, nothing is swept.
    run_ok(&[
        "ip",
        "link",
        "add",
        "s-010255030002",
        "type",
        "veth",
        "peer",
        "name",
        "c-x",
    ])
    .unwrap();
    let before = rules();
    assert!(teardown(dir.path()).contains("skip-iptables-sweep"));
    assert_eq!(rules(), before);

    run_ok(&["ip", "link", "del", "s-010255030002"]).unwrap();
    let log = teardown(dir.path());
    assert!(log.contains("cni-teardown.iptables-sweep"), "{log}");
    let after = rules();
    let mut expected = vec![
        ":other-chain -".to_string(),
        "-A INPUT -j other-chain".to_string(),
        "-A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE".to_string(),
    ];
    expected.sort();
    let mut got = after.clone();
    got.sort();
    assert_eq!(got, expected, "teardown left or took too much: {after:?}");
    // Running it again is harmless.
    teardown(dir.path());
    assert_eq!(rules().len(), 3);
}

#[test]
fn invalid_config_exits_1_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("host-local");
    std::fs::create_dir_all(&kept).unwrap();
    let conf = dir.path().join("teardown-config.json");
    std::fs::write(
        &conf,
        serde_json::json!({"paths_to_delete": [kept, "relative/dir"]}).to_string(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cni-teardown"))
        .arg(format!("-config={}", conf.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        kept.exists(),
        "a valid path of an invalid config was removed"
    );
    // lager's epoch format, as upstream's writer sink: `starting`, then the error at level 2.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(r#"{"timestamp":""#)
            && lines[0].ends_with(
                r#"","source":"cfnetworking.cni-teardown","message":"cfnetworking.cni-teardown.starting","log_level":1,"data":{}}"#
            ),
        "{stdout}"
    );
    let err: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(err["message"], "cfnetworking.cni-teardown.read-config-file");
    assert_eq!(err["log_level"], 2);
    assert!(
        err["data"]["error"]
            .as_str()
            .unwrap()
            .contains("paths_to_delete[1]: must be an absolute path below /"),
        "{stdout}"
    );
}
