//! netns tier: the single-IP `istio-ingress` chain that silk-daemon-bootstrap installs and the
//! drain removes, against real iptables in a namespace of the test's own.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::path::PathBuf;
use std::time::Duration;

use silk_daemon::bootstrap::install_istio_chain;
use silk_daemon::shutdown::{remove_istio_chain, ShutdownOpts};
use silk_testkit::netns::{enter_root_test_netns, run_ok};

fn filter_rules() -> Vec<String> {
    run_ok(&["iptables-save", "-t", "filter"])
        .unwrap()
        .lines()
        .filter(|l| l.contains("istio-ingress"))
        .map(str::to_string)
        .collect()
}

/// The drain's options with nothing to wait for: only the chain removal does anything.
fn drain_opts(dir: &std::path::Path, lock: Option<PathBuf>) -> ShutdownOpts {
    ShutdownOpts {
        container_metadata_file: dir.join("store.json"),
        check_interval: Duration::from_secs(1),
        check_timeout: Duration::from_secs(1),
        silk_daemon_url: String::new(),
        silk_daemon_timeout: Duration::from_secs(1),
        silk_daemon_pid_path: None,
        ping_server_timeout: Duration::from_secs(1),
        iptables_lock_file: lock,
    }
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn bootstrap_installs_once_and_drain_removes_twice() {
    enter_root_test_netns();
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("iptables.lock");
    install_istio_chain("00ff", Some(&lock)).unwrap();
    install_istio_chain("00ff", Some(&lock)).unwrap();
    let rules = filter_rules();
    assert_eq!(
        rules,
        vec![
            ":istio-ingress - [0:0]",
            "-A OUTPUT -j istio-ingress",
            "-A istio-ingress -o silk-vtep -j MARK --set-xmark 0xff/0xffffffff",
            "-A istio-ingress -o silk-vtep -j ACCEPT",
        ],
        "installed exactly once"
    );
    let opts = drain_opts(dir.path(), Some(PathBuf::from(&lock)));
    remove_istio_chain(&opts).unwrap();
    assert!(filter_rules().is_empty());
    remove_istio_chain(&opts).unwrap();
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn a_changed_tag_rewrites_the_chain_and_a_stray_jump_does_not_block_removal() {
    enter_root_test_netns();
    install_istio_chain("0004", None).unwrap();
    // The policy server renumbered the router; someone also jumps to the chain from FORWARD.
    run_ok(&[
        "iptables",
        "-w",
        "-A",
        "FORWARD",
        "-o",
        "eth9",
        "-j",
        "istio-ingress",
    ])
    .unwrap();
    install_istio_chain("00ff", None).unwrap();
    assert_eq!(
        filter_rules(),
        vec![
            ":istio-ingress - [0:0]",
            "-A FORWARD -o eth9 -j istio-ingress",
            "-A OUTPUT -j istio-ingress",
            "-A istio-ingress -o silk-vtep -j MARK --set-xmark 0xff/0xffffffff",
            "-A istio-ingress -o silk-vtep -j ACCEPT",
        ],
        "the new mark replaces the old one, first in the chain"
    );
    let dir = tempfile::tempdir().unwrap();
    let opts = drain_opts(dir.path(), None);
    remove_istio_chain(&opts).unwrap();
    assert!(filter_rules().is_empty());
}
