//! cni-teardown (cni.md §5.1), run by the silk-cni job's pre-start: removes legacy silk IFB
//! devices (`ifb` links whose name starts with `i`) and the state directories named in the
//! config (`{"paths_to_delete": [...]}`), logging failures without stopping.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TeardownConfig {
    pub paths_to_delete: Vec<String>,
}

impl TeardownConfig {
    pub fn parse(text: &str) -> Result<TeardownConfig, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Legacy IFB names from `ip -j -d link show` output: kind `ifb`, name starting with `i`.
pub fn legacy_ifbs(ip_json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(ip_json).unwrap_or_default();
    v.as_array()
        .map(|links| {
            links
                .iter()
                .filter(|l| l["linkinfo"]["info_kind"] == "ifb")
                .filter_map(|l| l["ifname"].as_str())
                .filter(|n| n.starts_with('i'))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_config_and_picks_legacy_ifbs_only() {
        let c =
            TeardownConfig::parse(r#"{"paths_to_delete": ["/var/vcap/data/host-local"]}"#).unwrap();
        assert_eq!(c.paths_to_delete, vec!["/var/vcap/data/host-local"]);
        assert!(TeardownConfig::parse("{}").is_err());
        let links = r#"[{"ifname":"i-010255030002","linkinfo":{"info_kind":"ifb"}},
                        {"ifname":"bwp3fe8b8fb7e62","linkinfo":{"info_kind":"ifb"}},
                        {"ifname":"ifb0x","linkinfo":{"info_kind":"veth"}}, {"ifname":"lo"}]"#;
        assert_eq!(legacy_ifbs(links), vec!["i-010255030002"]);
    }
}
