//! cni-teardown (cni.md §5.1), run by the silk-cni job's pre-start: removes legacy silk IFB
//! devices (`ifb` links whose name starts with `i`) and the state directories named in the
//! config (`{"paths_to_delete": [...]}`), logging failures without stopping. Unlike upstream it
//! also removes the iptables chains of containers that vanished without DEL (a garden crash),
//! but only when no container's host veth end exists: chains with live owners are never swept.

use serde::Deserialize;
use silk_ops::config::{nonempty, ConfigError};

/// `teardown-config.json` as rendered (jobs/silk-cni/templates/teardown-config.json.erb).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeardownConfig {
    pub paths_to_delete: Vec<String>,
    /// The lock shared with cni-wrapper-plugin and vxlan-policy-agent (not in upstream's file,
    /// which therefore gets the default).
    #[serde(default = "default_lock_file")]
    pub iptables_lock_file: String,
}

/// A checked teardown config: every path to delete is absolute and not `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeardownConfig {
    pub paths_to_delete: Vec<String>,
    pub iptables_lock_file: String,
}

fn default_lock_file() -> String {
    "/var/vcap/data/garden-cni/iptables.lock".into()
}

impl TeardownConfig {
    /// Decodes and checks the config text (silk-ops's loader), listing every problem.
    pub fn parse(text: &str) -> Result<TeardownConfig, ConfigError> {
        silk_ops::config::parse::<RawTeardownConfig, TeardownConfig>(text)
    }
}

impl TryFrom<RawTeardownConfig> for TeardownConfig {
    type Error = ConfigError;

    fn try_from(r: RawTeardownConfig) -> Result<TeardownConfig, ConfigError> {
        let mut errors = Vec::new();
        for (i, p) in r.paths_to_delete.iter().enumerate() {
            // The paths are removed recursively: a relative path would depend on the working
            // directory pre-start runs in, and `/` would wipe the cell.
            let path = std::path::Path::new(p);
            if !path.is_absolute() || path.parent().is_none() {
                errors.push(format!(
                    "paths_to_delete[{i}]: must be an absolute path below /, got {p:?}"
                ));
            }
        }
        nonempty(&mut errors, "iptables_lock_file", &r.iptables_lock_file);
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }
        Ok(TeardownConfig {
            paths_to_delete: r.paths_to_delete,
            iptables_lock_file: r.iptables_lock_file,
        })
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
    fn rejects_paths_that_are_not_absolute_and_below_root_listing_all() {
        let err = TeardownConfig::parse(
            r#"{"paths_to_delete": ["/var/vcap/data/silk", "relative/dir", "/", "", "//"],
                "iptables_lock_file": " "}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid config: paths_to_delete[1]: must be an absolute path below /, got \"relative/dir\"; \
             paths_to_delete[2]: must be an absolute path below /, got \"/\"; \
             paths_to_delete[3]: must be an absolute path below /, got \"\"; \
             paths_to_delete[4]: must be an absolute path below /, got \"//\"; \
             iptables_lock_file: must not be empty"
        );
        let ok = TeardownConfig::parse(r#"{"paths_to_delete": [], "iptables_lock_file": "/l"}"#)
            .unwrap();
        assert_eq!(ok.iptables_lock_file, "/l");
    }

    #[test]
    fn parses_config_and_picks_legacy_ifbs_only() {
        let c =
            TeardownConfig::parse(r#"{"paths_to_delete": ["/var/vcap/data/host-local"]}"#).unwrap();
        assert_eq!(c.paths_to_delete, vec!["/var/vcap/data/host-local"]);
        assert_eq!(
            c.iptables_lock_file,
            "/var/vcap/data/garden-cni/iptables.lock"
        );
        assert!(matches!(
            TeardownConfig::parse("{}"),
            Err(ConfigError::Json(_))
        ));
        assert!(matches!(
            TeardownConfig::parse(r#"{"paths_to_delete": [], "extra": 1}"#),
            Err(ConfigError::Json(_))
        ));
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

/// Any config text gives a checked config or a config error, never a panic; a checked config
/// never names a path that is relative or `/`.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;
    use silk_testkit::fuzz;

    use super::TeardownConfig;

    const CONFIG: &str = r#"{"paths_to_delete": ["/var/vcap/data/container-metadata", "/var/vcap/data/host-local", "/var/vcap/data/silk"], "iptables_lock_file": "/var/vcap/data/garden-cni/iptables.lock"}"#;

    proptest! {
        #![proptest_config(fuzz::config())]

        #[test]
        fn any_teardown_config_parses_or_fails(text in fuzz::config_text(CONFIG)) {
            if let Ok(c) = TeardownConfig::parse(&text) {
                for p in &c.paths_to_delete {
                    let path = std::path::Path::new(p);
                    prop_assert!(path.is_absolute() && path.parent().is_some(), "{:?}", p);
                }
            }
        }
    }
}
