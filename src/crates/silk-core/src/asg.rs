//! The policy server's security groups (policy contract §1.6): the body of
//! `GET /networking/v1/internal/security_groups`, whose `rules` is a JSON array inside a JSON
//! string, and the rule model of an application security group (ASG).
//!
//! `rules` stays a string in [`SecurityGroup`] and is decoded per group by
//! [`SecurityGroup::parse_rules`], so one malformed group does not make the whole answer
//! unreadable (upstream fails the whole request decode).

use serde::{Deserialize, Serialize};

/// One page of `GET /networking/v1/internal/security_groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroupsResponse {
    /// The `from` of the next page; 0 when this is the last one.
    #[serde(default)]
    pub next: i64,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub security_groups: Vec<SecurityGroup>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A security group as the policy server stores it (CAPI's, copied by the ASG syncer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub guid: String,
    #[serde(default)]
    pub name: String,
    /// A JSON array of [`SecurityGroupRule`], as text.
    #[serde(default)]
    pub rules: String,
    #[serde(default)]
    pub staging_default: bool,
    #[serde(default)]
    pub running_default: bool,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub staging_space_guids: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub running_space_guids: Vec<String>,
}

/// One rule of a security group (CAPI's rule object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityGroupRule {
    /// `tcp`, `udp`, `icmp` or `all`; anything else grants nothing.
    pub protocol: String,
    /// Comma-separated IPs, CIDRs and `a-b` ranges.
    pub destination: String,
    /// Comma-separated ports and `a-b` ranges (tcp and udp only).
    pub ports: String,
    /// ICMP type; `-1` means every type (upstream casts to 8 bits: 255).
    #[serde(rename = "type")]
    pub icmp_type: i64,
    /// ICMP code; `-1` means every code.
    pub code: i64,
    pub description: String,
    pub log: bool,
}

impl SecurityGroup {
    /// Decodes `rules`. An empty string is an empty list.
    pub fn parse_rules(&self) -> Result<Vec<SecurityGroupRule>, serde_json::Error> {
        if self.rules.trim().is_empty() {
            return Ok(Vec::new());
        }
        Ok(
            serde_json::from_str::<Option<Vec<SecurityGroupRule>>>(&self.rules)?
                .unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"{"next": 0, "security_groups": [
      {"guid": "b8e2", "name": "orders-db-access",
       "rules": "[{\"protocol\":\"tcp\",\"destination\":\"10.0.11.0/24\",\"ports\":\"80,443\",\"type\":0,\"code\":0,\"description\":\"zone A web\",\"log\":true},{\"protocol\":\"icmp\",\"destination\":\"0.0.0.0/0\",\"ports\":\"\",\"type\":-1,\"code\":-1,\"description\":\"\",\"log\":false}]",
       "staging_default": false, "running_default": false,
       "staging_space_guids": null, "running_space_guids": ["7d2c"]}]}"#;

    #[test]
    fn reads_the_contract_shape_with_rules_as_a_string() {
        let r: SecurityGroupsResponse = serde_json::from_str(PAGE).unwrap();
        let g = &r.security_groups[0];
        assert!(g.staging_space_guids.is_empty());
        let rules = g.parse_rules().unwrap();
        assert_eq!(rules[0].ports, "80,443");
        assert!(rules[0].log);
        assert_eq!((rules[1].icmp_type, rules[1].code), (-1, -1));
    }

    #[test]
    fn a_malformed_rules_string_is_an_error_of_that_group_only() {
        let g = SecurityGroup {
            guid: "g".into(),
            name: String::new(),
            rules: "[{".into(),
            staging_default: true,
            running_default: true,
            staging_space_guids: vec![],
            running_space_guids: vec![],
        };
        assert!(g.parse_rules().is_err());
        let empty = SecurityGroup {
            rules: String::new(),
            ..g
        };
        assert_eq!(empty.parse_rules().unwrap(), vec![]);
    }
}
