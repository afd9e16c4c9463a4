//! The CNI result (interfaces, ips, routes, dns) and its conversion between spec versions.
//!
//! One struct holds every version's fields; [`CniResult::to_version_json`] writes the shape of
//! the requested version: 0.3.x/0.4.0 carry `ips[].version`, 1.0.0+ drop it, and the 1.1.0-only
//! fields are left out for older versions.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CniError;
use crate::version::{SpecVersion, V1_0_0, V1_1_0};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR notation, e.g. `10.255.30.2/32`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

impl IpConfig {
    /// The address without its prefix length.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.address.split('/').next()?.parse().ok()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A version-neutral result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Serialize)]
struct WireIp<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
}

#[derive(Serialize)]
struct WireResult<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<Interface>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<WireIp<'a>>,
    #[serde(skip_serializing_if = "<[Route]>::is_empty")]
    routes: &'a [Route],
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<&'a Dns>,
}

#[derive(Deserialize)]
struct AnyIp {
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct AnyResult {
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<AnyIp>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Option<Dns>,
}

impl CniResult {
    /// Parses a result of any supported version (0.3.0 and later shapes).
    pub fn from_value(v: &Value) -> Result<CniResult, serde_json::Error> {
        let any: AnyResult = serde_json::from_value(v.clone())?;
        Ok(CniResult {
            interfaces: any.interfaces,
            ips: any
                .ips
                .into_iter()
                .map(|i| IpConfig {
                    address: i.address,
                    gateway: i.gateway,
                    interface: i.interface,
                })
                .collect(),
            routes: any.routes,
            dns: any.dns.unwrap_or_default(),
        })
    }

    /// The result as JSON text in the shape of `version` (e.g. `1.0.0`, `0.4.0`), keys in the
    /// order the Go library writes them.
    pub fn to_version_json(&self, version: &str) -> Result<String, CniError> {
        let v = SpecVersion::parse(version)
            .filter(|v| *v >= SpecVersion(0, 3, 0))
            .ok_or_else(|| {
                CniError::internal(format!(
                    "converting to CNI version {version}: unsupported version"
                ))
            })?;
        let wire = WireResult {
            cni_version: version,
            interfaces: self
                .interfaces
                .iter()
                .map(|i| Interface {
                    mtu: if v < V1_1_0 { None } else { i.mtu },
                    ..i.clone()
                })
                .collect(),
            ips: self
                .ips
                .iter()
                .map(|ip| WireIp {
                    version: (v < V1_0_0).then(|| if ip.address.contains(':') { "6" } else { "4" }),
                    address: &ip.address,
                    gateway: ip.gateway.as_deref(),
                    interface: ip.interface,
                })
                .collect(),
            routes: &self.routes,
            dns: (!self.dns.is_empty()).then_some(&self.dns),
        };
        serde_json::to_string(&wire)
            .map_err(|e| CniError::internal(format!("encoding result: {e}")))
    }

    /// The first IPv4 address of `ips`, as garden-external-networker picks it.
    pub fn first_ipv4(&self) -> Option<std::net::Ipv4Addr> {
        self.ips.iter().find_map(|i| match i.ip() {
            Some(std::net::IpAddr::V4(v4)) => Some(v4),
            _ => None,
        })
    }

    /// The first IPv6 address of `ips`.
    pub fn first_ipv6(&self) -> Option<std::net::Ipv6Addr> {
        self.ips.iter().find_map(|i| match i.ip() {
            Some(std::net::IpAddr::V6(v6)) => Some(v6),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silk_result() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "s-010255030002".into(),
                    mac: "aa:aa:0a:ff:1e:02".into(),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: "ee:ee:0a:ff:1e:02".into(),
                    sandbox: "/var/vcap/data/garden-cni/container-netns/h".into(),
                    ..Default::default()
                },
            ],
            ips: vec![IpConfig {
                address: "10.255.30.2/32".into(),
                gateway: Some("169.254.0.1".into()),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("169.254.0.1".into()),
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn renders_the_upstream_1_0_0_result() {
        let got = silk_result().to_version_json("1.0.0").unwrap();
        assert_eq!(
            got,
            concat!(
                r#"{"cniVersion":"1.0.0","interfaces":[{"name":"s-010255030002","mac":"aa:aa:0a:ff:1e:02"},"#,
                r#"{"name":"eth0","mac":"ee:ee:0a:ff:1e:02","sandbox":"/var/vcap/data/garden-cni/container-netns/h"}],"#,
                r#""ips":[{"address":"10.255.30.2/32","gateway":"169.254.0.1","interface":1}],"#,
                r#""routes":[{"dst":"0.0.0.0/0","gw":"169.254.0.1"}]}"#
            )
        );
    }

    #[test]
    fn older_versions_carry_ip_version_and_round_trip() {
        let v: Value =
            serde_json::from_str(&silk_result().to_version_json("0.4.0").unwrap()).unwrap();
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(CniResult::from_value(&v).unwrap(), silk_result());
        assert!(silk_result()
            .to_version_json("0.3.1")
            .unwrap()
            .starts_with(r#"{"cniVersion":"0.3.1""#));
        assert!(silk_result().to_version_json("0.2.0").is_err());
    }

    #[test]
    fn dns_is_omitted_when_empty_and_kept_otherwise() {
        let mut r = silk_result();
        assert!(!r.to_version_json("1.0.0").unwrap().contains("dns"));
        r.dns.nameservers = vec!["169.254.0.53".into()];
        assert!(r
            .to_version_json("1.0.0")
            .unwrap()
            .ends_with(r#""dns":{"nameservers":["169.254.0.53"]}}"#));
        assert_eq!(r.first_ipv4(), Some("10.255.30.2".parse().unwrap()));
    }
}
