//! The lab policy server's input: the policies-and-ASGs file (JSON, format below), validated
//! into [`Loaded`], and the reload rule that moves the last-updated values only when their part
//! of the content changed. Pure: no I/O, `now` passed in.
//!
//! ```json
//! {
//!   "policies": [
//!     {"source": {"id": "<app guid>"},
//!      "destination": {"id": "<app guid>", "protocol": "tcp", "ports": {"start": 8080, "end": 8080}}}
//!   ],
//!   "security_groups": [
//!     {"guid": "<guid>", "name": "dns",
//!      "rules": [{"protocol": "udp", "destination": "0.0.0.0/0", "ports": "53"}],
//!      "staging_default": true, "running_default": true,
//!      "staging_space_guids": [], "running_space_guids": ["<space guid>"]}
//!   ]
//! }
//! ```
//!
//! Policies take the shape of the external API's `POST /networking/v1/external/policies` body
//! (tags are the server's business). A security group's `rules` is a JSON array of Cloud
//! Controller rule objects (`protocol`, `destination`, `ports`, `type`, `code`, `description`,
//! `log`; missing keys take CAPI's defaults), or a string sent as it is (to serve rules an
//! agent cannot parse). Both top-level keys may be absent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use silk_core::policy::{Policy, PolicyDestination, PolicySource, Ports};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DataError {
    #[error("parse policies file: {0}")]
    Parse(String),
    #[error("policy {index}: {reason}")]
    Policy { index: usize, reason: String },
    #[error("security group {index}: {reason}")]
    SecurityGroup { index: usize, reason: String },
    #[error("tag space exhausted: more than {0} groups")]
    Tags(u64),
}

// === file format ===

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub policies: Vec<FilePolicy>,
    #[serde(default)]
    pub security_groups: Vec<FileSecurityGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePolicy {
    pub source: FileSource,
    pub destination: FileDestination,
}

impl FilePolicy {
    /// `src` may reach `dst` on `protocol` ports `start..=end`.
    pub fn new(src: &str, dst: &str, protocol: &str, start: u32, end: u32) -> FilePolicy {
        FilePolicy {
            source: FileSource { id: src.into() },
            destination: FileDestination {
                id: dst.into(),
                protocol: protocol.into(),
                ports: Ports { start, end },
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDestination {
    pub id: String,
    pub protocol: String,
    pub ports: Ports,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSecurityGroup {
    pub guid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub rules: FileRules,
    #[serde(default)]
    pub staging_default: bool,
    #[serde(default)]
    pub running_default: bool,
    #[serde(default)]
    pub staging_space_guids: Vec<String>,
    #[serde(default)]
    pub running_space_guids: Vec<String>,
}

/// Rules as objects, or a string served verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FileRules {
    Raw(String),
    Rules(Vec<AsgRule>),
}

impl Default for FileRules {
    fn default() -> Self {
        FileRules::Rules(Vec::new())
    }
}

/// One Cloud Controller security group rule, serialised in the key order upstream's
/// `rules` strings have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsgRule {
    pub protocol: String,
    pub destination: String,
    #[serde(default)]
    pub ports: String,
    #[serde(default, rename = "type")]
    pub icmp_type: i64,
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub log: bool,
}

impl AsgRule {
    /// A rule without ICMP type and code, description or logging.
    pub fn new(protocol: &str, destination: &str, ports: &str) -> AsgRule {
        AsgRule {
            protocol: protocol.into(),
            destination: destination.into(),
            ports: ports.into(),
            icmp_type: 0,
            code: 0,
            description: String::new(),
            log: false,
        }
    }
}

// === what the server serves ===

/// One row of the security groups "table"; `id` is its 1-based position in the file (the
/// database id `next`/`from` refer to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityGroupRow {
    #[serde(skip)]
    pub id: u64,
    pub guid: String,
    pub name: String,
    pub rules: String,
    pub staging_default: bool,
    pub running_default: bool,
    pub staging_space_guids: Vec<String>,
    pub running_space_guids: Vec<String>,
}

/// Group tags, create-or-get, never freed while the server runs: a group keeps its tag across
/// reloads. Tags are assigned in order of first appearance, from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRegistry {
    /// Tag length in bytes (policy server `tag_length`, default 2).
    pub length: u32,
    groups: BTreeMap<String, (u64, String)>,
    next: u64,
}

impl TagRegistry {
    pub fn new(length: u32) -> Self {
        TagRegistry {
            length,
            groups: BTreeMap::new(),
            next: 1,
        }
    }

    fn max(&self) -> u64 {
        (1u64 << (8 * self.length.min(7))) - 1
    }

    /// Uppercase hex, zero-padded to `2 * length` characters.
    pub fn format(&self, tag: u64) -> String {
        format!("{tag:0width$X}", width = 2 * self.length as usize)
    }

    /// The tag of `(id, type)`, created if new. `Ok(None)` when `id` exists with another type
    /// (upstream's unique constraint makes that a 500).
    pub fn create_or_get(&mut self, id: &str, kind: &str) -> Result<Option<String>, DataError> {
        if let Some((tag, k)) = self.groups.get(id) {
            return Ok((k == kind).then(|| self.format(*tag)));
        }
        if self.next > self.max() {
            return Err(DataError::Tags(self.max()));
        }
        let tag = self.next;
        self.next += 1;
        self.groups.insert(id.to_string(), (tag, kind.to_string()));
        Ok(Some(self.format(tag)))
    }
}

/// The served content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub policies: Vec<Policy>,
    pub security_groups: Vec<SecurityGroupRow>,
    /// Unix nanoseconds (microsecond precision, as upstream's database).
    pub policies_last_updated: i64,
    pub security_groups_last_updated: i64,
}

/// Parses and validates the file text.
pub fn parse(text: &str) -> Result<PolicyFile, DataError> {
    let file: PolicyFile =
        serde_json::from_str(text).map_err(|e| DataError::Parse(e.to_string()))?;
    validate(&file)?;
    Ok(file)
}

fn validate(file: &PolicyFile) -> Result<(), DataError> {
    let mut seen = std::collections::BTreeSet::new();
    for (index, p) in file.policies.iter().enumerate() {
        let bad = |reason: &str| DataError::Policy {
            index,
            reason: reason.to_string(),
        };
        if p.source.id.is_empty() || p.destination.id.is_empty() {
            return Err(bad("source.id and destination.id must not be empty"));
        }
        if !matches!(p.destination.protocol.as_str(), "tcp" | "udp") {
            return Err(bad("destination.protocol must be tcp or udp"));
        }
        let Ports { start, end } = p.destination.ports;
        if !(1..=65535).contains(&start) || !(start..=65535).contains(&end) {
            return Err(bad("ports must satisfy 1 <= start <= end <= 65535"));
        }
        if !seen.insert(p) {
            return Err(bad("duplicate policy"));
        }
    }
    let mut guids = std::collections::BTreeSet::new();
    for (index, g) in file.security_groups.iter().enumerate() {
        if g.guid.is_empty() {
            return Err(DataError::SecurityGroup {
                index,
                reason: "guid must not be empty".into(),
            });
        }
        if !guids.insert(&g.guid) {
            return Err(DataError::SecurityGroup {
                index,
                reason: format!("duplicate guid {}", g.guid),
            });
        }
    }
    Ok(())
}

impl std::hash::Hash for FilePolicy {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.source.id.hash(h);
        self.destination.id.hash(h);
        self.destination.protocol.hash(h);
        self.destination.ports.start.hash(h);
        self.destination.ports.end.hash(h);
    }
}

impl PartialOrd for FilePolicy {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FilePolicy {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        let key = |p: &FilePolicy| {
            (
                p.source.id.clone(),
                p.destination.id.clone(),
                p.destination.protocol.clone(),
                p.destination.ports.start,
                p.destination.ports.end,
            )
        };
        key(self).cmp(&key(o))
    }
}

fn rules_text(rules: &FileRules) -> String {
    match rules {
        FileRules::Raw(s) => s.clone(),
        FileRules::Rules(r) => serde_json::to_string(r).unwrap_or_else(|_| "[]".into()),
    }
}

/// A last-updated value for a change seen at `now_ns`: microsecond precision and strictly
/// greater than `previous`.
fn bump(previous: i64, now_ns: i64) -> i64 {
    let now = now_ns - now_ns.rem_euclid(1000);
    now.max(previous + 1000)
}

/// The content `file` makes, given what was served before (`prev`, `None` at start): tags from
/// `tags`, last-updated values kept when their part is unchanged and moved forward otherwise.
pub fn load(
    file: &PolicyFile,
    prev: Option<&Loaded>,
    tags: &mut TagRegistry,
    now_ns: i64,
) -> Result<Loaded, DataError> {
    let mut policies = Vec::with_capacity(file.policies.len());
    for p in &file.policies {
        let src = tags.create_or_get(&p.source.id, "app")?.unwrap_or_default();
        let dst = tags
            .create_or_get(&p.destination.id, "app")?
            .unwrap_or_default();
        policies.push(Policy {
            source: PolicySource {
                id: p.source.id.clone(),
                tag: src,
            },
            destination: PolicyDestination {
                id: p.destination.id.clone(),
                tag: dst,
                protocol: p.destination.protocol.clone(),
                ports: p.destination.ports,
            },
        });
    }
    let security_groups: Vec<SecurityGroupRow> = file
        .security_groups
        .iter()
        .enumerate()
        .map(|(i, g)| SecurityGroupRow {
            id: i as u64 + 1,
            guid: g.guid.clone(),
            name: g.name.clone(),
            rules: rules_text(&g.rules),
            staging_default: g.staging_default,
            running_default: g.running_default,
            staging_space_guids: g.staging_space_guids.clone(),
            running_space_guids: g.running_space_guids.clone(),
        })
        .collect();
    let (policies_last_updated, security_groups_last_updated) = match prev {
        None => (bump(0, now_ns), bump(0, now_ns)),
        Some(prev) => (
            if prev.policies == policies {
                prev.policies_last_updated
            } else {
                bump(prev.policies_last_updated, now_ns)
            },
            if prev.security_groups == security_groups {
                prev.security_groups_last_updated
            } else {
                bump(prev.security_groups_last_updated, now_ns)
            },
        ),
    };
    Ok(Loaded {
        policies,
        security_groups,
        policies_last_updated,
        security_groups_last_updated,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FILE: &str = r#"{
      "policies": [
        {"source": {"id": "app-a"}, "destination": {"id": "app-b", "protocol": "tcp", "ports": {"start": 8080, "end": 8080}}},
        {"source": {"id": "app-c"}, "destination": {"id": "app-b", "protocol": "udp", "ports": {"start": 9000, "end": 9100}}}
      ],
      "security_groups": [
        {"guid": "g-dns", "name": "dns", "rules": [{"protocol": "udp", "destination": "0.0.0.0/0", "ports": "53"}],
         "staging_default": true, "running_default": true},
        {"guid": "g-raw", "name": "raw", "rules": "[{\"protocol\":\"tcp\"", "running_space_guids": ["space-1"]}
      ]
    }"#;

    #[test]
    fn loads_policies_with_tags_and_groups_with_rules_strings() {
        let file = parse(FILE).unwrap();
        let mut tags = TagRegistry::new(2);
        let l = load(&file, None, &mut tags, 1_729_785_226_123_456_789).unwrap();
        assert_eq!(l.policies[0].source.tag, "0001");
        assert_eq!(l.policies[0].destination.tag, "0002");
        assert_eq!(l.policies[1].source.tag, "0003");
        assert_eq!(l.policies[1].destination.tag, "0002");
        assert_eq!(l.policies_last_updated, 1_729_785_226_123_456_000);
        assert_eq!(
            l.security_groups[0].rules,
            r#"[{"protocol":"udp","destination":"0.0.0.0/0","ports":"53","type":0,"code":0,"description":"","log":false}]"#
        );
        assert_eq!(l.security_groups[1].rules, r#"[{"protocol":"tcp""#);
        assert_eq!((l.security_groups[0].id, l.security_groups[1].id), (1, 2));
    }

    #[test]
    fn last_updated_moves_only_for_the_part_that_changed() {
        let mut tags = TagRegistry::new(2);
        let first = load(&parse(FILE).unwrap(), None, &mut tags, 5_000_000).unwrap();
        // Same content, later: nothing moves.
        let same = load(&parse(FILE).unwrap(), Some(&first), &mut tags, 9_000_000).unwrap();
        assert_eq!(same, first);
        // One policy less: policies move, groups stay.
        let mut file = parse(FILE).unwrap();
        file.policies.pop();
        let fewer = load(&file, Some(&first), &mut tags, 9_000_000).unwrap();
        assert_eq!(fewer.policies_last_updated, 9_000_000);
        assert_eq!(
            fewer.security_groups_last_updated,
            first.security_groups_last_updated
        );
        // A change within the same microsecond (or with a clock behind) still moves forward.
        let mut file2 = file.clone();
        file2.security_groups[0].running_default = false;
        let g = load(&file2, Some(&fewer), &mut tags, 9_000_100).unwrap();
        assert_eq!(g.security_groups_last_updated, 9_000_000);
        assert!(g.security_groups_last_updated > fewer.security_groups_last_updated);
        let back = load(&file, Some(&g), &mut tags, 1_000).unwrap();
        assert_eq!(
            back.security_groups_last_updated,
            g.security_groups_last_updated + 1000
        );
        // Tags survive reloads: app-c keeps 0003 although it left and came back.
        let again = load(&parse(FILE).unwrap(), Some(&back), &mut tags, 10_000_000).unwrap();
        assert_eq!(again.policies[1].source.tag, "0003");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let cases = [
            ("{", "parse policies file"),
            (r#"{"polices": []}"#, "unknown field"),
            (
                r#"{"policies": [{"source": {"id": ""}, "destination": {"id": "b", "protocol": "tcp", "ports": {"start": 1, "end": 1}}}]}"#,
                "policy 0: source.id",
            ),
            (
                r#"{"policies": [{"source": {"id": "a"}, "destination": {"id": "b", "protocol": "icmp", "ports": {"start": 1, "end": 1}}}]}"#,
                "tcp or udp",
            ),
            (
                r#"{"policies": [{"source": {"id": "a"}, "destination": {"id": "b", "protocol": "tcp", "ports": {"start": 9, "end": 8}}}]}"#,
                "start <= end",
            ),
            (
                r#"{"policies": [{"source": {"id": "a"}, "destination": {"id": "b", "protocol": "tcp", "ports": {"start": 8, "end": 8}}},
                                {"source": {"id": "a"}, "destination": {"id": "b", "protocol": "tcp", "ports": {"start": 8, "end": 8}}}]}"#,
                "policy 1: duplicate",
            ),
            (
                r#"{"security_groups": [{"guid": "x"}, {"guid": "x"}]}"#,
                "security group 1: duplicate guid x",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert_eq!(parse("{}").unwrap(), PolicyFile::default());
    }

    #[test]
    fn tags_are_create_or_get_per_type() {
        let mut t = TagRegistry::new(1);
        assert_eq!(
            t.create_or_get("INGRESS_ROUTER", "router").unwrap(),
            Some("01".into())
        );
        assert_eq!(
            t.create_or_get("INGRESS_ROUTER", "router").unwrap(),
            Some("01".into())
        );
        assert_eq!(t.create_or_get("INGRESS_ROUTER", "app").unwrap(), None);
        for i in 2..=255 {
            t.create_or_get(&format!("g{i}"), "app").unwrap();
        }
        assert_eq!(t.format(255), "FF");
        assert!(t.create_or_get("one-too-many", "app").is_err());
    }
}
