//! The lease: which overlay subnet and VTEP MAC belong to which underlay IP.
//!
//! Wire shape and derivation rules follow silk-release (control-plane contract §1.3, §2.2):
//! keys `underlay_ip`, `overlay_subnet`, `overlay_hardware_addr` in that order, and the MAC is
//! `ee:ee:` followed by the four bytes of the subnet's first address, lower-case.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

/// A lease as the controller stores and serves it. Values are kept as the exact strings
/// exchanged on the wire: every comparison in the system is an exact string comparison.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Lease {
    pub underlay_ip: String,
    pub overlay_subnet: String,
    pub overlay_hardware_addr: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LeaseError {
    #[error("invalid ipv4 address: {0}")]
    InvalidUnderlayIp(String),
    #[error("invalid CIDR address: {0}")]
    InvalidSubnet(String),
    #[error("address {0}: invalid MAC address")]
    InvalidHardwareAddr(String),
}

impl Lease {
    /// Builds the lease for `underlay_ip` holding `subnet`, with the MAC derived from the subnet.
    pub fn new(underlay_ip: Ipv4Addr, subnet: Ipv4Network) -> Self {
        Lease {
            underlay_ip: underlay_ip.to_string(),
            overlay_subnet: format!("{}/{}", subnet.ip(), subnet.prefix()),
            overlay_hardware_addr: HardwareAddr::for_overlay_ip(subnet.ip()).to_string(),
        }
    }

    /// The overlay subnet as written (IP part not masked), e.g. `10.255.7.0/24`.
    pub fn subnet(&self) -> Result<Ipv4Network, LeaseError> {
        Ipv4Network::from_str(&self.overlay_subnet)
            .map_err(|_| LeaseError::InvalidSubnet(self.overlay_subnet.clone()))
    }

    pub fn underlay(&self) -> Result<Ipv4Addr, LeaseError> {
        Ipv4Addr::from_str(&self.underlay_ip)
            .map_err(|_| LeaseError::InvalidUnderlayIp(self.underlay_ip.clone()))
    }

    pub fn hardware_addr(&self) -> Result<HardwareAddr, LeaseError> {
        HardwareAddr::from_str(&self.overlay_hardware_addr)
    }

    /// True for single-IP leases; upstream decides the kind by the `/32` text suffix alone.
    pub fn is_single_ip(&self) -> bool {
        self.overlay_subnet.ends_with("/32")
    }
}

/// A 6-byte Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HardwareAddr(pub [u8; 6]);

impl HardwareAddr {
    /// `ee:ee` followed by the IPv4 bytes (silk-release: src/code.cloudfoundry.org/silk/lib/hwaddr).
    pub fn for_overlay_ip(ip: Ipv4Addr) -> Self {
        let o = ip.octets();
        HardwareAddr([0xee, 0xee, o[0], o[1], o[2], o[3]])
    }
}

impl fmt::Display for HardwareAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for HardwareAddr {
    type Err = LeaseError;

    /// Accepts the notations Go's `net.ParseMAC` accepts for 6-byte addresses:
    /// `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff` and `aabb.ccdd.eeff`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || LeaseError::InvalidHardwareAddr(s.to_string());
        let hex: String = if s.len() == 17 {
            let sep = s.as_bytes()[2];
            if sep != b':' && sep != b'-' {
                return Err(err());
            }
            for (i, c) in s.bytes().enumerate() {
                if i % 3 == 2 && c != sep {
                    return Err(err());
                }
            }
            s.split(sep as char).collect()
        } else if s.len() == 14 {
            for (i, c) in s.bytes().enumerate() {
                if i % 5 == 4 && c != b'.' {
                    return Err(err());
                }
            }
            s.split('.').collect()
        } else {
            return Err(err());
        };
        if hex.len() != 12 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(HardwareAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_derived_from_the_subnet_address() {
        let lease = Lease::new(
            "10.0.16.12".parse().unwrap(),
            "10.255.7.0/24".parse().unwrap(),
        );
        assert_eq!(lease.overlay_hardware_addr, "ee:ee:0a:ff:07:00");
        assert_eq!(lease.overlay_subnet, "10.255.7.0/24");
        let single = Lease::new(
            "10.0.16.13".parse().unwrap(),
            "10.255.0.5/32".parse().unwrap(),
        );
        assert_eq!(single.overlay_hardware_addr, "ee:ee:0a:ff:00:05");
        assert!(single.is_single_ip());
        assert!(!lease.is_single_ip());
    }

    #[test]
    fn json_keys_come_in_upstream_order() {
        let lease = Lease::new(
            "10.0.16.12".parse().unwrap(),
            "10.255.7.0/24".parse().unwrap(),
        );
        assert_eq!(
            serde_json::to_string(&lease).unwrap(),
            r#"{"underlay_ip":"10.0.16.12","overlay_subnet":"10.255.7.0/24","overlay_hardware_addr":"ee:ee:0a:ff:07:00"}"#
        );
    }

    #[test]
    fn mac_parsing_accepts_go_notations_and_rejects_junk() {
        let want = HardwareAddr([0xee, 0xee, 0x0a, 0xff, 0x07, 0x00]);
        assert_eq!("ee:ee:0a:ff:07:00".parse::<HardwareAddr>().unwrap(), want);
        assert_eq!("EE-EE-0A-FF-07-00".parse::<HardwareAddr>().unwrap(), want);
        assert_eq!("eeee.0aff.0700".parse::<HardwareAddr>().unwrap(), want);
        for bad in [
            "",
            "ee:ee:0a:ff:07",
            "ee:ee:0a:ff:07:0g",
            "ee:ee-0a:ff:07:00",
            "banana",
        ] {
            assert_eq!(
                bad.parse::<HardwareAddr>(),
                Err(LeaseError::InvalidHardwareAddr(bad.to_string()))
            );
        }
    }
}
