//! cni-teardown (cni.md §5.1), run by the silk-cni job's pre-start: removes legacy silk IFB
//! devices (`ifb` links whose name starts with `i`) and the state directories named in the
//! config (`{"paths_to_delete": [...]}`), logging failures without stopping. Unlike upstream it
//! also removes the iptables chains of containers that vanished without DEL (a garden crash),
//! but only when no container's host veth end exists: chains with live owners are never swept.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TeardownConfig {
    pub paths_to_delete: Vec<String>,
    /// The lock shared with cni-wrapper-plugin and vxlan-policy-agent (not in upstream's file,
    /// which therefore gets the default).
    #[serde(default = "default_lock_file")]
    pub iptables_lock_file: String,
}

fn default_lock_file() -> String {
    "/var/vcap/data/garden-cni/iptables.lock".into()
}

impl TeardownConfig {
    pub fn parse(text: &str) -> Result<TeardownConfig, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Names of the links of `kind` in `ip -j -d link show` output that `wanted` accepts.
fn links_of_kind(ip_json: &str, kind: &str, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(ip_json).unwrap_or_default();
    v.as_array()
        .map(|links| {
            links
                .iter()
                .filter(|l| l["linkinfo"]["info_kind"] == kind)
                .filter_map(|l| l["ifname"].as_str())
                .filter(|n| wanted(n))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Host ends of container veths (`s-` and 12 digits, silk-cni's naming): while one exists a
/// container may be alive.
pub fn container_veths(ip_json: &str) -> Vec<String> {
    links_of_kind(ip_json, "veth", |n| {
        n.strip_prefix("s-")
            .is_some_and(|d| d.len() == 12 && d.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Legacy IFB names: kind `ifb`, name starting with `i`.
pub fn legacy_ifbs(ip_json: &str) -> Vec<String> {
    links_of_kind(ip_json, "ifb", |n| n.starts_with('i'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_config_and_picks_legacy_ifbs_only() {
        let c =
            TeardownConfig::parse(r#"{"paths_to_delete": ["/var/vcap/data/host-local"]}"#).unwrap();
        assert_eq!(c.paths_to_delete, vec!["/var/vcap/data/host-local"]);
        assert_eq!(
            c.iptables_lock_file,
            "/var/vcap/data/garden-cni/iptables.lock"
        );
        assert!(TeardownConfig::parse("{}").is_err());
        let links = r#"[{"ifname":"i-010255030002","linkinfo":{"info_kind":"ifb"}},
                        {"ifname":"bwp3fe8b8fb7e62","linkinfo":{"info_kind":"ifb"}},
                        {"ifname":"ifb0x","linkinfo":{"info_kind":"veth"}}, {"ifname":"lo"}]"#;
        assert_eq!(legacy_ifbs(links), vec!["i-010255030002"]);
        let links = r#"[{"ifname":"s-010255030002","linkinfo":{"info_kind":"veth"}},
                        {"ifname":"s-01025503000","linkinfo":{"info_kind":"veth"}},
                        {"ifname":"s-010255030003","linkinfo":{"info_kind":"ifb"}}, {"ifname":"lo"}]"#;
        assert_eq!(container_veths(links), vec!["s-010255030002"]);
    }
}
