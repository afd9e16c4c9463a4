//! The kernel side of silk-cni: the veth pair, addresses, permanent neighbours, routes and
//! sysctls of cni.md §3.5, sent over rtnetlink from this process (no `ip` process): one
//! datagram for the host side, one for the container side. The container side runs on a
//! thread that entered the container namespace with setns(2), so its netlink socket and the
//! sysctl files it touches belong to that namespace; the process's other threads never move.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use nix::sched::{setns, CloneFlags};
use silk_dataplane::netlink::batch::BatchSocket;
use silk_dataplane::netlink::veth as nl;
use silk_dataplane::netlink::NetlinkError;

#[derive(Debug, thiserror::Error)]
pub enum VethError {
    #[error("open netns {0}: {1}")]
    Netns(String, String),
    #[error("{0}")]
    Netlink(#[from] NetlinkError),
    #[error("sysctl {0}: {1}")]
    Sysctl(String, String),
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
    in_netns_file(&file, netns, f)
}

fn in_netns_file<T: Send>(
    file: &File,
    netns: &str,
    f: impl FnOnce() -> Result<T, VethError> + Send,
) -> Result<T, VethError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(file, CloneFlags::CLONE_NEWNET)
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
    pub ifname: String,
    pub host_mac: String,
    pub container_mac: String,
    pub mtu: u32,
    pub netns: String,
}

impl VethSpec {
    fn mac(prefix: u8, ip: Ipv4Addr) -> [u8; 6] {
        let o = ip.octets();
        [prefix, prefix, o[0], o[1], o[2], o[3]]
    }
    fn host_mac_bytes(&self) -> [u8; 6] {
        Self::mac(0xaa, self.ip)
    }
    fn container_mac_bytes(&self) -> [u8; 6] {
        Self::mac(0xee, self.ip)
    }
}

pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);

/// Creates and configures both ends. On failure the host end (and with it the peer) is removed.
pub fn set_up(s: &VethSpec) -> Result<(), (&'static str, VethError)> {
    let ns = File::open(&s.netns).map_err(|e| {
        (
            "create veth pair",
            VethError::Netns(s.netns.clone(), e.to_string()),
        )
    })?;
    let mut host = BatchSocket::open().map_err(|e| ("create veth pair", e.into()))?;
    // The pair, both ends down: the peer straight into the container namespace under its
    // final name, MTU, MACs and NOARP in the one create request.
    let create = nl::create_pair(
        &nl::VethEnd {
            name: s.host_name.clone(),
            mac: s.host_mac_bytes(),
        },
        &nl::VethEnd {
            name: s.ifname.clone(),
            mac: s.container_mac_bytes(),
        },
        s.mtu,
        ns.as_raw_fd(),
    );
    nl::run_all(&mut host, &[create]).map_err(|e| ("create veth pair", e.into()))?;
    let host_side = (|| {
        let index = nl::index_of(&s.host_name)?;
        // IPv6 off while the link is still down, so no link-local address is assigned.
        let _ = sysctl(&format!("net.ipv6.conf.{}.disable_ipv6", s.host_name), "1");
        sysctl(&format!("net.ipv4.conf.{}.rp_filter", s.host_name), "1")?;
        nl::run_all(
            &mut host,
            &[
                nl::permanent_neighbour(index, s.ip, s.container_mac_bytes()),
                nl::point_to_point_address(index, GATEWAY, s.ip),
                nl::link_up(index),
            ],
        )?;
        sysctl("net.ipv4.ip_forward", "1")
    })();
    let result = host_side.map_err(|e| ("set up host", e)).and_then(|_| {
        in_netns_file(&ns, &s.netns, || {
            let _ = sysctl(&format!("net.ipv6.conf.{}.disable_ipv6", s.ifname), "1");
            sysctl(&format!("net.ipv4.conf.{}.rp_filter", s.ifname), "1")?;
            let mut sock = BatchSocket::open()?;
            let index = nl::index_of(&s.ifname)?;
            nl::run_all(
                &mut sock,
                &[
                    nl::permanent_neighbour(index, GATEWAY, s.host_mac_bytes()),
                    nl::point_to_point_address(index, s.ip, GATEWAY),
                    nl::link_up(index),
                    nl::default_route(index, GATEWAY, s.ip),
                ],
            )?;
            Ok(())
        })
        .map_err(|e| ("set up container", e))
    });
    if result.is_err() {
        let _ = nl::run_all(&mut host, &[nl::delete_link_by_name(&s.host_name)]);
    }
    result
}

/// Deletes `ifname` inside `netns`; a missing link is success. `Ok(false)` when the namespace
/// cannot be opened (already gone: the kernel removed the veth with it).
pub fn tear_down(netns: &str, ifname: &str) -> Result<bool, VethError> {
    let Ok(file) = File::open(netns) else {
        return Ok(false);
    };
    in_netns_file(&file, netns, || {
        let mut sock = BatchSocket::open()?;
        nl::run_all(&mut sock, &[nl::delete_link_by_name(ifname)])?;
        Ok(true)
    })
}

/// Deletes a host end (and with it the container end) in this process's namespace; a missing
/// link is success (GC).
pub fn delete_host_end(name: &str) -> Result<(), VethError> {
    let mut sock = BatchSocket::open()?;
    nl::run_all(&mut sock, &[nl::delete_link_by_name(name)])?;
    Ok(())
}

/// True when `ifname` in `netns` carries `ip` (CHECK).
pub fn has_address(netns: &str, ifname: &str, ip: Ipv4Addr) -> Result<bool, VethError> {
    in_netns(netns, || {
        let addrs = nix::ifaddrs::getifaddrs()
            .map_err(|e| VethError::Netns(netns.into(), format!("list addresses: {e}")))?;
        Ok(addrs.into_iter().any(|a| {
            a.interface_name == ifname
                && a.address
                    .as_ref()
                    .and_then(|s| s.as_sockaddr_in())
                    .is_some_and(|sin| sin.ip() == ip)
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_follow_the_contract() {
        let s = VethSpec {
            ip: Ipv4Addr::new(10, 255, 30, 2),
            host_name: "s-010255030002".into(),
            ifname: "eth0".into(),
            host_mac: "aa:aa:0a:ff:1e:02".into(),
            container_mac: "ee:ee:0a:ff:1e:02".into(),
            mtu: 1450,
            netns: "/proc/1/ns/net".into(),
        };
        assert_eq!(s.host_mac_bytes(), [0xaa, 0xaa, 0x0a, 0xff, 0x1e, 0x02]);
        assert_eq!(
            s.container_mac_bytes(),
            [0xee, 0xee, 0x0a, 0xff, 0x1e, 0x02]
        );
    }
}
