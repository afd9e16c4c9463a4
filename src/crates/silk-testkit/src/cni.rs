//! CNI plugins invoked as garden-external-networker's libcni invokes them: inside the cell's
//! network namespace, `CNI_*` in the environment, the network config (with garden's runtime
//! injections) on stdin; DEL with the cached result and without the injections.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::netns::{command_in, output_with_stdin, NsHolder};

/// `plugin` run for `command` on container `handle` as libcni runs it for garden: inside the
/// cell's namespace `ns`, with `CNI_COMMAND`, `CNI_CONTAINERID` (the handle), `CNI_NETNS`,
/// `CNI_IFNAME=eth0`, `CNI_ARGS=""` and `CNI_PATH=cni_path`; the caller writes the config to stdin.
pub fn cni_command(
    ns: &Path,
    plugin: &Path,
    cni_path: &Path,
    command: &str,
    handle: &str,
    netns: &Path,
) -> Command {
    let mut c = command_in(ns, &plugin.display().to_string());
    cni_env(&mut c, command, handle, netns, cni_path);
    c
}

/// The `CNI_*` environment of [`cni_command`] on `c`, for a plugin run where `c` runs.
pub fn cni_env<'a>(
    c: &'a mut Command,
    command: &str,
    handle: &str,
    netns: impl AsRef<OsStr>,
    cni_path: &Path,
) -> &'a mut Command {
    c.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", handle)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", "")
        .env("CNI_PATH", cni_path)
}

/// One plugin of one cell.
#[derive(Debug, Clone)]
pub struct CniRunner {
    /// The cell's namespace (`/run/netns/<name>`).
    pub ns: PathBuf,
    /// The plugin binary (cni-wrapper-plugin).
    pub plugin: PathBuf,
    /// `CNI_PATH`: where its delegate (silk-cni) is.
    pub cni_path: PathBuf,
}

/// A plugin run: exit code, stdout, stderr.
pub type CniOut = (i32, String, String);

impl CniRunner {
    /// Runs `cmd` for container `handle` with network namespace `netns`.
    pub fn run(&self, cmd: &str, handle: &str, netns: &Path, stdin: &str) -> CniOut {
        let mut c = cni_command(&self.ns, &self.plugin, &self.cni_path, cmd, handle, netns);
        match output_with_stdin(&mut c, stdin.as_bytes()) {
            Ok(o) => (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            ),
            Err(e) => (
                -1,
                String::new(),
                format!("run {}: {e}", self.plugin.display()),
            ),
        }
    }

    /// ADD, which must succeed; the result and the container's IPv4 address.
    pub fn add(&self, handle: &str, holder: &NsHolder, conf: &Value) -> (Value, Ipv4Addr) {
        let (code, out, err) = self.run("ADD", handle, holder.path(), &conf.to_string());
        assert_eq!(code, 0, "ADD {handle} failed: {out} {err}");
        let result: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("ADD {handle}: result is not JSON ({e}): {out}"));
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no IPv4 in ADD result {result}"));
        (result, ip)
    }

    /// DEL as libcni sends it: `conf` without `metadata` and `runtimeConfig`, with `prev` as
    /// `prevResult`; must succeed with empty stdout.
    pub fn del(&self, handle: &str, holder: &NsHolder, mut conf: Value, prev: &Value) {
        if let Some(o) = conf.as_object_mut() {
            o.remove("metadata");
            o.remove("runtimeConfig");
            o.insert("prevResult".into(), prev.clone());
        }
        let (code, out, err) = self.run("DEL", handle, holder.path(), &conf.to_string());
        assert_eq!((code, out.as_str()), (0, ""), "DEL {handle} failed: {err}");
    }
}
