//! The c2c planner (policy contract §3.2, §3.5): from the local containers of the metadata
//! store and the policies the server returned, the rules of the `vpa--<timestamp>` chain, in
//! upstream's order. Pure functions; nothing here does I/O.
//!
//! Rules are written in the canonical form `iptables-save` prints, so the restore payload
//! reads like the live table and the change check compares like with like.

use std::collections::BTreeSet;
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("container {handle}: invalid ip {ip:?}")]
    Ip { handle: String, ip: String },
    #[error("container {handle}: invalid port {item:?} in ports metadata")]
    Port { handle: String, item: String },
    #[error("invalid tag {0:?}: want hex digits")]
    Tag(String),
    #[error("invalid protocol {0:?}: want a protocol name")]
    Protocol(String),
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

/// Sorts by the JSON text of the entry (the container rides along).
fn sort_by_json<T: Serialize>(entries: &mut [(&LocalContainer, T)]) {
    // Invariant: structs of strings and integers always serialize.
    entries.sort_by_cached_key(|(_, e)| serde_json::to_string(e).unwrap_or_default());
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

/// A policy's protocol as `-p`/`-m` take it: a name or number, nothing that could end the
/// argument (it comes from the policy server and is written into the restore payload).
fn protocol(p: &str) -> Result<&str, PlanError> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(PlanError::Protocol(p.to_string()));
    }
    Ok(p)
}

fn dports(start: u32, end: u32) -> String {
    if start == end {
        start.to_string()
    } else {
        format!("{start}:{end}")
    }
}

/// The rules of the c2c chain, in order: mark rules, then (LOG and) ACCEPT rules, then the
/// overlay ingress rules.
pub fn plan_rules(
    containers: &[LocalContainer],
    policies: &[Policy],
    opts: &PlanOptions,
) -> Result<Vec<String>, PlanError> {
    let mut sources = Vec::new();
    let mut destinations = Vec::new();
    let mut ingress = Vec::new();
    for c in containers {
        if let Some(p) = policies.iter().find(|p| p.source.id == c.group_id) {
            sources.push((
                c,
                SourceEntry {
                    ip: &c.ip,
                    tag: &p.source.tag,
                    guid: &p.source.id,
                },
            ));
        }
        for p in policies.iter().filter(|p| p.destination.id == c.group_id) {
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
            for item in ports.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                let port = item.parse::<u32>().map_err(|_| PlanError::Port {
                    handle: c.handle.clone(),
                    item: item.to_string(),
                })?;
                ingress.push((
                    c,
                    IngressEntry {
                        ingress_tag: tag,
                        ip: &c.ip,
                        protocol: "tcp",
                        port,
                    },
                ));
            }
        }
    }
    sort_by_json(&mut sources);
    sort_by_json(&mut destinations);
    sort_by_json(&mut ingress);
    let mut rules = Vec::new();
    for (c, s) in sources {
        rules.push(format!(
            "-s {} {} -j MARK --set-xmark {}/0xffffffff",
            host(&c.handle, s.ip)?,
            comment(&format!("src:{}", s.guid)),
            mark(s.tag)?
        ));
    }
    for (c, d) in destinations {
        let matches = format!(
            "-d {} -p {p} -m {p} --dport {} -m mark --mark {}",
            host(&c.handle, d.ip)?,
            dports(d.start_port, d.end_port),
            mark(d.source_tag)?,
            p = protocol(d.protocol)?,
        );
        if opts.c2c_logging {
            let prefix = log_prefix(&format!("OK_{}_{}", d.source_tag, d.guid));
            let limit = if d.protocol == "udp" {
                let n = opts.accepted_udp_logs_per_sec;
                format!("-m limit --limit {n}/sec --limit-burst {n}")
            } else {
                "-m conntrack --ctstate INVALID,NEW,UNTRACKED".to_string()
            };
            rules.push(format!(
                "{matches} {limit} -j LOG --log-prefix \"{prefix}\""
            ));
        }
        rules.push(format!(
            "{matches} {} -j ACCEPT",
            comment(&format!("src:{}_dst:{}", d.source_guid, d.guid))
        ));
    }
    for (c, i) in ingress {
        rules.push(format!(
            "-d {} -p tcp -m tcp --dport {} -m mark --mark {} -j ACCEPT",
            host(&c.handle, i.ip)?,
            i.port,
            mark(i.ingress_tag)?
        ));
    }
    Ok(rules)
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
