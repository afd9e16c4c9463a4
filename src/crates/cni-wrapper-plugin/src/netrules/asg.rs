//! Static ASGs: garden `NetOutRule`s converted to netout rules (cni.md §2.4, §4.6), per
//! address family, with upstream's drop messages for rules that cannot be expressed.

use std::net::IpAddr;

use serde::Deserialize;
use silk_dataplane::iptables::egress::{asg_match, AsgMatch};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IpRange {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Icmps {
    #[serde(default, rename = "type")]
    pub kind: u8,
    #[serde(default)]
    pub code: Option<u8>,
}

/// Garden's `NetOutRule` (Go omitempty: zero values are absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NetOutRule {
    pub protocol: u8,
    pub networks: Vec<IpRange>,
    pub ports: Vec<PortRange>,
    pub icmps: Option<Icmps>,
    pub log: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AsgError {
    #[error("invalid ip range {0}-{1}")]
    InvalidRange(String, String),
}

/// Converted rule texts (without chain or target), in input order, duplicates removed, plus the
/// messages for dropped rules (written to stderr by the plugin, as upstream does).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Converted {
    pub rules: Vec<(String, bool)>,
    pub dropped: Vec<String>,
}

/// The range's ends when both are of `family`.
fn range_of(r: &IpRange, family: Family) -> Result<Option<(IpAddr, IpAddr)>, AsgError> {
    let bad = || AsgError::InvalidRange(r.start.clone(), r.end.clone());
    let s: IpAddr = r.start.trim().parse().map_err(|_| bad())?;
    let e: IpAddr = r.end.trim().parse().map_err(|_| bad())?;
    let f = match (s, e) {
        (IpAddr::V4(_), IpAddr::V4(_)) => Some(Family::V4),
        (IpAddr::V6(_), IpAddr::V6(_)) => Some(Family::V6),
        _ => None,
    };
    Ok((f == Some(family)).then_some((s, e)))
}

fn describe(r: &NetOutRule) -> String {
    format!("{r:?}")
}

/// Converts `rules` for `family`. `global_log` is `iptables_asg_logging`; each returned entry
/// carries whether it goes to the log chain (`-g`) rather than `-j ACCEPT`.
pub fn convert(
    rules: &[NetOutRule],
    family: Family,
    global_log: bool,
) -> Result<Converted, AsgError> {
    let mut out = Converted::default();
    for rule in rules {
        let log = rule.log || global_log;
        let proto = match rule.protocol {
            1 => "tcp",
            2 => "udp",
            3 => "icmp",
            _ => "all",
        };
        match proto {
            "tcp" | "udp" if rule.ports.is_empty() => {
                out.dropped.push(format!(
                    "UDP/TCP rule must specify ports: {}",
                    describe(rule)
                ));
                continue;
            }
            "icmp" if rule.icmps.and_then(|i| i.code).is_none() => {
                out.dropped.push(format!(
                    "ICMP rule must specify ICMP type/code: {}",
                    describe(rule)
                ));
                continue;
            }
            "icmp" if !rule.ports.is_empty() => {
                out.dropped.push(format!(
                    "ICMP rule must not specify ports: {}",
                    describe(rule)
                ));
                continue;
            }
            "all" if !rule.ports.is_empty() => {
                out.dropped.push(format!(
                    "Rule for all protocols (TCP/UDP/ICMP) must not specify ports: {}",
                    describe(rule)
                ));
                continue;
            }
            _ => {}
        }
        for net in &rule.networks {
            let Some((start, end)) = range_of(net, family)? else {
                continue;
            };
            let mut push = |m: AsgMatch| out.rules.push((asg_match(m, start, end), log));
            match proto {
                "tcp" | "udp" => {
                    for p in &rule.ports {
                        let (start, end) = (p.start, p.end);
                        push(if proto == "tcp" {
                            AsgMatch::Tcp { start, end }
                        } else {
                            AsgMatch::Udp { start, end }
                        });
                    }
                }
                "icmp" => {
                    let i = rule.icmps.unwrap_or(Icmps {
                        kind: 0,
                        code: None,
                    });
                    push(AsgMatch::Icmp {
                        kind: i.kind,
                        code: i.code.unwrap_or(0),
                    });
                }
                _ => push(AsgMatch::All),
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.rules.retain(|r| seen.insert(r.clone()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Vec<NetOutRule> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn converts_each_protocol_and_drops_the_inexpressible() {
        let r = rules(
            r#"[{"protocol":1,"networks":[{"start":"10.10.0.0","end":"10.10.255.255"}],"ports":[{"start":443,"end":443}],"log":true},
                {"protocol":2,"networks":[{"start":"8.8.8.8","end":"8.8.8.8"}],"ports":[{"start":53,"end":53}]},
                {"protocol":3,"networks":[{"start":"0.0.0.0","end":"255.255.255.255"}],"icmps":{"type":255,"code":255}},
                {"protocol":3,"networks":[{"start":"1.1.1.1","end":"1.1.1.1"}],"icmps":{"type":8}},
                {"networks":[{"start":"10.20.0.0","end":"10.20.0.255"}]},
                {"protocol":1,"networks":[{"start":"10.30.0.0","end":"10.30.0.255"}]},
                {"protocol":1,"networks":[{"start":"10.10.0.0","end":"10.10.255.255"}],"ports":[{"start":443,"end":443}],"log":true},
                {"protocol":1,"networks":[{"start":"2001:db8::","end":"2001:db8::ff"}],"ports":[{"start":80,"end":90}]}]"#,
        );
        let c = convert(&r, Family::V4, false).unwrap();
        assert_eq!(
            c.rules,
            vec![
                ("-p tcp -m iprange --dst-range 10.10.0.0-10.10.255.255 -m tcp --dport 443".to_string(), true),
                ("-p udp -m iprange --dst-range 8.8.8.8-8.8.8.8 -m udp --dport 53".to_string(), false),
                ("-p icmp -m iprange --dst-range 0.0.0.0-255.255.255.255 -m icmp --icmp-type any".to_string(), false),
                ("-m iprange --dst-range 10.20.0.0-10.20.0.255".to_string(), false),
            ]
        );
        assert_eq!(c.dropped.len(), 2);
        assert!(c.dropped[0].starts_with("ICMP rule must specify ICMP type/code: "));
        assert!(c.dropped[1].starts_with("UDP/TCP rule must specify ports: "));
        let v6 = convert(&r, Family::V6, true).unwrap();
        assert_eq!(
            v6.rules,
            vec![(
                "-p tcp -m iprange --dst-range 2001:db8::-2001:db8::ff -m tcp --dport 80:90"
                    .to_string(),
                true
            )]
        );
    }

    #[test]
    fn bad_ranges_are_errors() {
        let r = rules(r#"[{"networks":[{"start":"nope","end":"1.1.1.1"}]}]"#);
        assert!(convert(&r, Family::V4, false).is_err());
    }
}
