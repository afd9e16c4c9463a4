//! The policy server's internal API bodies (policy contract §1.3-1.5): c2c policies between
//! policy groups, each carrying the source group's tag (the packet mark), and the tag of a
//! group created on demand.

use serde::{Deserialize, Serialize};

/// `GET /networking/v1/internal/policies` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoliciesResponse {
    #[serde(default)]
    pub total_policies: u64,
    /// `[]` when empty; a `null` is read as empty too.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub policies: Vec<Policy>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Policy>, D::Error> {
    Ok(Option::<Vec<Policy>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub source: PolicySource,
    pub destination: PolicyDestination,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySource {
    pub id: String,
    /// Uppercase hex, zero-padded (`"000A"`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDestination {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    pub protocol: String,
    pub ports: Ports,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    pub start: u32,
    pub end: u32,
}

/// `PUT /networking/v1/internal/tags` request, with the capitalised keys upstream's Go client
/// sends (the server matches keys case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagRequest<'a> {
    #[serde(rename = "ID")]
    pub id: &'a str,
    #[serde(rename = "Type")]
    pub group_type: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_contract_example_and_null_lists() {
        let body = r#"{"total_policies":1,"policies":[{"source":{"id":"a","tag":"0001"},
            "destination":{"id":"b","tag":"0002","protocol":"udp","ports":{"start":9000,"end":9100}}}]}"#;
        let r: PoliciesResponse = serde_json::from_str(body).unwrap();
        assert_eq!(r.policies[0].source.tag, "0001");
        assert_eq!(
            r.policies[0].destination.ports,
            Ports {
                start: 9000,
                end: 9100
            }
        );
        let r: PoliciesResponse =
            serde_json::from_str(r#"{"total_policies":0,"policies":null}"#).unwrap();
        assert!(r.policies.is_empty());
    }

    #[test]
    fn tag_request_uses_go_field_names() {
        let b = serde_json::to_string(&TagRequest {
            id: "INGRESS_ROUTER",
            group_type: "router",
        })
        .unwrap();
        assert_eq!(b, r#"{"ID":"INGRESS_ROUTER","Type":"router"}"#);
    }
}
