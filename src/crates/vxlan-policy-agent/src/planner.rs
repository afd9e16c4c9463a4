//! The c2c planner (policy contract §3.2, §3.5): from the local containers of the metadata
//! store and the policies the server returned, the c2c rules in upstream's order: as upstream's
//! single `vpa--<timestamp>` chain ([`plan_rules`], the golden reference) and in this agent's
//! layout, a main chain plus one chain per destination group ([`plan_c2c`]), which flattens to
//! the former rule for rule. Pure functions; nothing here does I/O.
//!
//! Rules are written in the canonical form `iptables-save` prints, so the restore payload
//! reads like the live table and the change check compares like with like.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use serde::Serialize;
use serde_json::Value;
use silk_core::policy::Policy;
use silk_dataplane::datastore::Entries;
use silk_dataplane::iptables::chain::{log_prefix, quotable};

/// The options of a plan, from the config (and the runtime logging switch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// `iptables_c2c_logging`: a LOG rule before every ACCEPT rule.
    pub c2c_logging: bool,
    /// `iptables_accepted_udp_logs_per_sec`.
    pub accepted_udp_logs_per_sec: u32,
    /// The `INGRESS_ROUTER` tag when `enable_overlay_ingress_rules` is on.
    pub ingress_tag: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("container {handle}: invalid ip {ip:?}")]
    Ip { handle: String, ip: String },
    #[error("container {handle}: invalid port {item:?} in ports metadata")]
    Port { handle: String, item: String },
    #[error("invalid tag {0:?}: want hex digits")]
    Tag(String),
    #[error("policy {from} -> {to}: {what}")]
    Policy {
        from: String,
        to: String,
        what: String,
    },
}

/// What iptables would refuse in a policy's destination: a protocol other than tcp or udp, or
/// a port range outside 1-65535 or reversed.
fn policy_problem(p: &Policy) -> Option<PlanError> {
    let d = &p.destination;
    let what = if d.protocol != "tcp" && d.protocol != "udp" {
        format!("protocol {:?}: want tcp or udp", d.protocol)
    } else if d.ports.start == 0 || d.ports.start > d.ports.end || d.ports.end > 65535 {
        format!(
            "ports {}-{}: want 1-65535, start <= end",
            d.ports.start, d.ports.end
        )
    } else {
        return None;
    };
    Some(PlanError::Policy {
        from: p.source.id.clone(),
        to: d.id.clone(),
        what,
    })
}

/// A local container that takes part in c2c policy: it has a `policy_group_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalContainer {
    pub handle: String,
    pub ip: String,
    pub group_id: String,
    pub space_id: Option<String>,
    /// Raw `ports` metadata (comma-separated).
    pub ports: Option<String>,
}

fn meta_str<'a>(metadata: &'a Value, key: &str) -> Option<&'a str> {
    metadata.get(key).and_then(Value::as_str)
}

/// The containers with a string `policy_group_id`, sorted by handle descending (upstream's
/// order). The others are skipped, as upstream skips them.
pub fn local_containers(entries: &Entries) -> Vec<LocalContainer> {
    let mut out: Vec<LocalContainer> = entries
        .values()
        .filter_map(|c| {
            Some(LocalContainer {
                handle: c.handle.clone(),
                ip: c.ip.clone(),
                group_id: meta_str(&c.metadata, "policy_group_id")?.to_string(),
                space_id: meta_str(&c.metadata, "space_id").map(str::to_string),
                ports: meta_str(&c.metadata, "ports").map(str::to_string),
            })
        })
        .collect();
    out.sort_by(|a, b| b.handle.cmp(&a.handle));
    out
}

/// The `id` values of the filtered policies request: every group id and space id, each once.
/// Sorted (upstream's order is unspecified). Empty means: skip the request.
pub fn group_ids(containers: &[LocalContainer]) -> Vec<String> {
    let mut ids = BTreeSet::new();
    for c in containers {
        ids.insert(c.group_id.clone());
        if let Some(s) = c.space_id.as_ref().filter(|s| !s.is_empty()) {
            ids.insert(s.clone());
        }
    }
    ids.into_iter().collect()
}

// Field order and names are upstream's Go structs: the JSON text is the sort key.
#[derive(Serialize)]
struct SourceEntry<'a> {
    #[serde(rename = "IP")]
    ip: &'a str,
    #[serde(rename = "Tag")]
    tag: &'a str,
    #[serde(rename = "GUID")]
    guid: &'a str,
}

#[derive(Serialize)]
struct DestinationEntry<'a> {
    #[serde(rename = "IP")]
    ip: &'a str,
    #[serde(rename = "StartPort")]
    start_port: u32,
    #[serde(rename = "EndPort")]
    end_port: u32,
    #[serde(rename = "GUID")]
    guid: &'a str,
    #[serde(rename = "SourceGUID")]
    source_guid: &'a str,
    #[serde(rename = "Protocol")]
    protocol: &'a str,
    #[serde(rename = "SourceTag")]
    source_tag: &'a str,
}

#[derive(Serialize)]
struct IngressEntry<'a> {
    #[serde(rename = "IngressTag")]
    ingress_tag: &'a str,
    #[serde(rename = "IP")]
    ip: &'a str,
    #[serde(rename = "Protocol")]
    protocol: &'a str,
    #[serde(rename = "Port")]
    port: u32,
}

/// The JSON text of an entry as `serde_json` writes it (field order of the struct, strings
/// escaped the same way), written by hand because it is the sort key of every rule.
trait JsonKey {
    fn json_key(&self, out: &mut String);
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_field_str(out: &mut String, first: bool, name: &str, v: &str) {
    out.push_str(if first { "{\"" } else { ",\"" });
    out.push_str(name);
    out.push_str("\":");
    json_str(out, v);
}

fn json_field_u32(out: &mut String, name: &str, v: u32) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
    out.push_str(&v.to_string());
}

impl JsonKey for SourceEntry<'_> {
    fn json_key(&self, out: &mut String) {
        json_field_str(out, true, "IP", self.ip);
        json_field_str(out, false, "Tag", self.tag);
        json_field_str(out, false, "GUID", self.guid);
        out.push('}');
    }
}

impl JsonKey for DestinationEntry<'_> {
    fn json_key(&self, out: &mut String) {
        json_field_str(out, true, "IP", self.ip);
        json_field_u32(out, "StartPort", self.start_port);
        json_field_u32(out, "EndPort", self.end_port);
        json_field_str(out, false, "GUID", self.guid);
        json_field_str(out, false, "SourceGUID", self.source_guid);
        json_field_str(out, false, "Protocol", self.protocol);
        json_field_str(out, false, "SourceTag", self.source_tag);
        out.push('}');
    }
}

impl JsonKey for IngressEntry<'_> {
    fn json_key(&self, out: &mut String) {
        json_field_str(out, true, "IngressTag", self.ingress_tag);
        json_field_str(out, false, "IP", self.ip);
        json_field_str(out, false, "Protocol", self.protocol);
        json_field_u32(out, "Port", self.port);
        out.push('}');
    }
}

/// Sorts by the JSON text of the entry (the container rides along).
fn sort_by_json<T: JsonKey>(entries: &mut Vec<(&LocalContainer, T)>) {
    let mut keyed: Vec<(String, (&LocalContainer, T))> = entries
        .drain(..)
        .map(|e| {
            let mut k = String::with_capacity(160);
            e.1.json_key(&mut k);
            (k, e)
        })
        .collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    entries.extend(keyed.into_iter().map(|(_, e)| e));
}

/// `0x<tag>` as iptables prints it (no leading zeros).
pub fn mark(tag: &str) -> Result<String, PlanError> {
    let v = u32::from_str_radix(tag, 16).map_err(|_| PlanError::Tag(tag.to_string()))?;
    Ok(format!("0x{v:x}"))
}

fn host(c_handle: &str, ip: &str) -> Result<String, PlanError> {
    ip.parse::<Ipv4Addr>()
        .map(|a| format!("{a}/32"))
        .map_err(|_| PlanError::Ip {
            handle: c_handle.to_string(),
            ip: ip.to_string(),
        })
}

fn comment(text: &str) -> String {
    format!(
        "-m comment --comment \"{}\"",
        quotable(text).replace(' ', "_")
    )
}

fn dports(start: u32, end: u32) -> String {
    if start == end {
        start.to_string()
    } else {
        format!("{start}:{end}")
    }
}

/// One container's share of the plan, every text already checked.
struct Entries3<'a> {
    sources: Vec<(&'a LocalContainer, SourceEntry<'a>)>,
    destinations: Vec<(&'a LocalContainer, DestinationEntry<'a>)>,
    ingress: Vec<(&'a LocalContainer, IngressEntry<'a>)>,
}

/// The three entry lists of upstream's planner, sorted as upstream sorts them. A container
/// with an invalid IP, a `ports` item that is not a number, or a policy with an invalid tag
/// is left out (only what it concerns: a bad `ports` item drops that container's ingress
/// rules) and reported in `problems`; everything else is planned.
fn entries<'a>(
    containers: &'a [LocalContainer],
    policies: &'a [Policy],
    opts: &'a PlanOptions,
    problems: &mut Vec<PlanError>,
) -> Entries3<'a> {
    let mut sources = Vec::new();
    let mut destinations = Vec::new();
    let mut ingress = Vec::new();
    let mut bad_tags = BTreeSet::new();
    for p in policies {
        if mark(&p.source.tag).is_err() && bad_tags.insert(p.source.tag.as_str()) {
            problems.push(PlanError::Tag(p.source.tag.clone()));
        }
    }
    let tag_ok = |t: &str| !bad_tags.contains(t);
    // Upstream scans the policies per container; an index keeps the same answers (the first
    // policy of a source, every policy of a destination, in server order) at O(policies). A
    // policy iptables would refuse yields no accept rule (it still names its source's tag).
    let mut by_source: HashMap<&str, &Policy> = HashMap::new();
    let mut by_destination: HashMap<&str, Vec<&Policy>> = HashMap::new();
    for p in policies {
        by_source.entry(p.source.id.as_str()).or_insert(p);
        match policy_problem(p) {
            Some(e) => problems.push(e),
            None => by_destination
                .entry(p.destination.id.as_str())
                .or_default()
                .push(p),
        }
    }
    for c in containers {
        if let Err(e) = host(&c.handle, &c.ip) {
            problems.push(e);
            continue;
        }
        if let Some(p) = by_source.get(c.group_id.as_str()) {
            if tag_ok(&p.source.tag) {
                sources.push((
                    c,
                    SourceEntry {
                        ip: &c.ip,
                        tag: &p.source.tag,
                        guid: &p.source.id,
                    },
                ));
            }
        }
        for p in by_destination
            .get(c.group_id.as_str())
            .into_iter()
            .flatten()
            .filter(|p| tag_ok(&p.source.tag))
        {
            destinations.push((
                c,
                DestinationEntry {
                    ip: &c.ip,
                    start_port: p.destination.ports.start,
                    end_port: p.destination.ports.end,
                    guid: &p.destination.id,
                    source_guid: &p.source.id,
                    protocol: &p.destination.protocol,
                    source_tag: &p.source.tag,
                },
            ));
        }
        if let (Some(tag), Some(ports)) = (opts.ingress_tag.as_deref(), c.ports.as_deref()) {
            let mut mine = Vec::new();
            let mut bad = None;
            for item in ports.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                match item.parse::<u32>() {
                    Ok(port) => mine.push((
                        c,
                        IngressEntry {
                            ingress_tag: tag,
                            ip: &c.ip,
                            protocol: "tcp",
                            port,
                        },
                    )),
                    Err(_) => {
                        bad.get_or_insert(PlanError::Port {
                            handle: c.handle.clone(),
                            item: item.to_string(),
                        });
                    }
                }
            }
            match bad {
                Some(e) => problems.push(e),
                None => ingress.extend(mine),
            }
        }
    }
    if let Some(tag) = opts.ingress_tag.as_deref() {
        if mark(tag).is_err() {
            problems.push(PlanError::Tag(tag.to_string()));
            ingress.clear();
        }
    }
    sort_by_json(&mut sources);
    sort_by_json(&mut destinations);
    sort_by_json(&mut ingress);
    Entries3 {
        sources,
        destinations,
        ingress,
    }
}

// Invariant for the `expect`-free formatting below: `entries` checked every IP and tag.
fn host_ok(ip: &str) -> String {
    host("", ip).unwrap_or_default()
}

fn mark_ok(tag: &str) -> String {
    mark(tag).unwrap_or_default()
}

fn mark_rule(s: &SourceEntry<'_>) -> String {
    format!(
        "-s {} {} -j MARK --set-xmark {}/0xffffffff",
        host_ok(s.ip),
        comment(&format!("src:{}", s.guid)),
        mark_ok(s.tag)
    )
}

/// The LOG (with logging) and ACCEPT rules of one destination entry, without `-d`.
fn accept_rules(d: &DestinationEntry<'_>, opts: &PlanOptions, out: &mut Vec<String>) {
    let matches = format!(
        "-p {p} -m {p} --dport {} -m mark --mark {}",
        dports(d.start_port, d.end_port),
        mark_ok(d.source_tag),
        p = d.protocol,
    );
    if opts.c2c_logging {
        let prefix = log_prefix(&format!("OK_{}_{}", d.source_tag, d.guid));
        let limit = if d.protocol == "udp" {
            let n = opts.accepted_udp_logs_per_sec;
            format!("-m limit --limit {n}/sec --limit-burst {n}")
        } else {
            "-m conntrack --ctstate INVALID,NEW,UNTRACKED".to_string()
        };
        out.push(format!(
            "{matches} {limit} -j LOG --log-prefix \"{prefix}\""
        ));
    }
    out.push(format!(
        "{matches} {} -j ACCEPT",
        comment(&format!("src:{}_dst:{}", d.source_guid, d.guid))
    ));
}

fn ingress_rule(i: &IngressEntry<'_>) -> String {
    format!(
        "-d {} -p tcp -m tcp --dport {} -m mark --mark {} -j ACCEPT",
        host_ok(i.ip),
        i.port,
        mark_ok(i.ingress_tag)
    )
}

/// Upstream's single chain, rule for rule (policy contract §3.5): mark rules, then (LOG and)
/// ACCEPT rules, then the overlay ingress rules. Strict, as upstream: the first malformed
/// input fails the plan. The golden reference for [`plan_c2c`]'s layout.
pub fn plan_rules(
    containers: &[LocalContainer],
    policies: &[Policy],
    opts: &PlanOptions,
) -> Result<Vec<String>, PlanError> {
    let mut problems = Vec::new();
    let e = entries(containers, policies, opts, &mut problems);
    if let Some(p) = problems.into_iter().next() {
        return Err(p);
    }
    let mut rules: Vec<String> = e.sources.iter().map(|(_, s)| mark_rule(s)).collect();
    for (_, d) in &e.destinations {
        let mut mine = Vec::new();
        accept_rules(d, opts, &mut mine);
        rules.extend(
            mine.into_iter()
                .map(|r| format!("-d {} {r}", host_ok(d.ip))),
        );
    }
    rules.extend(e.ingress.iter().map(|(_, i)| ingress_rule(i)));
    Ok(rules)
}

/// The prefix of the per-destination-group chains.
pub const GROUP_CHAIN_PREFIX: &str = "vpa-d-";

/// The c2c rules in this agent's layout (docs/policy-agent.md): one main chain holding the
/// mark rules, one `-d <container ip>/32 -j vpa-d-<group>` jump per local destination
/// container, and the overlay ingress rules; and one chain per local destination group
/// holding that group's (LOG and) ACCEPT rules without `-d`. Inlining every jump gives
/// upstream's single chain rule for rule ([`C2cPlan::flatten`]); a policy change rewrites
/// only the chain of its destination group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct C2cPlan {
    pub main: Vec<String>,
    /// Group chain name -> its rules.
    pub groups: BTreeMap<String, Vec<String>>,
    /// What was left out, one entry per malformed container, port list or tag.
    pub problems: Vec<PlanError>,
}

impl C2cPlan {
    /// Upstream's single-chain text of this plan: each jump replaced by its chain's rules
    /// with the jump's `-d` in front.
    pub fn flatten(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.main {
            let jump = r
                .split_once(" -j ")
                .filter(|(m, t)| m.starts_with("-d ") && t.starts_with(GROUP_CHAIN_PREFIX));
            match jump.and_then(|(m, t)| Some((m, self.groups.get(t)?))) {
                Some((d, rules)) => out.extend(rules.iter().map(|x| format!("{d} {x}"))),
                None => out.push(r.clone()),
            }
        }
        out
    }

    pub fn rule_count(&self) -> usize {
        self.main.len() + self.groups.values().map(Vec::len).sum::<usize>()
    }
}

/// The chain name of a destination group: the prefix and up to 22 letters and digits of the
/// group id (a GUID's first 22 hex digits), made unique among `used` with a counter.
fn group_chain(group_id: &str, used: &mut BTreeSet<String>) -> String {
    let base: String = group_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(22)
        .collect();
    let mut name = format!("{GROUP_CHAIN_PREFIX}{base}");
    let mut n = 0u32;
    while used.contains(&name) {
        n += 1;
        let head: String = base.chars().take(17).collect();
        name = format!("{GROUP_CHAIN_PREFIX}{head}-{n:04}");
    }
    used.insert(name.clone());
    name
}

/// Plans [`C2cPlan`]. Never fails: malformed input is left out and listed in `problems`.
pub fn plan_c2c(containers: &[LocalContainer], policies: &[Policy], opts: &PlanOptions) -> C2cPlan {
    let mut problems = Vec::new();
    let e = entries(containers, policies, opts, &mut problems);
    let mut main: Vec<String> = e.sources.iter().map(|(_, s)| mark_rule(s)).collect();
    // Group chains are named in group id order so names do not depend on container order.
    let mut groups_sorted: Vec<&str> = e.destinations.iter().map(|(_, d)| d.guid).collect();
    groups_sorted.sort_unstable();
    groups_sorted.dedup();
    let mut used = BTreeSet::new();
    let names: BTreeMap<&str, String> = groups_sorted
        .into_iter()
        .map(|g| (g, group_chain(g, &mut used)))
        .collect();
    // Every container of a group carries the same rules: take them from the group's first
    // container.
    let mut first_ip: BTreeMap<&str, &str> = BTreeMap::new();
    for (_, d) in &e.destinations {
        first_ip.entry(d.guid).or_insert(d.ip);
    }
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut jumps: Vec<(&str, &str)> = Vec::new();
    for (_, d) in &e.destinations {
        let chain = names[d.guid].as_str();
        if seen.insert((d.ip, chain)) {
            jumps.push((d.ip, chain));
        }
        if first_ip.get(d.guid) == Some(&d.ip) {
            accept_rules(d, opts, groups.entry(chain.to_string()).or_default());
        }
    }
    main.extend(
        jumps
            .into_iter()
            .map(|(ip, chain)| format!("-d {} -j {chain}", host_ok(ip))),
    );
    main.extend(e.ingress.iter().map(|(_, i)| ingress_rule(i)));
    C2cPlan {
        main,
        groups,
        problems,
    }
}

/// The rules `disable_container_network_policy` puts first in the chain: accept everything
/// from the overlay to the overlay, one rule per pair of overlay CIDRs.
pub fn allow_overlay_rules(overlay: &[ipnetwork::Ipv4Network]) -> Vec<String> {
    overlay
        .iter()
        .flat_map(|s| {
            overlay
                .iter()
                .map(move |d| format!("-s {s} -d {d} -j ACCEPT"))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use silk_core::policy::PoliciesResponse;

    pub const BACKEND: &str = "6f1e4f5a-1b2c-4d3e-8f9a-0b1c2d3e4f5a";
    pub const FRONTEND: &str = "1d2e3f4a-5b6c-4d7e-8f90-a1b2c3d4e5f6";

    /// The policy contract's §1.3 example response.
    pub const POLICIES: &str = r#"{
      "total_policies": 3,
      "policies": [
        {"source": {"id": "0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f", "tag": "0001"},
         "destination": {"id": "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13", "tag": "0002",
                         "protocol": "tcp", "ports": {"start": 8080, "end": 8080}}},
        {"source": {"id": "9e4d2c1b-6a5f-4e3d-8c2b-1a0f9e8d7c6b", "tag": "0003"},
         "destination": {"id": "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13", "tag": "0002",
                         "protocol": "udp", "ports": {"start": 9000, "end": 9100}}},
        {"source": {"id": "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13", "tag": "0002"},
         "destination": {"id": "51d0e8a7-3b6c-4f29-a8d4-0e7f6c5b4a39", "tag": "0004",
                         "protocol": "tcp", "ports": {"start": 5432, "end": 5432}}}
      ]
    }"#;

    /// The §3.12 cell: backend (10.255.7.4) and frontend (10.255.7.3).
    pub fn store() -> Entries {
        serde_json::from_str(&format!(
            r#"{{
            "{BACKEND}": {{"handle": "{BACKEND}", "ip": "10.255.7.4", "metadata": {{
                "app_id": "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13", "container_workload": "app",
                "policy_group_id": "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13", "ports": "8080",
                "space_id": "7d2c0e5a-9b1f-4a3c-8e6d-2f1a0b9c8d7e"}}}},
            "{FRONTEND}": {{"handle": "{FRONTEND}", "ip": "10.255.7.3", "metadata": {{
                "policy_group_id": "0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f",
                "space_id": "7d2c0e5a-9b1f-4a3c-8e6d-2f1a0b9c8d7e", "ports": "8080, 9090"}}}},
            "no-group": {{"handle": "no-group", "ip": "10.255.7.9", "metadata": {{"space_id": "s"}}}}
        }}"#
        ))
        .unwrap()
    }

    fn policies() -> Vec<Policy> {
        serde_json::from_str::<PoliciesResponse>(POLICIES)
            .unwrap()
            .policies
    }

    /// §3.12's `vpa--` lines, without `-A <chain> `.
    pub const WORKED_EXAMPLE: [&str; 4] = [
        r#"-s 10.255.7.3/32 -m comment --comment "src:0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f" -j MARK --set-xmark 0x1/0xffffffff"#,
        r#"-s 10.255.7.4/32 -m comment --comment "src:c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13" -j MARK --set-xmark 0x2/0xffffffff"#,
        r#"-d 10.255.7.4/32 -p tcp -m tcp --dport 8080 -m mark --mark 0x1 -m comment --comment "src:0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f_dst:c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13" -j ACCEPT"#,
        r#"-d 10.255.7.4/32 -p udp -m udp --dport 9000:9100 -m mark --mark 0x3 -m comment --comment "src:9e4d2c1b-6a5f-4e3d-8c2b-1a0f9e8d7c6b_dst:c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13" -j ACCEPT"#,
    ];

    #[test]
    fn containers_without_a_group_are_skipped_and_order_is_handle_descending() {
        let cs = local_containers(&store());
        let handles: Vec<&str> = cs.iter().map(|c| c.handle.as_str()).collect();
        assert_eq!(handles, vec![BACKEND, FRONTEND]);
        assert_eq!(
            group_ids(&cs),
            vec![
                "0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f",
                "7d2c0e5a-9b1f-4a3c-8e6d-2f1a0b9c8d7e",
                "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13",
            ]
        );
        assert!(group_ids(&[]).is_empty());
    }

    #[test]
    fn worked_example_exactly() {
        let rules = plan_rules(
            &local_containers(&store()),
            &policies(),
            &PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(rules, WORKED_EXAMPLE);
    }

    #[test]
    fn logging_adds_a_log_rule_before_each_accept() {
        let opts = PlanOptions {
            c2c_logging: true,
            accepted_udp_logs_per_sec: 100,
            ingress_tag: None,
        };
        let rules = plan_rules(&local_containers(&store()), &policies(), &opts).unwrap();
        assert_eq!(rules.len(), 6);
        assert_eq!(
            rules[2],
            r#"-d 10.255.7.4/32 -p tcp -m tcp --dport 8080 -m mark --mark 0x1 -m conntrack --ctstate INVALID,NEW,UNTRACKED -j LOG --log-prefix "OK_0001_c3f1a2b4-77e0-4d2f-9 ""#
        );
        assert_eq!(rules[3], WORKED_EXAMPLE[2]);
        assert_eq!(
            rules[4],
            r#"-d 10.255.7.4/32 -p udp -m udp --dport 9000:9100 -m mark --mark 0x3 -m limit --limit 100/sec --limit-burst 100 -j LOG --log-prefix "OK_0003_c3f1a2b4-77e0-4d2f-9 ""#
        );
        assert_eq!(rules[5], WORKED_EXAMPLE[3]);
    }

    #[test]
    fn ingress_rules_come_last_sorted_as_json_text() {
        let opts = PlanOptions {
            ingress_tag: Some("0006".into()),
            ..PlanOptions::default()
        };
        let rules = plan_rules(&local_containers(&store()), &policies(), &opts).unwrap();
        assert_eq!(
            &rules[4..],
            [
                "-d 10.255.7.3/32 -p tcp -m tcp --dport 8080 -m mark --mark 0x6 -j ACCEPT",
                "-d 10.255.7.3/32 -p tcp -m tcp --dport 9090 -m mark --mark 0x6 -j ACCEPT",
                "-d 10.255.7.4/32 -p tcp -m tcp --dport 8080 -m mark --mark 0x6 -j ACCEPT",
            ]
        );
    }

    #[test]
    fn a_bad_ports_item_fails_the_plan() {
        let mut entries = store();
        if let Some(c) = entries.get_mut(BACKEND) {
            c.metadata["ports"] = "8080,http".into();
        }
        let opts = PlanOptions {
            ingress_tag: Some("0006".into()),
            ..PlanOptions::default()
        };
        let err = plan_rules(&local_containers(&entries), &policies(), &opts).unwrap_err();
        assert_eq!(
            err,
            PlanError::Port {
                handle: BACKEND.into(),
                item: "http".into()
            }
        );
    }

    #[test]
    fn sorting_is_textual_and_one_mark_per_source_ip() {
        let entries: Entries = serde_json::from_str(
            r#"{"a": {"handle": "a", "ip": "10.255.7.10", "metadata": {"policy_group_id": "g"}},
                "b": {"handle": "b", "ip": "10.255.7.4", "metadata": {"policy_group_id": "g"}}}"#,
        )
        .unwrap();
        let ps: Vec<Policy> = serde_json::from_str(
            r#"[{"source": {"id": "g", "tag": "000A"}, "destination": {"id": "g", "protocol": "tcp", "ports": {"start": 8080, "end": 8080}}},
                {"source": {"id": "g", "tag": "000A"}, "destination": {"id": "g", "protocol": "tcp", "ports": {"start": 10000, "end": 10001}}}]"#,
        )
        .unwrap();
        let rules = plan_rules(&local_containers(&entries), &ps, &PlanOptions::default()).unwrap();
        let heads: Vec<String> = rules
            .iter()
            .map(|r| r.split(" -m comment").next().unwrap().to_string())
            .collect();
        assert_eq!(
            heads,
            [
                "-s 10.255.7.10/32",
                "-s 10.255.7.4/32",
                "-d 10.255.7.10/32 -p tcp -m tcp --dport 10000:10001 -m mark --mark 0xa",
                "-d 10.255.7.10/32 -p tcp -m tcp --dport 8080 -m mark --mark 0xa",
                "-d 10.255.7.4/32 -p tcp -m tcp --dport 10000:10001 -m mark --mark 0xa",
                "-d 10.255.7.4/32 -p tcp -m tcp --dport 8080 -m mark --mark 0xa",
            ]
        );
    }

    /// §3.12 in this agent's layout: the same marks and accepts, the accepts in the
    /// backend group's chain behind a `-d` jump.
    #[test]
    fn worked_example_in_the_chain_per_group_layout() {
        let plan = plan_c2c(
            &local_containers(&store()),
            &policies(),
            &PlanOptions::default(),
        );
        assert_eq!(
            plan.main,
            [
                WORKED_EXAMPLE[0],
                WORKED_EXAMPLE[1],
                "-d 10.255.7.4/32 -j vpa-d-c3f1a2b477e04d2f9a615e",
            ]
        );
        assert_eq!(
            plan.groups["vpa-d-c3f1a2b477e04d2f9a615e"],
            [
                r#"-p tcp -m tcp --dport 8080 -m mark --mark 0x1 -m comment --comment "src:0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f_dst:c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13" -j ACCEPT"#,
                r#"-p udp -m udp --dport 9000:9100 -m mark --mark 0x3 -m comment --comment "src:9e4d2c1b-6a5f-4e3d-8c2b-1a0f9e8d7c6b_dst:c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13" -j ACCEPT"#,
            ]
        );
        assert_eq!(plan.groups.len(), 1);
        assert!(plan.problems.is_empty());
        assert_eq!(plan.flatten(), WORKED_EXAMPLE);
    }

    /// Inlining the jumps gives upstream's chain exactly, with logging and ingress rules and
    /// several containers of one group.
    #[test]
    fn the_layout_flattens_to_upstreams_chain() {
        let mut entries = store();
        let mut twin = entries[BACKEND].clone();
        twin.handle = "a-second-backend".into();
        twin.ip = "10.255.7.40".into();
        entries.insert(twin.handle.clone(), twin);
        let cs = local_containers(&entries);
        for opts in [
            PlanOptions::default(),
            PlanOptions {
                c2c_logging: true,
                accepted_udp_logs_per_sec: 100,
                ingress_tag: Some("0006".into()),
            },
        ] {
            let plan = plan_c2c(&cs, &policies(), &opts);
            assert_eq!(plan.flatten(), plan_rules(&cs, &policies(), &opts).unwrap());
            // one chain for the group, two jumps to it
            assert_eq!(plan.groups.len(), 1);
            assert_eq!(
                plan.main
                    .iter()
                    .filter(|r| r.contains(" -j vpa-d-"))
                    .count(),
                2
            );
        }
    }

    #[test]
    fn malformed_input_is_left_out_and_reported_not_fatal() {
        let mut entries = store();
        if let Some(c) = entries.get_mut(BACKEND) {
            c.metadata["ports"] = "8080,http".into();
        }
        let mut bad = entries[FRONTEND].clone();
        bad.handle = "bad-ip".into();
        bad.ip = "10.255.7".into();
        entries.insert(bad.handle.clone(), bad);
        let mut ps = policies();
        ps[1].source.tag = "zz".into();
        let mut icmp = ps[0].clone();
        icmp.destination.protocol = "icmp".into();
        let mut reversed = ps[0].clone();
        reversed.destination.ports.start = 9000;
        ps.extend([icmp, reversed]);
        let opts = PlanOptions {
            ingress_tag: Some("0006".into()),
            ..PlanOptions::default()
        };
        let plan = plan_c2c(&local_containers(&entries), &ps, &opts);
        assert_eq!(
            plan.problems,
            [
                PlanError::Tag("zz".into()),
                PlanError::Policy {
                    from: "0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f".into(),
                    to: "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13".into(),
                    what: "protocol \"icmp\": want tcp or udp".into()
                },
                PlanError::Policy {
                    from: "0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f".into(),
                    to: "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13".into(),
                    what: "ports 9000-8080: want 1-65535, start <= end".into()
                },
                PlanError::Ip {
                    handle: "bad-ip".into(),
                    ip: "10.255.7".into()
                },
                PlanError::Port {
                    handle: BACKEND.into(),
                    item: "http".into()
                },
            ]
        );
        // Everything else stays: both marks, the tcp accept, the frontend's ingress rules.
        let flat = plan.flatten();
        assert_eq!(&flat[..3], &WORKED_EXAMPLE[..3]);
        assert_eq!(
            &flat[3..],
            [
                "-d 10.255.7.3/32 -p tcp -m tcp --dport 8080 -m mark --mark 0x6 -j ACCEPT",
                "-d 10.255.7.3/32 -p tcp -m tcp --dport 9090 -m mark --mark 0x6 -j ACCEPT",
            ]
        );
    }

    #[test]
    fn group_chain_names_fit_and_stay_unique() {
        let mut used = BTreeSet::new();
        let a = group_chain("c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13", &mut used);
        let b = group_chain("c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f99", &mut used);
        assert_eq!(a, "vpa-d-c3f1a2b477e04d2f9a615e");
        assert_eq!(b, "vpa-d-c3f1a2b477e04d2f9-0001");
        assert!(a.len() <= 28 && b.len() <= 28);
    }

    #[test]
    fn sort_keys_are_serde_json_text() {
        for text in [
            "10.255.7.4",
            "a\"b\\c",
            "tab\there\u{1}\u{8}\u{c}\n\r",
            "é/<&>",
        ] {
            let mut k = String::new();
            let d = DestinationEntry {
                ip: text,
                start_port: 8080,
                end_port: 10000,
                guid: text,
                source_guid: "s",
                protocol: "tcp",
                source_tag: text,
            };
            d.json_key(&mut k);
            assert_eq!(k, serde_json::to_string(&d).unwrap());
            let mut k = String::new();
            let e = SourceEntry {
                ip: text,
                tag: "01",
                guid: text,
            };
            e.json_key(&mut k);
            assert_eq!(k, serde_json::to_string(&e).unwrap());
            let mut k = String::new();
            let i = IngressEntry {
                ingress_tag: text,
                ip: text,
                protocol: "tcp",
                port: 1,
            };
            i.json_key(&mut k);
            assert_eq!(k, serde_json::to_string(&i).unwrap());
        }
    }

    #[test]
    fn allow_overlay_is_one_rule_per_pair() {
        let nets: Vec<ipnetwork::Ipv4Network> = vec![
            "10.255.0.0/16".parse().unwrap(),
            "10.254.0.0/16".parse().unwrap(),
        ];
        assert_eq!(
            allow_overlay_rules(&nets[..1]),
            ["-s 10.255.0.0/16 -d 10.255.0.0/16 -j ACCEPT"]
        );
        assert_eq!(allow_overlay_rules(&nets).len(), 4);
    }
}
