//! The addresses of the calling thread's network namespace as getifaddrs(3) lists them, and
//! the lookups the programs make in them: which interface carries an underlay address, whether
//! an interface carries a container's address.

use std::net::IpAddr;

pub use nix::ifaddrs::InterfaceAddress;

/// Every address of every interface in the current namespace.
pub fn list() -> Result<Vec<InterfaceAddress>, nix::Error> {
    Ok(nix::ifaddrs::getifaddrs()?.collect())
}

/// True when `a` is the address `ip` (IPv4 or IPv6).
pub fn is(a: &InterfaceAddress, ip: IpAddr) -> bool {
    a.address.as_ref().is_some_and(|s| match ip {
        IpAddr::V4(v4) => s.as_sockaddr_in().is_some_and(|sin| sin.ip() == v4),
        IpAddr::V6(v6) => s.as_sockaddr_in6().is_some_and(|sin| sin.ip() == v6),
    })
}

/// The name of the first interface in `addrs` that carries `ip`.
pub fn carrying(addrs: &[InterfaceAddress], ip: IpAddr) -> Option<String> {
    addrs
        .iter()
        .find(|a| is(a, ip))
        .map(|a| a.interface_name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_carries_127_0_0_1_in_any_namespace() {
        let addrs = list().unwrap();
        let lo = carrying(&addrs, "127.0.0.1".parse().unwrap());
        assert_eq!(lo.as_deref(), Some("lo"));
        assert_eq!(carrying(&addrs, "192.0.2.254".parse().unwrap()), None);
        assert!(addrs
            .iter()
            .filter(|a| a.interface_name == "lo")
            .any(|a| is(a, "127.0.0.1".parse().unwrap())));
        assert!(!addrs
            .iter()
            .any(|a| is(a, "::ffff:127.0.0.1".parse().unwrap())));
    }
}
