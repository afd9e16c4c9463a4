//! ADD (shape, append the IFB to the result), DEL (remove the IFB), CHECK (qdiscs present).

use std::io::Write;
use std::process::{Command, Stdio};

use silk_cni_skel::{CmdArgs, CniError, CniPlugin, CniResult, Interface};

use crate::plan::{self, Config};

pub struct Bandwidth;

fn err(e: impl std::fmt::Display) -> CniError {
    CniError::internal(e.to_string())
}

/// Runs `prog -batch -` with `text`.
fn batch(prog: &str, text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Ok(());
    }
    let mut child = Command::new(prog)
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("exec {prog}: {e}"))?;
    if let Some(mut s) = child.stdin.take() {
        s.write_all(text.as_bytes())
            .map_err(|e| format!("{prog}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{prog}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The host end of the container's veth: the result's interface without a sandbox. Its name
/// goes into the `tc -batch` text, so it must be an interface name (no whitespace or newline
/// that would make tc read another command).
pub(crate) fn host_interface(prev: &CniResult) -> Result<String, CniError> {
    let name = prev
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_empty())
        .map(|i| i.name.clone())
        .ok_or_else(|| err("failed to find host interface in prevResult"))?;
    silk_cni_skel::env::validate_ifname(&name).map_err(|_| {
        err(format!(
            "invalid host interface name {name:?} in prevResult"
        ))
    })?;
    Ok(name)
}

/// A link attribute (`mtu`, `address`, `ifindex`) through netlink (`ip -j`): /sys/class/net
/// shows the namespace sysfs was mounted in, not necessarily the caller's.
fn read_sys(dev: &str, attr: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["-j", "link", "show", "dev", dev])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let x = &v.get(0)?[attr];
    x.as_str()
        .map(String::from)
        .or_else(|| x.as_u64().map(|n| n.to_string()))
}

impl CniPlugin for Bandwidth {
    fn name(&self) -> &str {
        "bandwidth"
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let c: Config = args.decode_config()?;
        let limits = c.effective();
        limits.validate().map_err(err)?;
        let prev = args
            .prev_result
            .clone()
            .ok_or_else(|| err("must be called as chained plugin"))?;
        if !limits.is_active() {
            return Ok(prev);
        }
        let host = host_interface(&prev)?;
        let ifb = plan::ifb_name(&c.name, &args.container_id);
        let mtu = read_sys(&host, "mtu")
            .and_then(|m| m.parse().ok())
            .unwrap_or(1500);
        batch("ip", &plan::ip_commands(&limits, &ifb, mtu))
            .map_err(|e| err(format!("create ifb: {e}")))?;
        if let Err(e) = batch("tc", &plan::tc_commands(&limits, &host, &ifb)) {
            let _ = batch("ip", &format!("link del {ifb}\n"));
            return Err(err(format!("shape {host}: {e}")));
        }
        let mut result = prev;
        if limits.egress_rate > 0 {
            result.interfaces.push(Interface {
                name: ifb.clone(),
                mac: read_sys(&ifb, "address").unwrap_or_default(),
                ..Default::default()
            });
        }
        Ok(result)
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let c: Config = args.decode_config()?;
        let ifb = plan::ifb_name(&c.name, &args.container_id);
        if read_sys(&ifb, "ifindex").is_some() {
            batch("ip", &format!("link del {ifb}\n")).map_err(err)?;
        }
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let c: Config = args.decode_config()?;
        let limits = c.effective();
        let prev = args
            .prev_result
            .as_ref()
            .ok_or_else(|| err("must be called as chained plugin"))?;
        if !limits.is_active() {
            return Ok(());
        }
        let host = host_interface(prev)?;
        let out = Command::new("tc")
            .args(["qdisc", "show", "dev", &host])
            .output()
            .map_err(err)?;
        let text = String::from_utf8_lossy(&out.stdout);
        if limits.ingress_rate > 0 && !text.contains("tbf 1:") {
            return Err(err(format!("CHECK: no tbf qdisc on {host}")));
        }
        if limits.egress_rate > 0
            && read_sys(&plan::ifb_name(&c.name, &args.container_id), "ifindex").is_none()
        {
            return Err(err("CHECK: ifb device missing"));
        }
        Ok(())
    }
}
