//! ASG rules to iptables match text (policy contract §3.7.3), per address family, through the
//! renderer cni-wrapper-plugin uses for static ASGs (`silk_dataplane::iptables::egress`).
//!
//! - `destination`: comma-separated IPs (`a-a`), CIDRs (network to broadcast address) and
//!   `a-b` ranges; an entry that does not parse fails the conversion (the caller keeps the
//!   container's current chain). An entry goes to the family of its first address.
//! - `ports`: comma-separated ports and `a-b` ranges, trimmed; unparsable items and reversed
//!   ranges are skipped.
//! - `tcp`/`udp` without ports, `icmp`/`all` with ports: the rule is skipped (reported).
//! - ICMP type and code are cut to 8 bits as upstream casts them: `-1` is 255, every type.
//! - Other protocols grant nothing. Exact duplicates are dropped, the first one kept.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use silk_core::asg::SecurityGroupRule;
use silk_dataplane::iptables::egress::{asg_match, AsgMatch};
use silk_dataplane::iptables::Family;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("invalid destination {0:?}")]
    Destination(String),
}

/// A converted rule set: (match text, goes to the log chain) in rule order, and the rules that
/// were skipped, described.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Converted {
    pub rules: Vec<(String, bool)>,
    pub skipped: Vec<String>,
}

/// One `destination` entry as an address range.
pub fn parse_destination(entry: &str) -> Result<(IpAddr, IpAddr), ConvertError> {
    let e = entry.trim();
    let bad = || ConvertError::Destination(e.to_string());
    if let Some((a, b)) = e.split_once('-') {
        let (a, b): (IpAddr, IpAddr) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a.is_ipv4() != b.is_ipv4() {
            return Err(bad());
        }
        return Ok((a, b));
    }
    if e.contains('/') {
        let net: IpNetwork = e.parse().map_err(|_| bad())?;
        return Ok((net.network(), net.broadcast_or_last()));
    }
    let ip: IpAddr = e.parse().map_err(|_| bad())?;
    Ok((ip, ip))
}

/// The last address of a network (IPv4 broadcast; for IPv6 the highest address).
trait LastAddress {
    fn broadcast_or_last(&self) -> IpAddr;
}

impl LastAddress for IpNetwork {
    fn broadcast_or_last(&self) -> IpAddr {
        match self {
            IpNetwork::V4(n) => IpAddr::V4(n.broadcast()),
            IpNetwork::V6(n) => {
                let host_bits = 128 - u32::from(n.prefix());
                let mask = if host_bits == 128 {
                    u128::MAX
                } else {
                    (1u128 << host_bits) - 1
                };
                IpAddr::V6((u128::from(n.network()) | mask).into())
            }
        }
    }
}

/// `ports` as ranges; unparsable items are skipped, as upstream does, and so are reversed
/// ranges (iptables refuses them, which would fail the whole restore).
pub fn parse_ports(ports: &str) -> Vec<(u16, u16)> {
    ports
        .split(',')
        .filter_map(|item| {
            let item = item.trim();
            let (a, b) = match item.split_once('-') {
                Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
                None => {
                    let p = item.parse().ok()?;
                    (p, p)
                }
            };
            (a <= b).then_some((a, b))
        })
        .collect()
}

fn family_of(ip: IpAddr) -> Family {
    if ip.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

/// Converts `rules` for `family`; `global_log` is `iptables_asg_logging`.
pub fn convert_rules(
    rules: &[SecurityGroupRule],
    family: Family,
    global_log: bool,
) -> Result<Converted, ConvertError> {
    let mut out = Converted::default();
    for rule in rules {
        let log = rule.log || global_log;
        let ports = parse_ports(&rule.ports);
        let has_ports = !rule.ports.trim().is_empty();
        let proto = rule.protocol.as_str();
        let skip = match proto {
            "tcp" | "udp" if ports.is_empty() => Some("tcp and udp rules need ports"),
            "icmp" | "all" if has_ports => Some("icmp and all rules take no ports"),
            "tcp" | "udp" | "icmp" | "all" => None,
            _ => Some("unknown protocol"),
        };
        // Destinations are checked even for skipped rules: a malformed one is an error.
        let mut ranges = Vec::new();
        for entry in rule.destination.split(',') {
            let (a, b) = parse_destination(entry)?;
            if family_of(a) == family {
                ranges.push((a, b));
            }
        }
        if let Some(why) = skip {
            out.skipped.push(format!(
                "{why}: protocol {:?} destination {:?} ports {:?}",
                rule.protocol, rule.destination, rule.ports
            ));
            continue;
        }
        for (a, b) in ranges {
            let mut push = |m: AsgMatch| out.rules.push((asg_match(m, a, b), log));
            match proto {
                "tcp" => ports
                    .iter()
                    .for_each(|&(start, end)| push(AsgMatch::Tcp { start, end })),
                "udp" => ports
                    .iter()
                    .for_each(|&(start, end)| push(AsgMatch::Udp { start, end })),
                // Upstream casts the int to uint8: -1 becomes 255.
                "icmp" => push(AsgMatch::Icmp {
                    kind: rule.icmp_type as u8,
                    code: rule.code as u8,
                }),
                _ => push(AsgMatch::All),
            }
        }
    }
    let mut seen = HashSet::new();
    out.rules.retain(|r| seen.insert(r.clone()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(protocol: &str, destination: &str, ports: &str) -> SecurityGroupRule {
        SecurityGroupRule {
            protocol: protocol.into(),
            destination: destination.into(),
            ports: ports.into(),
            ..SecurityGroupRule::default()
        }
    }

    #[test]
    fn destinations_become_ranges() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            parse_destination("10.0.11.0/24").unwrap(),
            (ip("10.0.11.0"), ip("10.0.11.255"))
        );
        assert_eq!(
            parse_destination(" 8.8.8.8 ").unwrap(),
            (ip("8.8.8.8"), ip("8.8.8.8"))
        );
        assert_eq!(
            parse_destination("0.0.0.0-9.255.255.255").unwrap(),
            (ip("0.0.0.0"), ip("9.255.255.255"))
        );
        assert_eq!(
            parse_destination("2001:db8::/120").unwrap(),
            (ip("2001:db8::"), ip("2001:db8::ff"))
        );
        for bad in [
            "",
            "10.0.0.300",
            "10.0.0.0/33",
            "10.0.0.1-2001:db8::1",
            "x-y",
        ] {
            assert!(parse_destination(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_are_trimmed_and_bad_items_skipped() {
        assert_eq!(
            parse_ports(" 80, 443 ,8000-9000,x,70000,90-80"),
            vec![(80, 80), (443, 443), (8000, 9000)]
        );
        assert!(parse_ports("").is_empty());
    }

    #[test]
    fn converts_each_protocol_per_destination_and_port() {
        let mut logged = rule("tcp", "10.0.11.0/24", "80,443");
        logged.log = true;
        let mut icmp = rule("icmp", "0.0.0.0/0", "");
        icmp.icmp_type = -1;
        icmp.code = -1;
        let rules = vec![
            rule("udp", "8.8.8.8,8.8.4.4,2001:db8::1", "53"),
            logged.clone(),
            icmp,
            rule("all", "10.20.0.0/24", ""),
            rule("tcp", "10.30.0.0/24", ""),
            rule("all", "10.40.0.0/24", "80"),
            rule("sctp", "10.50.0.0/24", "80"),
            logged,
        ];
        let c = convert_rules(&rules, Family::V4, false).unwrap();
        let text: Vec<(&str, bool)> = c.rules.iter().map(|(s, l)| (s.as_str(), *l)).collect();
        assert_eq!(
            text,
            vec![
                ("-p udp -m iprange --dst-range 8.8.8.8-8.8.8.8 -m udp --dport 53", false),
                ("-p udp -m iprange --dst-range 8.8.4.4-8.8.4.4 -m udp --dport 53", false),
                ("-p tcp -m iprange --dst-range 10.0.11.0-10.0.11.255 -m tcp --dport 80", true),
                ("-p tcp -m iprange --dst-range 10.0.11.0-10.0.11.255 -m tcp --dport 443", true),
                ("-p icmp -m iprange --dst-range 0.0.0.0-255.255.255.255 -m icmp --icmp-type any", false),
                ("-m iprange --dst-range 10.20.0.0-10.20.0.255", false),
            ]
        );
        assert_eq!(c.skipped.len(), 3);
        let v6 = convert_rules(&rules, Family::V6, true).unwrap();
        assert_eq!(
            v6.rules,
            vec![(
                "-p udp -m iprange --dst-range 2001:db8::1-2001:db8::1 -m udp --dport 53"
                    .to_string(),
                true
            )]
        );
    }

    #[test]
    fn a_bad_destination_fails_the_set() {
        let rules = vec![rule("all", "10.0.0.0/8", ""), rule("all", "nope", "")];
        assert_eq!(
            convert_rules(&rules, Family::V4, false),
            Err(ConvertError::Destination("nope".into()))
        );
    }
}
