//! The kernel side of silk-cni: the veth pair, addresses, permanent neighbours, routes and
//! sysctls of cni.md §3.5, applied as one `ip -batch` on each side. The container side runs on
//! a thread that entered the container namespace with setns(2), so `ip` and the sysctl files
//! it touches belong to that namespace; the process's other threads never move.

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use nix::sched::{setns, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum VethError {
    #[error("open netns {0}: {1}")]
    Netns(String, String),
    #[error("ip -batch: {0}")]
    Ip(String),
    #[error("exec ip: {0}")]
    Exec(#[source] std::io::Error),
    #[error("sysctl {0}: {1}")]
    Sysctl(String, String),
}

/// Runs `ip -batch -` with `commands` in the calling thread's namespace. Retries a bounded
/// number of times when netlink reports EINTR/EAGAIN (an interrupted dump or a busy socket).
pub fn ip_batch(commands: &str) -> Result<(), VethError> {
    let mut attempt = 0;
    loop {
        let mut child = Command::new("ip")
            .args(["-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(VethError::Exec)?;
        if let Some(mut s) = child.stdin.take() {
            s.write_all(commands.as_bytes()).map_err(VethError::Exec)?;
        }
        let out = child.wait_with_output().map_err(VethError::Exec)?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let transient = err.contains("Interrupted") || err.contains("temporarily unavailable");
        if !transient || attempt >= 5 {
            return Err(VethError::Ip(err));
        }
        attempt += 1;
        std::thread::sleep(std::time::Duration::from_millis(10 * attempt));
    }
}

/// Writes a sysctl through /proc/sys (in the calling thread's network namespace).
pub fn sysctl(key: &str, value: &str) -> Result<(), VethError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| VethError::Sysctl(key.into(), e.to_string()))
}

/// Runs `f` on a new thread that first enters the namespace at `netns`.
pub fn in_netns<T: Send>(
    netns: &str,
    f: impl FnOnce() -> Result<T, VethError> + Send,
) -> Result<T, VethError> {
    let file = File::open(netns).map_err(|e| VethError::Netns(netns.into(), e.to_string()))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| VethError::Netns(netns.into(), e.to_string()))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(VethError::Netns(netns.into(), "thread panicked".into())))
    })
}

/// Everything needed to wire one container.
#[derive(Debug, Clone)]
pub struct VethSpec {
    pub ip: Ipv4Addr,
    pub host_name: String,
    pub temp_name: String,
    pub ifname: String,
    pub host_mac: String,
    pub container_mac: String,
    pub mtu: u32,
    pub netns: String,
}

pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);

/// The host side's batch: create the pair (peer straight into the container namespace), ARP
/// off, permanent neighbour, point-to-point address, up.
pub fn host_batch(s: &VethSpec) -> String {
    format!(
        "link add {h} mtu {mtu} address {hm} type veth peer name {t} mtu {mtu} address {cm} netns {ns}\n\
         link set {h} arp off\n\
         neigh replace {ip} lladdr {cm} dev {h} nud permanent\n\
         addr add {gw}/32 peer {ip}/32 dev {h} scope link\n\
         link set {h} up\n",
        h = s.host_name,
        t = s.temp_name,
        mtu = s.mtu,
        hm = s.host_mac,
        cm = s.container_mac,
        ns = s.netns,
        ip = s.ip,
        gw = GATEWAY,
    )
}

/// The container side's batch: rename to CNI_IFNAME and mirror the host setup, default route.
pub fn container_batch(s: &VethSpec) -> String {
    format!(
        "link set {t} name {i}\n\
         link set {i} arp off\n\
         neigh replace {gw} lladdr {hm} dev {i} nud permanent\n\
         addr add {ip}/32 peer {gw}/32 dev {i} scope link\n\
         link set {i} up\n\
         route replace default via {gw} dev {i} src {ip}\n",
        t = s.temp_name,
        i = s.ifname,
        hm = s.host_mac,
        ip = s.ip,
        gw = GATEWAY,
    )
}

/// Creates and configures both ends. On failure the host end (and with it the peer) is removed.
pub fn set_up(s: &VethSpec) -> Result<(), (&'static str, VethError)> {
    // Disable IPv6 on the host end before it is up so no link-local address is assigned.
    ip_batch(&host_batch(s)).map_err(|e| ("create veth pair", e))?;
    let host = (|| {
        let _ = sysctl(&format!("net.ipv6.conf.{}.disable_ipv6", s.host_name), "1");
        sysctl(&format!("net.ipv4.conf.{}.rp_filter", s.host_name), "1")?;
        sysctl("net.ipv4.ip_forward", "1")
    })();
    let result = host.map_err(|e| ("set up host", e)).and_then(|_| {
        in_netns(&s.netns, || {
            ip_batch(&container_batch(s))?;
            let _ = sysctl(&format!("net.ipv6.conf.{}.disable_ipv6", s.ifname), "1");
            sysctl(&format!("net.ipv4.conf.{}.rp_filter", s.ifname), "1")
        })
        .map_err(|e| ("set up container", e))
    });
    if result.is_err() {
        let _ = ip_batch(&format!("link del {}\n", s.host_name));
    }
    result
}

/// Deletes `ifname` inside `netns`; a missing link is success. `Ok(false)` when the namespace
/// cannot be opened (already gone: the kernel removed the veth with it).
pub fn tear_down(netns: &str, ifname: &str) -> Result<bool, VethError> {
    if File::open(netns).is_err() {
        return Ok(false);
    }
    in_netns(netns, || match ip_batch(&format!("link del {ifname}\n")) {
        Ok(()) => Ok(true),
        Err(VethError::Ip(e))
            if e.contains("Cannot find device") || e.contains("does not exist") =>
        {
            Ok(true)
        }
        Err(e) => Err(e),
    })
}

/// True when `ifname` in `netns` carries `ip` (CHECK).
pub fn has_address(netns: &str, ifname: &str, ip: Ipv4Addr) -> Result<bool, VethError> {
    in_netns(netns, || {
        let out = Command::new("ip")
            .args(["-o", "-4", "addr", "show", "dev", ifname])
            .output()
            .map_err(VethError::Exec)?;
        Ok(out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains(&format!("inet {ip} ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_the_contract() {
        let s = VethSpec {
            ip: Ipv4Addr::new(10, 255, 30, 2),
            host_name: "s-010255030002".into(),
            temp_name: "c-010255030002".into(),
            ifname: "eth0".into(),
            host_mac: "aa:aa:0a:ff:1e:02".into(),
            container_mac: "ee:ee:0a:ff:1e:02".into(),
            mtu: 1450,
            netns: "/proc/1/ns/net".into(),
        };
        let h = host_batch(&s);
        assert!(h.starts_with("link add s-010255030002 mtu 1450 address aa:aa:0a:ff:1e:02 type veth peer name c-010255030002"));
        assert!(h.contains(
            "addr add 169.254.0.1/32 peer 10.255.30.2/32 dev s-010255030002 scope link\n"
        ));
        let c = container_batch(&s);
        assert!(c.contains(
            "neigh replace 169.254.0.1 lladdr aa:aa:0a:ff:1e:02 dev eth0 nud permanent\n"
        ));
        assert!(c.ends_with("route replace default via 169.254.0.1 dev eth0 src 10.255.30.2\n"));
    }
}
