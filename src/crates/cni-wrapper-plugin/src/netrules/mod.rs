//! Every per-container chain and rule, with upstream's names, order and log prefixes
//! (cni.md §4.4-4.8), rendered as one restore payload per family; and the DEL plan that
//! removes them by chain name from the saved tables (cni.md §7: no IP needed to find them).

pub mod asg;
pub mod options;

use std::net::IpAddr;

use silk_dataplane::iptables::chain::log_prefix;
use silk_dataplane::iptables::egress;
use silk_dataplane::iptables::{ChainName, Family, Payload, Rule, SavedTable, Table};

use crate::config::PortMapping;
pub use options::{Container, RuleOptions};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetrulesError {
    #[error("cannot allocate port {0}")]
    BadPort(i64),
}

fn reject(v6: bool) -> &'static str {
    if v6 {
        "-j REJECT --reject-with icmp6-port-unreachable"
    } else {
        "-j REJECT --reject-with icmp-port-unreachable"
    }
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

/// The chains a handle owns in the filter table.
pub struct FilterChains {
    pub input: ChainName,
    pub netout: ChainName,
    pub overlay: ChainName,
    pub log: ChainName,
    pub rl_log: ChainName,
}

impl FilterChains {
    pub fn for_handle(h: &str) -> Self {
        FilterChains {
            input: ChainName::input(h),
            netout: ChainName::netout(h),
            overlay: ChainName::overlay(h),
            log: ChainName::netout_log(h),
            rl_log: ChainName::netout_rl_log(h),
        }
    }
}

/// The netout chain's final rule list. `static_asgs` is `None` in dynamic-ASG mode, where the
/// wrapper writes only the defaults and vxlan-policy-agent adds the `asg-…` jump.
pub fn netout_rules(
    o: &RuleOptions,
    c: &Container,
    static_asgs: Option<&[(String, bool)]>,
) -> Vec<Rule> {
    let ch = FilterChains::for_handle(&c.handle);
    let family = if c.ip.is_ipv6() {
        Family::V6
    } else {
        Family::V4
    };
    let eo = o.egress(family);
    let specs = match static_asgs {
        Some(asgs) => egress::egress_rules(&eo, &c.handle, &c.workload, family, asgs),
        None => egress::egress_tail(&eo, &c.handle, family),
    };
    specs
        .into_iter()
        .map(|spec| Rule::new(&ch.netout, spec))
        .collect()
}

/// The filter-table part of an ADD for one family: chains, parent jumps, chain rules.
fn add_filter(
    o: &RuleOptions,
    c: &Container,
    static_asgs: Option<&[(String, bool)]>,
    p: &mut Payload,
) {
    let ch = FilterChains::for_handle(&c.handle);
    let v6 = c.ip.is_ipv6();
    let ip = host(c.ip);
    let with_rl = o.outbound.has_rl_log_chain();
    let f = p.table(Table::Filter);
    f.declare.extend([
        ch.input.clone(),
        ch.netout.clone(),
        ch.overlay.clone(),
        ch.log.clone(),
    ]);
    if with_rl {
        f.declare.push(ch.rl_log.clone());
    }
    f.append
        .push(Rule::new("INPUT", format!("-s {ip} -j {}", ch.input)));
    for ifname in &c.underlay_ifs {
        f.append.push(Rule::new(
            "FORWARD",
            format!("-s {ip} -o {ifname} -j {}", ch.netout),
        ));
    }
    f.append
        .push(Rule::new("FORWARD", format!("-j {}", ch.overlay)));

    // input--: established, link-local DNS (IPv4 only), host services, reject.
    f.append.push(Rule::new(
        &ch.input,
        "-m state --state RELATED,ESTABLISHED -j ACCEPT",
    ));
    if !v6 {
        for dns in &o.dns_link_local {
            f.append.push(Rule::new(
                &ch.input,
                format!("-d {dns}/32 -p tcp -m tcp --dport 53 -j ACCEPT"),
            ));
            f.append.push(Rule::new(
                &ch.input,
                format!("-d {dns}/32 -p udp -m udp --dport 53 -j ACCEPT"),
            ));
        }
    }
    let (tcp, udp) = if v6 {
        (&o.host_tcp_v6, &o.host_udp_v6)
    } else {
        (&o.host_tcp_v4, &o.host_udp_v4)
    };
    for (a, port) in tcp {
        f.append.push(Rule::new(
            &ch.input,
            format!("-d {} -p tcp -m tcp --dport {port} -j ACCEPT", host(*a)),
        ));
    }
    for (a, port) in udp {
        f.append.push(Rule::new(
            &ch.input,
            format!("-d {} -p udp -m udp --dport {port} -j ACCEPT", host(*a)),
        ));
    }
    f.append.push(Rule::new(&ch.input, reject(v6)));

    // netout--…--log: accepted-egress logging, reached by -g.
    let ok = log_prefix(&format!("OK_{}", c.handle));
    let u = o.accepted_udp_logs_per_sec;
    f.append.push(Rule::new(
        &ch.log,
        format!(
            "! -p udp -m conntrack --ctstate INVALID,NEW,UNTRACKED -j LOG --log-prefix \"{ok}\""
        ),
    ));
    f.append.push(Rule::new(
        &ch.log,
        format!("-p udp -m limit --limit {u}/sec --limit-burst {u} -j LOG --log-prefix \"{ok}\""),
    ));
    f.append.push(Rule::new(&ch.log, "-j ACCEPT"));

    if with_rl {
        let d = o.denied_logs_per_sec;
        if o.outbound.logging || o.outbound.dry_run {
            let pfx = log_prefix(&format!("DENY_ORL_{}", c.handle));
            f.append.push(Rule::new(
                &ch.rl_log,
                format!("-m limit --limit {d}/sec --limit-burst {d} -j LOG --log-prefix \"{pfx}\""),
            ));
        }
        if !o.outbound.dry_run {
            f.append.push(Rule::new(&ch.rl_log, reject(v6)));
        }
    }

    f.append.extend(netout_rules(o, c, static_asgs));

    // overlay--: container-to-container.
    if !v6 {
        f.append.push(Rule::new(
            &ch.overlay,
            format!("-s {ip} -o {} -m mark ! --mark 0x0 -j ACCEPT", o.vtep),
        ));
    }
    f.append.push(Rule::new(
        &ch.overlay,
        format!("-d {ip} -m state --state RELATED,ESTABLISHED -j ACCEPT"),
    ));
    if !v6 {
        f.append.push(Rule::new(
            &ch.overlay,
            format!("-d {ip} -m mark --mark {:#x} -j ACCEPT", o.ingress_tag),
        ));
    }
    if o.c2c_logging {
        let d = o.denied_logs_per_sec;
        let pfx = log_prefix(&format!("DENY_C2C_{}", c.handle));
        f.append.push(Rule::new(
            &ch.overlay,
            format!(
                "-d {ip} -m limit --limit {d}/sec --limit-burst {d} -j LOG --log-prefix \"{pfx}\""
            ),
        ));
    }
    f.append
        .push(Rule::new(&ch.overlay, format!("-d {ip} {}", reject(v6))));
}

/// The whole ADD for the IPv4 family: filter, nat (DNAT, MASQUERADE) and mangle (MARK).
pub fn plan_add(
    o: &RuleOptions,
    c: &Container,
    static_asgs: Option<&[(String, bool)]>,
) -> Result<Payload, NetrulesError> {
    let mut p = Payload::default();
    if let Some(bad) = c
        .port_mappings
        .iter()
        .find(|m| m.host_port <= 0 || m.container_port <= 0)
    {
        return Err(NetrulesError::BadPort(if bad.host_port <= 0 {
            bad.host_port
        } else {
            bad.container_port
        }));
    }
    add_filter(o, c, static_asgs, &mut p);
    if c.ip.is_ipv6() {
        return Ok(p);
    }
    let netin = ChainName::netin(&c.handle);
    let inst = format!("{}/32", o.instance_address);
    let mangle = p.table(Table::Mangle);
    mangle.declare.push(netin.clone());
    mangle
        .append
        .push(Rule::new("PREROUTING", format!("-j {netin}")));
    for PortMapping { host_port, .. } in &c.port_mappings {
        for ifname in &c.underlay_ifs {
            mangle.append.push(Rule::new(
                &netin,
                format!("-d {inst} -i {ifname} -p tcp -m tcp --dport {host_port} -j MARK --set-xmark {:#x}/0xffffffff", o.ingress_tag),
            ));
        }
    }
    let nat = p.table(Table::Nat);
    nat.declare.push(netin.clone());
    nat.append
        .push(Rule::new("PREROUTING", format!("-j {netin}")));
    for PortMapping {
        host_port,
        container_port,
    } in &c.port_mappings
    {
        nat.append.push(Rule::new(
            &netin,
            format!("-d {inst} -p tcp -m tcp --dport {host_port} -j DNAT --to-destination {}:{container_port}", c.ip),
        ));
    }
    nat.append
        .push(Rule::new("POSTROUTING", masquerade_spec(o, c)));
    Ok(p)
}

fn masquerade_spec(o: &RuleOptions, c: &Container) -> String {
    match &c.masq_exclude {
        Some(net) => format!("-s {} ! -d {net} ! -o {} -j MASQUERADE", host(c.ip), o.vtep),
        None => format!("-s {} ! -o {} -j MASQUERADE", host(c.ip), o.vtep),
    }
}

const BUILTIN: &[&str] = &["INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"];

/// Removes everything `handle` owns from saved tables (`saved` holds filter, nat and mangle):
/// parent jumps found by target chain name, MASQUERADE rules for the container IP (given, or
/// read from the `INPUT` jump when the store lost it), then the chains. A chain still referenced
/// by a chain we do not own (vxlan-policy-agent's `asg-…` goes to the log chain) is flushed
/// and left for the agent's orphan cleanup.
///
/// The nat table goes first: iptables-nft commits each table on its own, and its probe of the
/// MASQUERADE target's revision opens and closes a netlink socket; a close after this process
/// has committed deletions waits for the kernel to free them (an RCU grace period, 10-25 ms).
/// Probing before the first commit leaves one such wait per DEL instead of two.
pub fn plan_del(handle: &str, ip: Option<IpAddr>, saved: &str) -> Payload {
    let ch = FilterChains::for_handle(handle);
    let netin = ChainName::netin(handle);
    let filter = SavedTable::parse(saved, Table::Filter);
    let ip = ip.or_else(|| input_jump_sources(&filter, &[ch.input.as_str()]).pop());
    let owned_filter = [&ch.input, &ch.netout, &ch.overlay, &ch.log, &ch.rl_log];
    let owned: Vec<(Table, Vec<String>)> = vec![
        (Table::Nat, vec![netin.as_str().to_string()]),
        (Table::Mangle, vec![netin.as_str().to_string()]),
        (
            Table::Filter,
            owned_filter
                .iter()
                .map(|c| c.as_str().to_string())
                .collect(),
        ),
    ];
    plan_remove(&owned, ip.as_slice(), saved)
}

/// Chain-name prefixes of the chains the wrapper creates for each container (all tables).
pub const CONTAINER_CHAIN_PREFIXES: &[&str] = &["input--", "netout--", "overlay--", "netin--"];
/// vxlan-policy-agent's per-container ASG chains.
pub const ASG_CHAIN_PREFIXES: &[&str] = &["asg-", "casg-"];

/// Sweeps the chains of containers that no longer exist (GC, cni-teardown): every chain of
/// `saved` whose name starts with one of `prefixes` and is not among `keep` (the chain names
/// of live containers), with the jumps to it from built-in chains and, in nat, the
/// MASQUERADE rules of the IPs its `INPUT` jump names. `saved` is one family's filter, nat
/// and mangle text; for IPv6 only filter exists.
pub fn plan_sweep(saved: &str, prefixes: &[&str], keep: &[String]) -> Payload {
    let stale = |t: &SavedTable| -> Vec<String> {
        t.chains
            .iter()
            .filter(|c| prefixes.iter().any(|p| c.starts_with(p)))
            .filter(|c| !keep.iter().any(|k| k == *c))
            .cloned()
            .collect()
    };
    let filter = SavedTable::parse(saved, Table::Filter);
    let filter_stale = stale(&filter);
    let inputs: Vec<&str> = filter_stale
        .iter()
        .filter(|c| c.starts_with("input--"))
        .map(String::as_str)
        .collect();
    // After a crash IPs are handed out again from the start, so a stale chain's IP may be a
    // live container's now: its MASQUERADE rule (same text) stays.
    let live: Vec<&str> = keep
        .iter()
        .filter(|c| c.starts_with("input--"))
        .map(String::as_str)
        .collect();
    let live_ips = input_jump_sources(&filter, &live);
    let ips: Vec<IpAddr> = input_jump_sources(&filter, &inputs)
        .into_iter()
        .filter(|ip| !live_ips.contains(ip))
        .collect();
    let owned = vec![
        (Table::Filter, filter_stale),
        (Table::Nat, stale(&SavedTable::parse(saved, Table::Nat))),
        (
            Table::Mangle,
            stale(&SavedTable::parse(saved, Table::Mangle)),
        ),
    ];
    plan_remove(&owned, &ips, saved)
}

/// Every chain name a live handle owns, in any table: what [`plan_sweep`] keeps.
pub fn chains_of(handles: &[String]) -> Vec<String> {
    handles
        .iter()
        .flat_map(|h| {
            let f = FilterChains::for_handle(h);
            [
                f.input,
                f.netout,
                f.overlay,
                f.log,
                f.rl_log,
                ChainName::netin(h),
            ]
        })
        .map(|c| c.as_str().to_string())
        .collect()
}

/// The source addresses of the `INPUT` jumps to `chains` (each container's IP is there).
fn input_jump_sources(filter: &SavedTable, chains: &[&str]) -> Vec<IpAddr> {
    filter
        .rules
        .iter()
        .filter(|r| r.chain == "INPUT" && chains.iter().any(|c| r.targets(c)))
        .filter_map(|r| {
            let toks: Vec<&str> = r.spec.split_whitespace().collect();
            toks.windows(2)
                .find(|w| w[0] == "-s")
                .and_then(|w| w[1].split('/').next()?.parse().ok())
        })
        .collect()
}

/// Removes the `owned` chains of each table: flushes them, deletes the jumps to them from
/// built-in chains and the nat MASQUERADE rules of `ips`, then removes each chain no foreign
/// chain still references (those stay flushed, for vxlan-policy-agent's orphan cleanup).
fn plan_remove(owned: &[(Table, Vec<String>)], ips: &[IpAddr], saved: &str) -> Payload {
    let mut p = Payload::default();
    for (table, owned) in owned {
        let saved_t = SavedTable::parse(saved, *table);
        let is_owned = |c: &str| owned.iter().any(|o| o == c);
        let plan = p.table(*table);
        for chain in owned.iter().filter(|c| saved_t.has_chain(c)) {
            if let Ok(name) = ChainName::new(chain) {
                plan.declare.push(name);
            }
        }
        let mut foreign_refs = Vec::new();
        for r in &saved_t.rules {
            let Some(target) = owned.iter().find(|c| r.targets(c)) else {
                continue;
            };
            if is_owned(&r.chain) {
                continue;
            }
            if BUILTIN.contains(&r.chain.as_str()) {
                plan.delete.push(r.clone());
            } else {
                foreign_refs.push(target.clone());
            }
        }
        if *table == Table::Nat {
            for ip in ips {
                let src = format!("-s {} ", host(*ip));
                for r in saved_t.rules.iter().filter(|r| r.chain == "POSTROUTING") {
                    if r.spec.starts_with(&src)
                        && r.spec.ends_with("-j MASQUERADE")
                        && !plan.delete.contains(r)
                    {
                        plan.delete.push(r.clone());
                    }
                }
            }
        }
        let removable: Vec<ChainName> = plan
            .declare
            .iter()
            .filter(|c| !foreign_refs.iter().any(|f| f == c.as_str()))
            .cloned()
            .collect();
        plan.remove = removable;
    }
    p
}

/// DEL without reading the tables: the rules `c` got at ADD, rebuilt from its IP, underlay
/// interfaces and masquerade exclusion, deleted by text, and every chain name of the handle
/// flushed and removed. If anything differs from what is expected (a rule already gone, a chain
/// still referenced elsewhere) that table's commit fails and changes nothing; the caller then
/// reads the tables and finishes whatever is left with [`plan_del`].
///
/// The nat table goes first: iptables-nft commits each table on its own, and its probe of the
/// MASQUERADE target's revision opens and closes a netlink socket; a close after this process
/// has committed deletions waits for the kernel to free them (an RCU grace period, 10-25 ms).
/// Probing before the first commit leaves one such wait per DEL instead of two.
pub fn plan_del_expected(o: &RuleOptions, c: &Container) -> Payload {
    let ch = FilterChains::for_handle(&c.handle);
    let netin = ChainName::netin(&c.handle);
    let ip = host(c.ip);
    let mut p = Payload::default();
    if c.ip.is_ipv4() {
        p.table(Table::Nat);
        p.table(Table::Mangle);
    }
    let f = p.table(Table::Filter);
    let owned = [&ch.input, &ch.netout, &ch.overlay, &ch.log, &ch.rl_log];
    f.declare.extend(owned.iter().map(|c| (*c).clone()));
    f.delete
        .push(Rule::new("INPUT", format!("-s {ip} -j {}", ch.input)));
    for ifname in &c.underlay_ifs {
        f.delete.push(Rule::new(
            "FORWARD",
            format!("-s {ip} -o {ifname} -j {}", ch.netout),
        ));
    }
    f.delete
        .push(Rule::new("FORWARD", format!("-j {}", ch.overlay)));
    f.remove.extend(owned.iter().map(|c| (*c).clone()));
    if c.ip.is_ipv6() {
        return p;
    }
    for table in [Table::Mangle, Table::Nat] {
        let t = p.table(table);
        t.declare.push(netin.clone());
        t.delete
            .push(Rule::new("PREROUTING", format!("-j {netin}")));
        if table == Table::Nat {
            t.delete
                .push(Rule::new("POSTROUTING", masquerade_spec(o, c)));
        }
        t.remove.push(netin.clone());
    }
    p
}

/// The IPv6 ADD: filter chains only (no netin, no masquerade), cni.md upstream-delta §3.3.3.
pub fn plan_add_v6(
    o: &RuleOptions,
    c: &Container,
    static_asgs: Option<&[(String, bool)]>,
) -> Payload {
    let mut p = Payload::default();
    add_filter(o, c, static_asgs, &mut p);
    p
}

#[cfg(test)]
mod tests;
