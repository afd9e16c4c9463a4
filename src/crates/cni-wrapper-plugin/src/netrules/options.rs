//! Validated inputs of the rule planner: [`RuleOptions`] from the wrapper config (once per
//! invocation) and [`Container`] for the container being wired.

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;

use silk_dataplane::iptables::egress::{self, EgressError, EgressOptions, OutboundLimit};
use silk_dataplane::iptables::Family;

use crate::config::{DenyNetworks, OutboundConnections, PortMapping, WrapperConfig};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("invalid DNS server \"{0}\", must be valid IP address")]
    Dns(String),
    #[error("initialize net out: input rules: host {proto} services: {msg}")]
    HostService { proto: &'static str, msg: String },
    #[error("initialize net out: deny networks: invalid CIDR address: {0}")]
    DenyNetwork(String),
    #[error("initialize net out: deny networks: {0}")]
    DenyFamily(String),
    #[error("adding netin rule: invalid ip: {0}")]
    InstanceAddress(String),
    #[error("invalid ingress tag: {0}")]
    IngressTag(String),
    #[error("invalid no_masquerade_cidr_range: {0}")]
    NoMasq(String),
    #[error("invalid interface name {0:?}")]
    InterfaceName(String),
}

pub use silk_dataplane::iptables::egress::DenyLists;

#[derive(Debug, Clone)]
pub struct RuleOptions {
    pub instance_address: Ipv4Addr,
    pub ingress_tag: u32,
    pub vtep: String,
    pub asg_logging: bool,
    pub c2c_logging: bool,
    pub denied_logs_per_sec: i64,
    pub accepted_udp_logs_per_sec: i64,
    pub outbound: OutboundConnections,
    pub dns_link_local: Vec<Ipv4Addr>,
    pub host_tcp_v4: Vec<(IpAddr, u16)>,
    pub host_udp_v4: Vec<(IpAddr, u16)>,
    pub host_tcp_v6: Vec<(IpAddr, u16)>,
    pub host_udp_v6: Vec<(IpAddr, u16)>,
    pub deny_v4: DenyLists,
    pub deny_v6: DenyLists,
}

/// One container as the planner sees it.
#[derive(Debug, Clone)]
pub struct Container {
    pub handle: String,
    pub ip: IpAddr,
    pub underlay_ifs: Vec<String>,
    pub port_mappings: Vec<PortMapping>,
    pub workload: String,
    /// The `! -d` exclusion of the MASQUERADE rule (`no_masquerade_cidr_range` or the cell lease).
    pub masq_exclude: Option<String>,
}

fn parse_services(
    list: &[String],
    proto: &'static str,
    v6: bool,
) -> Result<Vec<(IpAddr, u16)>, OptionsError> {
    let err = |msg: String| OptionsError::HostService { proto, msg };
    list.iter()
        .map(|s| {
            let (h, p) = s
                .trim()
                .rsplit_once(':')
                .ok_or_else(|| err(format!("address {s}: missing port in address")))?;
            let h = h.trim_start_matches('[').trim_end_matches(']');
            let ip: IpAddr = h
                .parse()
                .map_err(|_| err(format!("invalid IP address: {h}")))?;
            let port: u16 = p.parse().map_err(|_| err(format!("invalid port: {p}")))?;
            match (ip.is_ipv6(), v6) {
                (true, false) => Err(err(format!("network is ipv6 in ipv4 mode: {ip}"))),
                (false, true) => Err(err(format!("network is ipv4 in ipv6 mode: {ip}"))),
                _ => Ok((ip, port)),
            }
        })
        .collect()
}

/// A deny entry as CIDR text (see [`egress::parse_deny`]), with the wrapper's error text.
fn parse_deny(entry: &str, v6: bool) -> Result<String, OptionsError> {
    let family = if v6 { Family::V6 } else { Family::V4 };
    egress::parse_deny(entry, family).map_err(|e| match e {
        EgressError::DenyNetwork(x) => OptionsError::DenyNetwork(x),
        other => OptionsError::DenyFamily(other.to_string()),
    })
}

fn deny_lists(d: &DenyNetworks, v6: bool) -> Result<DenyLists, OptionsError> {
    let conv = |l: &[String]| {
        l.iter()
            .map(|e| parse_deny(e, v6))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(DenyLists {
        always: conv(&d.always)?,
        running: conv(&d.running)?,
        staging: conv(&d.staging)?,
    })
}

impl RuleOptions {
    /// The options of the shared egress renderer for `family`.
    pub fn egress(&self, family: Family) -> EgressOptions {
        let oc = &self.outbound;
        EgressOptions {
            asg_logging: self.asg_logging,
            denied_logs_per_sec: self.denied_logs_per_sec,
            outbound: OutboundLimit {
                limit: oc.limit,
                logging: oc.logging,
                dry_run: oc.dry_run,
                burst: oc.burst,
                rate_per_sec: oc.rate_per_sec,
            },
            deny: match family {
                Family::V4 => self.deny_v4.clone(),
                Family::V6 => self.deny_v6.clone(),
            },
        }
    }

    pub fn from_config(c: &WrapperConfig) -> Result<RuleOptions, OptionsError> {
        let mut dns_link_local = Vec::new();
        for s in &c.dns_servers {
            let ip: IpAddr = s.trim().parse().map_err(|_| OptionsError::Dns(s.clone()))?;
            if let IpAddr::V4(v4) = ip {
                if v4.is_link_local() {
                    dns_link_local.push(v4);
                }
            }
        }
        // Interface names go into the restore payload as written: one with whitespace or a
        // newline would change what iptables-restore reads (upstream's per-rule exec failed).
        for name in std::iter::once(&c.vtep_name).chain(&c.temporary_underlay_interface_names) {
            if silk_cni_skel::env::validate_ifname(name).is_err() {
                return Err(OptionsError::InterfaceName(name.clone()));
            }
        }
        let instance_address = c
            .instance_address
            .parse()
            .map_err(|_| OptionsError::InstanceAddress(c.instance_address.clone()))?;
        let tag = c
            .ingress_tag
            .trim_start_matches("0x")
            .trim_start_matches("0X");
        let ingress_tag = u32::from_str_radix(tag, 16)
            .map_err(|_| OptionsError::IngressTag(c.ingress_tag.clone()))?;
        Ok(RuleOptions {
            instance_address,
            ingress_tag,
            vtep: c.vtep_name.clone(),
            asg_logging: c.iptables_asg_logging,
            c2c_logging: c.iptables_c2c_logging,
            denied_logs_per_sec: c.iptables_denied_logs_per_sec,
            accepted_udp_logs_per_sec: c.iptables_accepted_udp_logs_per_sec,
            outbound: c.outbound_connections.clone(),
            dns_link_local,
            host_tcp_v4: parse_services(&c.host_tcp_services, "tcp", false)?,
            host_udp_v4: parse_services(&c.host_udp_services, "udp", false)?,
            host_tcp_v6: parse_services(&c.host_tcp_services_ipv6, "tcp", true)?,
            host_udp_v6: parse_services(&c.host_udp_services_ipv6, "udp", true)?,
            deny_v4: deny_lists(&c.deny_networks, false)?,
            deny_v6: deny_lists(&c.deny_networks_ipv6, true)?,
        })
    }
}

/// `no_masquerade_cidr_range` parsed, or `None` when empty.
pub fn no_masq_range(c: &WrapperConfig) -> Result<Option<String>, OptionsError> {
    let s = c.no_masquerade_cidr_range.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let net: IpNetwork = s.parse().map_err(|_| OptionsError::NoMasq(s.to_string()))?;
    Ok(Some(format!("{}/{}", net.network(), net.prefix())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_entries_are_normalised_and_bare_ips_accepted() {
        assert_eq!(parse_deny("10.1.2.3/8", false).unwrap(), "10.0.0.0/8");
        assert_eq!(parse_deny("10.0.0.5", false).unwrap(), "10.0.0.5/32");
        assert!(parse_deny("10.0.0.0/33", false).is_err());
        assert!(parse_deny("2001:db8::/32", false).is_err());
        assert_eq!(parse_deny("2001:db8::1/32", true).unwrap(), "2001:db8::/32");
    }

    #[test]
    fn services_need_ip_and_port_of_the_right_family() {
        assert_eq!(
            parse_services(&["169.254.0.2:9001".into()], "tcp", false).unwrap(),
            vec![("169.254.0.2".parse().unwrap(), 9001)]
        );
        assert!(parse_services(&["169.254.0.2".into()], "tcp", false).is_err());
        assert!(parse_services(&["[::1]:80".into()], "tcp", false).is_err());
        assert!(parse_services(&["[2001:db8::1]:80".into()], "tcp", true).is_ok());
    }
}
