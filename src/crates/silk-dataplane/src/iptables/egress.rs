//! The egress rules of one container, shared by cni-wrapper-plugin (static ASGs, written into
//! `netout--<handle>`) and vxlan-policy-agent (dynamic ASGs, written into `asg-<handle>`):
//! cni.md §4.5-4.6, policy contract §3.7.2-3.7.3. Both paths produce the same list in the same
//! order, so a container's egress reads the same whichever path wrote it:
//!
//! ```text
//! -m state --state RELATED,ESTABLISHED -j ACCEPT
//! -p tcp -m state --state INVALID -j DROP
//! [outbound connection limit: hashlimit -> --rl-log chain or REJECT]
//! [deny networks, last listed first: -d <cidr> -j REJECT]
//! [ASG rules, last listed first: <match> -j ACCEPT | -g <netout log chain>]
//! [-m limit ... -j LOG --log-prefix "DENY_<handle> "]   with ASG logging
//! -j REJECT --reject-with icmp(6)-port-unreachable
//! ```
//!
//! Rules are rendered in the canonical text `iptables-save` prints, so a saved chain can be
//! compared with a planned one ([`canonical`] covers the defaults iptables leaves out).

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::backend::Family;
use super::chain::{log_prefix, ChainName};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EgressError {
    #[error("invalid CIDR address: {0}")]
    DenyNetwork(String),
    #[error("network is ipv6 in ipv4 chain: {0}")]
    V6InV4(String),
    #[error("network is ipv4 in ipv6 chain: {0}")]
    V4InV6(String),
}

/// `REJECT` with the family's ICMP answer.
pub fn reject(family: Family) -> &'static str {
    match family {
        Family::V4 => "-j REJECT --reject-with icmp-port-unreachable",
        Family::V6 => "-j REJECT --reject-with icmp6-port-unreachable",
    }
}

/// Deny networks normalised to `network/prefix` text, per workload list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenyLists {
    pub always: Vec<String>,
    pub running: Vec<String>,
    pub staging: Vec<String>,
}

impl DenyLists {
    /// `always`, then `running` for `app` and `task`, or `staging` for `staging`.
    pub fn for_workload(&self, workload: &str) -> Vec<String> {
        let mut out = self.always.clone();
        match workload {
            "app" | "task" => out.extend(self.running.iter().cloned()),
            "staging" => out.extend(self.staging.iter().cloned()),
            _ => {}
        }
        out
    }

    /// Parses the three lists of one family (see [`parse_deny`]).
    pub fn parse(
        always: &[String],
        running: &[String],
        staging: &[String],
        family: Family,
    ) -> Result<DenyLists, EgressError> {
        let conv = |l: &[String]| {
            l.iter()
                .map(|e| parse_deny(e, family))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(DenyLists {
            always: conv(always)?,
            running: conv(running)?,
            staging: conv(staging)?,
        })
    }
}

/// Parses a deny entry as CIDR; a bare IP is taken as a single host (/32 or /128) instead of
/// failing as upstream does (cni.md §1.2). The network is printed masked, as iptables-save
/// shows it.
pub fn parse_deny(entry: &str, family: Family) -> Result<String, EgressError> {
    let e = entry.trim();
    let bad = || EgressError::DenyNetwork(e.to_string());
    let net: IpNetwork = if e.contains('/') {
        e.parse().map_err(|_| bad())?
    } else {
        let ip: IpAddr = e.parse().map_err(|_| bad())?;
        IpNetwork::new(ip, if ip.is_ipv6() { 128 } else { 32 }).map_err(|_| bad())?
    };
    match (net.is_ipv6(), family) {
        (true, Family::V4) => Err(EgressError::V6InV4(e.to_string())),
        (false, Family::V6) => Err(EgressError::V4InV6(e.to_string())),
        _ => Ok(format!("{}/{}", net.network(), net.prefix())),
    }
}

/// `outbound_connections`: a hashlimit on new TCP connections per destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundLimit {
    pub limit: bool,
    pub logging: bool,
    pub dry_run: bool,
    pub burst: i64,
    pub rate_per_sec: i64,
}

impl Default for OutboundLimit {
    fn default() -> Self {
        OutboundLimit {
            limit: false,
            logging: false,
            dry_run: false,
            burst: 1000,
            rate_per_sec: 100,
        }
    }
}

impl OutboundLimit {
    /// The `--rl-log` chain exists when `(limit && logging) || dry_run`.
    pub fn has_rl_log_chain(&self) -> bool {
        (self.limit && self.logging) || self.dry_run
    }
}

/// What shapes a container's egress list besides its ASG rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressOptions {
    /// `iptables_asg_logging`: every ASG rule goes to the log chain, and denied packets are
    /// logged before the final REJECT.
    pub asg_logging: bool,
    pub denied_logs_per_sec: i64,
    pub outbound: OutboundLimit,
    /// The deny networks of the family being rendered.
    pub deny: DenyLists,
}

/// What an ASG rule matches besides the destination range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsgMatch {
    Tcp {
        start: u16,
        end: u16,
    },
    Udp {
        start: u16,
        end: u16,
    },
    /// ICMP type and code (255 is every type).
    Icmp {
        kind: u8,
        code: u8,
    },
    All,
}

/// The match text of an ASG rule to `start`-`end`, without target.
pub fn asg_match(m: AsgMatch, start: IpAddr, end: IpAddr) -> String {
    let range = format!("-m iprange --dst-range {start}-{end}");
    let ports = |a: u16, b: u16| {
        if a == b {
            a.to_string()
        } else {
            format!("{a}:{b}")
        }
    };
    match m {
        AsgMatch::Tcp { start: a, end: b } => {
            format!("-p tcp {range} -m tcp --dport {}", ports(a, b))
        }
        AsgMatch::Udp { start: a, end: b } => {
            format!("-p udp {range} -m udp --dport {}", ports(a, b))
        }
        // iptables-save prints type 255 (every type) as `any` whatever the code;
        // ip6tables-save prints it as numbers.
        AsgMatch::Icmp { kind, code } if start.is_ipv6() => {
            format!("-p ipv6-icmp {range} -m icmp6 --icmpv6-type {kind}/{code}")
        }
        AsgMatch::Icmp { kind: 255, .. } => format!("-p icmp {range} -m icmp --icmp-type any"),
        AsgMatch::Icmp { kind, code } => {
            format!("-p icmp {range} -m icmp --icmp-type {kind}/{code}")
        }
        AsgMatch::All => range,
    }
}

/// The final rules of a container's egress: the DENY log line with ASG logging, then REJECT.
/// Alone, this is what netout holds before any ASG is applied.
pub fn egress_tail(o: &EgressOptions, handle: &str, family: Family) -> Vec<String> {
    let mut out = Vec::new();
    if o.asg_logging {
        let d = o.denied_logs_per_sec;
        out.push(format!(
            "-m limit --limit {d}/sec --limit-burst {d} -j LOG --log-prefix \"{}\"",
            log_prefix(&format!("DENY_{handle}"))
        ));
    }
    out.push(reject(family).to_string());
    out
}

/// The whole egress list of a container with `workload` whose converted ASG rules are `asgs`
/// (match text, logged), in the order of the module documentation.
pub fn egress_rules(
    o: &EgressOptions,
    handle: &str,
    workload: &str,
    family: Family,
    asgs: &[(String, bool)],
) -> Vec<String> {
    let mut out = vec![
        "-m state --state RELATED,ESTABLISHED -j ACCEPT".to_string(),
        "-p tcp -m state --state INVALID -j DROP".to_string(),
    ];
    let oc = &o.outbound;
    if oc.limit || oc.dry_run {
        let target = if oc.logging || oc.dry_run {
            format!("-j {}", ChainName::netout_rl_log(handle))
        } else {
            reject(family).to_string()
        };
        // ceil(burst / rate) seconds in ms; huge values saturate instead of overflowing
        // (iptables then refuses the number).
        let rate = oc.rate_per_sec.max(1);
        let secs = oc.burst / rate + i64::from(oc.burst % rate != 0);
        let expire = secs.saturating_mul(1000);
        out.push(format!(
            "-p tcp -m conntrack --ctstate NEW -m hashlimit --hashlimit-above {}/sec --hashlimit-burst {} \
             --hashlimit-mode dstip,dstport --hashlimit-name {handle} --hashlimit-htable-expire {expire} {target}",
            oc.rate_per_sec, oc.burst
        ));
    }
    for net in o.deny.for_workload(workload).iter().rev() {
        out.push(format!("-d {net} {}", reject(family)));
    }
    let log_chain = ChainName::netout_log(handle);
    for (spec, log) in asgs.iter().rev() {
        if *log {
            out.push(format!("{spec} -g {log_chain}"));
        } else {
            out.push(format!("{spec} -j ACCEPT"));
        }
    }
    out.extend(egress_tail(o, handle, family));
    out
}

/// A rule in the form used to compare planned with saved text: the defaults `iptables-save`
/// leaves out are removed from both (`--limit-burst 5`; `--hashlimit-htable-expire`, which
/// follows from burst and rate and is printed only when it differs from the kernel's default).
pub fn canonical(spec: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut toks = spec.split(' ').peekable();
    while let Some(t) = toks.next() {
        match t {
            "--limit-burst" if toks.peek() == Some(&"5") => {
                toks.next();
            }
            "--hashlimit-htable-expire" => {
                toks.next();
            }
            _ => out.push(t),
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "6a7b8c9d-0e1f-4a2b-7c3d-4e5f6a7b8c9d";

    #[test]
    fn deny_entries_are_normalised_and_bare_ips_accepted() {
        assert_eq!(parse_deny("10.1.2.3/8", Family::V4).unwrap(), "10.0.0.0/8");
        assert_eq!(parse_deny("10.0.0.5", Family::V4).unwrap(), "10.0.0.5/32");
        assert!(parse_deny("10.0.0.0/33", Family::V4).is_err());
        assert_eq!(
            parse_deny("2001:db8::/32", Family::V4),
            Err(EgressError::V6InV4("2001:db8::/32".into()))
        );
        assert_eq!(
            parse_deny("2001:db8::1/32", Family::V6).unwrap(),
            "2001:db8::/32"
        );
    }

    /// cni.md §4.15 example C's netout chain: every option on.
    #[test]
    fn every_option_in_upstream_order() {
        let o = EgressOptions {
            asg_logging: true,
            denied_logs_per_sec: 1,
            outbound: OutboundLimit {
                limit: true,
                logging: true,
                ..OutboundLimit::default()
            },
            // As configured: a host bits set, parsed and masked.
            deny: DenyLists::parse(
                &["172.16.9.1/12".to_string()],
                &["192.168.0.0/16".to_string()],
                &["100.64.0.0/10".to_string()],
                Family::V4,
            )
            .unwrap(),
        };
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        let asgs = vec![
            (
                asg_match(
                    AsgMatch::Tcp {
                        start: 443,
                        end: 443,
                    },
                    v4("10.10.0.0"),
                    v4("10.10.255.255"),
                ),
                true,
            ),
            (
                asg_match(
                    AsgMatch::Icmp {
                        kind: 255,
                        code: 255,
                    },
                    v4("0.0.0.0"),
                    v4("255.255.255.255"),
                ),
                true,
            ),
            (
                asg_match(AsgMatch::All, v4("10.20.0.0"), v4("10.20.0.255")),
                true,
            ),
        ];
        assert_eq!(
            egress_rules(&o, H, "app", Family::V4, &asgs),
            vec![
                "-m state --state RELATED,ESTABLISHED -j ACCEPT",
                "-p tcp -m state --state INVALID -j DROP",
                "-p tcp -m conntrack --ctstate NEW -m hashlimit --hashlimit-above 100/sec --hashlimit-burst 1000 --hashlimit-mode dstip,dstport --hashlimit-name 6a7b8c9d-0e1f-4a2b-7c3d-4e5f6a7b8c9d --hashlimit-htable-expire 10000 -j netout--6a7b8c9d-0e1--rl-log",
                "-d 192.168.0.0/16 -j REJECT --reject-with icmp-port-unreachable",
                "-d 172.16.0.0/12 -j REJECT --reject-with icmp-port-unreachable",
                "-m iprange --dst-range 10.20.0.0-10.20.0.255 -g netout--6a7b8c9d-0e1f-4--log",
                "-p icmp -m iprange --dst-range 0.0.0.0-255.255.255.255 -m icmp --icmp-type any -g netout--6a7b8c9d-0e1f-4--log",
                "-p tcp -m iprange --dst-range 10.10.0.0-10.10.255.255 -m tcp --dport 443 -g netout--6a7b8c9d-0e1f-4--log",
                "-m limit --limit 1/sec --limit-burst 1 -j LOG --log-prefix \"DENY_6a7b8c9d-0e1f-4a2b-7c3d \"",
                "-j REJECT --reject-with icmp-port-unreachable",
            ]
        );
    }

    #[test]
    fn ipv6_matches_and_rejects() {
        let a: IpAddr = "2001:db8::".parse().unwrap();
        let b: IpAddr = "2001:db8::ff".parse().unwrap();
        assert_eq!(
            asg_match(AsgMatch::Icmp { kind: 255, code: 255 }, a, b),
            "-p ipv6-icmp -m iprange --dst-range 2001:db8::-2001:db8::ff -m icmp6 --icmpv6-type 255/255"
        );
        assert_eq!(
            asg_match(AsgMatch::Udp { start: 53, end: 54 }, a, b),
            "-p udp -m iprange --dst-range 2001:db8::-2001:db8::ff -m udp --dport 53:54"
        );
        assert_eq!(
            egress_tail(&EgressOptions::default(), H, Family::V6),
            vec!["-j REJECT --reject-with icmp6-port-unreachable"]
        );
    }

    #[test]
    fn canonical_drops_what_iptables_save_leaves_out() {
        assert_eq!(
            canonical("-m limit --limit 5/sec --limit-burst 5 -j LOG"),
            "-m limit --limit 5/sec -j LOG"
        );
        assert_eq!(
            canonical("-m limit --limit 1/sec --limit-burst 1 -j LOG"),
            "-m limit --limit 1/sec --limit-burst 1 -j LOG"
        );
        assert_eq!(
            canonical("-m hashlimit --hashlimit-name h --hashlimit-htable-expire 1000 -j REJECT"),
            "-m hashlimit --hashlimit-name h -j REJECT"
        );
    }
}
