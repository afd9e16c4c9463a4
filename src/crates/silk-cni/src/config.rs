//! silk-cni's stdin config (the wrapper's `delegate` object, cni.md §3.1) and the network info
//! it gets from silk-daemon (§3.3), including the IPv6 prefix silk-daemon announces when IPv6
//! is enabled (upstream-delta §3.3.1).

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Config {
    pub cni_version: String,
    pub name: String,
    pub data_dir: String,
    pub subnet_file: String,
    pub mtu: i64,
    pub datastore: String,
    pub daemon_port: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cni_version: String::new(),
            name: String::new(),
            data_dir: "/var/vcap/data/host-local".into(),
            subnet_file: String::new(),
            mtu: 0,
            datastore: "/var/vcap/data/silk/store.json".into(),
            daemon_port: 23954,
        }
    }
}

/// The cell's subnet, the MTU for container interfaces and, when IPv6 is enabled, the prefix
/// container IPv6 addresses come from (normalised to its network address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetInfo {
    pub subnet: Ipv4Network,
    pub mtu: u32,
    pub ipv6_prefix: Option<Ipv6Network>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetInfoError {
    #[error("invalid config: mtu must be >= 0, got {0}")]
    BadMtu(i64),
    #[error("{0}")]
    Http(#[from] silk_cni_skel::http::HttpError),
    #[error("unexpected status code {0}: {1}")]
    Status(u16, String),
    #[error("decoding network info: {0}")]
    Decode(String),
    #[error("reading subnet file {0}: {1}")]
    SubnetFile(String, String),
}

#[derive(Deserialize)]
struct DaemonInfo {
    overlay_subnet: String,
    mtu: u32,
    /// Present only when IPv6 is enabled on silk-daemon.
    #[serde(default)]
    ipv6_prefix: Option<String>,
}

/// The daemon's `ipv6_prefix`: absent or empty means no IPv6; anything else must be an IPv6
/// network (host bits are cleared, as the daemon passes the BOSH `<ip>/<prefix>` through).
pub fn parse_ipv6_prefix(p: Option<&str>) -> Result<Option<Ipv6Network>, NetInfoError> {
    let Some(p) = p.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let n: Ipv6Network = p
        .parse()
        .map_err(|_| NetInfoError::Decode(format!("bad ipv6_prefix {p}")))?;
    Ok(Some(Ipv6Network::new(n.network(), n.prefix()).unwrap_or(n)))
}

/// Parses a flannel-style subnet file (`FLANNEL_SUBNET=…`, `FLANNEL_MTU=…`).
pub fn parse_subnet_file(text: &str) -> Option<NetInfo> {
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(k).map(str::trim))
    };
    Some(NetInfo {
        subnet: get("FLANNEL_SUBNET=")?.parse().ok()?,
        mtu: get("FLANNEL_MTU=")?.parse().ok()?,
        ipv6_prefix: None,
    })
}

impl Config {
    /// Asks silk-daemon (or reads the subnet file); a non-zero `mtu` in the config wins.
    pub fn net_info(&self) -> Result<NetInfo, NetInfoError> {
        if self.mtu < 0 {
            return Err(NetInfoError::BadMtu(self.mtu));
        }
        let mut info = if !self.subnet_file.is_empty() {
            let text = std::fs::read_to_string(&self.subnet_file)
                .map_err(|e| NetInfoError::SubnetFile(self.subnet_file.clone(), e.to_string()))?;
            parse_subnet_file(&text).ok_or_else(|| {
                NetInfoError::SubnetFile(self.subnet_file.clone(), "malformed".into())
            })?
        } else {
            let addr = format!("127.0.0.1:{}", self.daemon_port);
            let r = silk_cni_skel::http::get(&addr, "/", Duration::from_secs(5))?;
            if !(200..300).contains(&r.status) {
                return Err(NetInfoError::Status(r.status, r.body));
            }
            let d: DaemonInfo =
                serde_json::from_str(&r.body).map_err(|e| NetInfoError::Decode(e.to_string()))?;
            let subnet: Ipv4Network = d
                .overlay_subnet
                .parse()
                .map_err(|_| NetInfoError::Decode(format!("bad subnet {}", d.overlay_subnet)))?;
            NetInfo {
                subnet: Ipv4Network::new(subnet.network(), subnet.prefix()).unwrap_or(subnet),
                mtu: d.mtu,
                ipv6_prefix: parse_ipv6_prefix(d.ipv6_prefix.as_deref())?,
            }
        };
        if self.mtu > 0 {
            info.mtu = u32::try_from(self.mtu).unwrap_or(info.mtu);
        }
        Ok(info)
    }
}

/// `s-` / `c-` + each octet zero-padded to three digits.
pub fn veth_names(ip: Ipv4Addr) -> (String, String) {
    let o = ip.octets();
    let digits = format!("{:03}{:03}{:03}{:03}", o[0], o[1], o[2], o[3]);
    (format!("s-{digits}"), format!("c-{digits}"))
}

/// Host (`aa:aa:`) and container (`ee:ee:`) MACs derived from the container IP.
pub fn macs(ip: Ipv4Addr) -> (String, String) {
    let o = ip.octets();
    let tail = format!("{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
    (format!("aa:aa:{tail}"), format!("ee:ee:{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs_follow_the_contract() {
        let ip = Ipv4Addr::new(10, 255, 30, 2);
        assert_eq!(
            veth_names(ip),
            ("s-010255030002".into(), "c-010255030002".into())
        );
        assert_eq!(
            macs(ip),
            ("aa:aa:0a:ff:1e:02".into(), "ee:ee:0a:ff:1e:02".into())
        );
    }

    #[test]
    fn parses_delegate_config_and_subnet_file() {
        let c: Config = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","daemonPort":23954,"dataDir":"/d","datastore":"/s.json","mtu":0,"name":"silk","type":"silk-cni"}"#,
        )
        .unwrap();
        assert_eq!((c.daemon_port, c.data_dir.as_str()), (23954, "/d"));
        let n = parse_subnet_file("FLANNEL_SUBNET=10.255.7.0/24\nFLANNEL_MTU=1450\n").unwrap();
        assert_eq!(
            (n.subnet.to_string().as_str(), n.mtu),
            ("10.255.7.0/24", 1450)
        );
        let bad = Config {
            mtu: -1,
            ..Config::default()
        };
        assert!(bad
            .net_info()
            .unwrap_err()
            .to_string()
            .starts_with("invalid config:"));
    }

    #[test]
    fn ipv6_prefix_is_optional_normalised_and_must_be_ipv6() {
        assert_eq!(parse_ipv6_prefix(None).unwrap(), None);
        assert_eq!(parse_ipv6_prefix(Some("")).unwrap(), None);
        assert_eq!(
            parse_ipv6_prefix(Some("2001:db8:ab::/64"))
                .unwrap()
                .map(|n| n.to_string()),
            Some("2001:db8:ab::/64".into())
        );
        assert_eq!(
            parse_ipv6_prefix(Some("2001:db8:ab::7/80"))
                .unwrap()
                .map(|n| n.to_string()),
            Some("2001:db8:ab::/80".into())
        );
        for bad in ["10.0.0.0/24", "nonsense", "2001:db8::/129"] {
            assert!(
                parse_ipv6_prefix(Some(bad)).is_err(),
                "{bad} should be refused"
            );
        }
    }
}
