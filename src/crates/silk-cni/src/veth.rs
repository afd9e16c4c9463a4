//! The kernel side of silk-cni: the veth pair, addresses, permanent neighbours, routes and
//! sysctls of cni.md §3.5, sent over rtnetlink from this process (no `ip` process): one
//! datagram for the host side, one for the container side. With an IPv6 address
//! (upstream-delta §3.3.2) the same datagrams also carry the IPv6 side: `fe80::1/128` peer
//! `<v6>/128` on the host end, `<v6>/128` peer `fe80::1/128` in the container, permanent
//! neighbours both ways and the container's IPv6 default route via `fe80::1`. The container
//! side runs on a thread that entered the container namespace with setns(2), so its netlink
//! socket and the sysctl files it touches belong to that namespace; the process's other
//! threads never move.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use nix::sched::{setns, CloneFlags};
use silk_dataplane::ifaddrs;
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
    /// The container's IPv6 address, when silk-daemon announced an IPv6 prefix.
    pub ip6: Option<Ipv6Addr>,
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
/// The IPv6 gateway every container sees, a /128 on its host veth end.
pub const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// IPv6 on one veth end, set while the link is still down. Without an IPv6 address it is
/// switched off as upstream does, so no link-local address appears. With one: no router
/// advertisements, no autoconfiguration, no duplicate address detection and no generated
/// link-local address (`addr_gen_mode` 1), then on. Without generated link-local addresses
/// each end sources its traffic from an address the other end has a permanent neighbour for
/// (`fe80::1` on the host end, the /128 in the container); a reply to a generated one would
/// be resolved through the NOARP device's own MAC and lost. Errors are ignored as upstream
/// does: a key a kernel lacks is not fatal, and a device without IPv6 fails the address
/// request anyway.
fn configure_ipv6(dev: &str, enable: bool) {
    let key = |k: &str| format!("net.ipv6.conf.{dev}.{k}");
    if !enable {
        let _ = sysctl(&key("disable_ipv6"), "1");
        return;
    }
    for (k, v) in [
        ("accept_ra", "0"),
        ("autoconf", "0"),
        ("accept_dad", "0"),
        ("addr_gen_mode", "1"),
    ] {
        let _ = sysctl(&key(k), v);
    }
    let _ = sysctl(&key("disable_ipv6"), "0");
}

/// Turns IPv6 forwarding on in the calling thread's namespace. Upstream writes
/// `net.ipv6.conf.eth0.forwarding`, which only switches eth0 to router behaviour: the kernel
/// forwards IPv6 only when `net.ipv6.conf.all.forwarding` is 1, whatever the interface names.
/// A write to `all` also resets every interface's own `forwarding`, so it happens only when
/// the value is not 1 yet. A kernel without IPv6 sysctls (missing key) is not an error.
pub fn enable_ipv6_forwarding() -> Result<(), VethError> {
    const KEY: &str = "net.ipv6.conf.all.forwarding";
    match std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding") {
        Ok(v) if v.trim() == "1" => Ok(()),
        Ok(_) => sysctl(KEY, "1"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VethError::Sysctl(KEY.into(), e.to_string())),
    }
}

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
        configure_ipv6(&s.host_name, s.ip6.is_some());
        sysctl(&format!("net.ipv4.conf.{}.rp_filter", s.host_name), "1")?;
        let mut ops = vec![
            nl::permanent_neighbour(index, s.ip, s.container_mac_bytes()),
            nl::point_to_point_address(index, GATEWAY, s.ip),
        ];
        if let Some(ip6) = s.ip6 {
            ops.push(nl::permanent_neighbour(index, ip6, s.container_mac_bytes()));
        }
        ops.push(nl::link_up(index));
        // The IPv6 address only once the link is up: the kernel installs the route to an IPv6
        // peer from its DAD work (run even for a nodad address), and an address added while
        // the device is down never gets that route (IPv4 installs it with the address). The
        // route is also requested here, so it exists when ADD returns.
        if let Some(ip6) = s.ip6 {
            ops.push(nl::point_to_point_address(index, GATEWAY6, ip6));
            ops.push(nl::peer_route(index, ip6));
        }
        nl::run_all(&mut host, &ops)?;
        sysctl("net.ipv4.ip_forward", "1")?;
        if s.ip6.is_some() {
            enable_ipv6_forwarding()?;
        }
        Ok(())
    })();
    let result = host_side.map_err(|e| ("set up host", e)).and_then(|_| {
        in_netns_file(&ns, &s.netns, || {
            configure_ipv6(&s.ifname, s.ip6.is_some());
            sysctl(&format!("net.ipv4.conf.{}.rp_filter", s.ifname), "1")?;
            let mut sock = BatchSocket::open()?;
            let index = nl::index_of(&s.ifname)?;
            let mut ops = vec![
                nl::permanent_neighbour(index, GATEWAY, s.host_mac_bytes()),
                nl::point_to_point_address(index, s.ip, GATEWAY),
            ];
            if s.ip6.is_some() {
                ops.push(nl::permanent_neighbour(index, GATEWAY6, s.host_mac_bytes()));
            }
            ops.push(nl::link_up(index));
            ops.push(nl::default_route(index, GATEWAY, Some(s.ip.into())));
            // As on the host side, the IPv6 address after the link is up.
            if let Some(ip6) = s.ip6 {
                ops.push(nl::point_to_point_address(index, ip6, GATEWAY6));
                ops.push(nl::default_route(index, GATEWAY6, None));
            }
            nl::run_all(&mut sock, &ops)?;
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
pub fn has_address(netns: &str, ifname: &str, ip: IpAddr) -> Result<bool, VethError> {
    in_netns(netns, || {
        let addrs = ifaddrs::list()
            .map_err(|e| VethError::Netns(netns.into(), format!("list addresses: {e}")))?;
        Ok(addrs
            .iter()
            .any(|a| a.interface_name == ifname && ifaddrs::is(a, ip)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_follow_the_contract() {
        let s = VethSpec {
            ip: Ipv4Addr::new(10, 255, 30, 2),
            ip6: None,
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
