//! Spec versions: parsing, comparison and the command/version rules of SPEC.md.

use std::cmp::Ordering;

use crate::error::{CniError, ErrorCode};

/// The newest spec version this harness speaks; answered in VERSION output as the Go library does.
pub const NEWEST: &str = "1.1.0";

/// Versions every silk plugin accepts (upstream accepts only 1.0.0; more is harmless).
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A parsed `major.minor.patch` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpecVersion(pub u32, pub u32, pub u32);

impl SpecVersion {
    pub fn parse(v: &str) -> Option<SpecVersion> {
        // An absent cniVersion means 0.1.0 (libcni, version.ParsePrevResult).
        let v = if v.is_empty() { "0.1.0" } else { v };
        let mut parts = v.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().unwrap_or("0").parse().ok()?;
        let patch = parts.next().unwrap_or("0").parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(SpecVersion(major, minor, patch))
    }

    pub fn at_least(&self, other: SpecVersion) -> bool {
        self.cmp(&other) != Ordering::Less
    }
}

pub const V0_4_0: SpecVersion = SpecVersion(0, 4, 0);
pub const V1_0_0: SpecVersion = SpecVersion(1, 0, 0);
pub const V1_1_0: SpecVersion = SpecVersion(1, 1, 0);

/// Checks the config's `cniVersion` against the plugin's list: code 1 `incompatible CNI versions`.
pub fn check_supported(config_version: &str, supported: &[&str]) -> Result<SpecVersion, CniError> {
    let parsed = SpecVersion::parse(config_version);
    let ok = supported
        .iter()
        .any(|s| SpecVersion::parse(s) == parsed && parsed.is_some());
    match parsed {
        Some(v) if ok => Ok(v),
        _ => Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            "incompatible CNI versions",
            format!(
                "config is \"{config_version}\", plugin supports [{}]",
                supported
                    .iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert_eq!(SpecVersion::parse("1.0.0"), Some(V1_0_0));
        assert_eq!(SpecVersion::parse(""), Some(SpecVersion(0, 1, 0)));
        assert_eq!(SpecVersion::parse("x"), None);
        assert!(SpecVersion::parse("0.4.0").unwrap().at_least(V0_4_0));
        assert!(!SpecVersion::parse("0.3.1").unwrap().at_least(V0_4_0));
    }

    #[test]
    fn unsupported_version_is_code_1_with_upstream_details() {
        let e = check_supported("2.0.0", &["1.0.0"]).unwrap_err();
        assert_eq!(e.code.as_u32(), 1);
        assert_eq!(e.msg, "incompatible CNI versions");
        assert_eq!(
            e.details,
            "config is \"2.0.0\", plugin supports [\"1.0.0\"]"
        );
        assert!(check_supported("0.4.0", SUPPORTED).is_ok());
        assert!(check_supported("", SUPPORTED).is_err());
    }
}
