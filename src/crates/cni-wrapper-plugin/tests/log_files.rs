//! The plugins' log files on a fresh cell (issue 13, acceptance 5): the log directory
//! `/var/vcap/sys/log/silk-cni` exists and holds no files; an ADD and a DEL through the real
//! binaries, invoked as libcni invokes them, leave lager lines in `cni-wrapper-plugin.stdout.log`
//! and `silk-cni.stdout.log`.
//!
//! The binaries write the fixed paths operators know, so the test gives them a cell of their
//! own: the test thread enters a private mount namespace where `/var` is an overlay (the real
//! `/var` read-only beneath, writes kept in a tmpfs) and an empty tmpfs is mounted on the log
//! directory. The plugins it starts inherit that view; nothing is written to the machine's
//! `/var`, and the kernel drops every mount with the namespace.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

mod common;

use std::path::Path;

use common::{cni, Cell};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use silk_testkit::netns::NsHolder;

const LOG_DIR: &str = "/var/vcap/sys/log/silk-cni";
const WRAPPER_LOG: &str = "/var/vcap/sys/log/silk-cni/cni-wrapper-plugin.stdout.log";
const SILK_CNI_LOG: &str = "/var/vcap/sys/log/silk-cni/silk-cni.stdout.log";
const HANDLE: &str = "0c6f1a2b-3d4e-4f50-6172-8394";

/// Moves this thread into a private mount namespace in which `LOG_DIR` exists and is empty.
/// `scratch` is an empty directory for the overlay's upper layer.
fn fresh_log_dir(scratch: &Path) {
    unshare(CloneFlags::CLONE_NEWNS).unwrap();
    // Mounts made from here on must not propagate back to the machine's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap();
    mount(
        Some("tmpfs"),
        scratch,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .unwrap();
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    let opts = format!(
        "lowerdir=/var,upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        "/var",
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .unwrap();
    std::fs::create_dir_all(LOG_DIR).unwrap();
    // Empty even on a machine whose /var already has silk-cni logs.
    mount(
        Some("tmpfs"),
        LOG_DIR,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .unwrap();
    assert_eq!(std::fs::read_dir(LOG_DIR).unwrap().count(), 0);
}

/// The lager lines of `path` (every line must be one), with their `message`s.
fn lager_messages(path: &str) -> Vec<String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path} was not created: {e}"));
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{path}: not a JSON line ({e}): {l:?}"));
            for key in ["timestamp", "source", "message", "log_level", "data"] {
                assert!(v.get(key).is_some(), "{path}: no {key} in {l}");
            }
            v["message"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn add_and_del_create_both_plugin_log_files_in_an_empty_log_directory() {
    // The cell first: it may build silk-cni, which must land in the real target directory.
    let cell = Cell::new();
    let scratch = tempfile::tempdir().unwrap();
    fresh_log_dir(scratch.path());
    let ns = NsHolder::spawn().unwrap();
    let netns = ns.path().to_str().unwrap();

    let conf = cell
        .config(
            serde_json::json!({"container_workload": "app"}),
            serde_json::Value::Null,
        )
        .to_string();
    let add = cni(&cell.cni_path, "ADD", HANDLE, netns, &conf, &[]);
    assert_eq!(add.code, 0, "ADD failed: {} {}", add.stdout, add.stderr);
    assert_eq!(
        lager_messages(WRAPPER_LOG),
        ["cfnetworking.cni-wrapper-plugin.add"]
    );
    assert_eq!(lager_messages(SILK_CNI_LOG), ["cfnetworking.silk-cni.add"]);

    let mut del_conf = cell.config(serde_json::Value::Null, serde_json::Value::Null);
    del_conf["prevResult"] = add.json();
    let del = cni(
        &cell.cni_path,
        "DEL",
        HANDLE,
        netns,
        &del_conf.to_string(),
        &[],
    );
    assert_eq!(del.code, 0, "DEL failed: {} {}", del.stdout, del.stderr);
    assert_eq!(
        lager_messages(WRAPPER_LOG),
        [
            "cfnetworking.cni-wrapper-plugin.add",
            "cfnetworking.cni-wrapper-plugin.del"
        ]
    );
    assert_eq!(
        lager_messages(SILK_CNI_LOG),
        ["cfnetworking.silk-cni.add", "cfnetworking.silk-cni.del"]
    );
    for path in [WRAPPER_LOG, SILK_CNI_LOG] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o644, 0, "{path} has mode {mode:o}");
    }
}
