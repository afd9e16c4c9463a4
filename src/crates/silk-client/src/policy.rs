//! The policy server internal API client of vxlan-policy-agent (policy contract §1): mutual
//! TLS, HTTP/1.1 keep-alive, `client_timeout_seconds` for each whole request, no retries (the
//! next poll is the retry).

use std::time::Duration;

use hyper::Method;
use silk_core::asg::{SecurityGroup, SecurityGroupsResponse};
use silk_core::policy::{PoliciesResponse, Policy, TagRequest};

use crate::mtls::{check_status, decode_ok, ClientError, MtlsClient};
use crate::tls::ClientTls;

pub const POLICIES_PATH: &str = "/networking/v1/internal/policies";
pub const LAST_UPDATED_PATH: &str = "/networking/v1/internal/policies_last_updated";
pub const TAGS_PATH: &str = "/networking/v1/internal/tags";
pub const SECURITY_GROUPS_PATH: &str = "/networking/v1/internal/security_groups";
pub const SECURITY_GROUPS_LAST_UPDATED_PATH: &str =
    "/networking/v1/internal/security_groups_last_updated";
/// Upstream's client always asks for this page size (the server reads `limit`, not `per_page`;
/// kept for wire parity).
pub const PER_PAGE: u32 = 5000;
/// More pages than this in one fetch means the server's `next` does not advance.
pub const MAX_PAGES: usize = 10_000;

/// A client for one `policy_server_url`. Cheap to clone.
#[derive(Clone)]
pub struct PolicyClient {
    http: MtlsClient,
}

/// The request path of `GET policies`: without ids, every policy; with ids, `?id=` and the ids
/// joined with `,`, not URL-escaped (as upstream sends them).
pub fn policies_path(ids: Option<&[String]>) -> String {
    match ids {
        None => POLICIES_PATH.to_string(),
        Some(ids) => format!("{POLICIES_PATH}?id={}", ids.join(",")),
    }
}

/// The request path of one `GET security_groups` page: `per_page=5000`, then `space_guids`
/// (comma-joined) when there are any, then `from` for every page after the first.
pub fn security_groups_path(space_guids: &[String], from: Option<i64>) -> String {
    let mut path = format!("{SECURITY_GROUPS_PATH}?per_page={PER_PAGE}");
    if !space_guids.is_empty() {
        path.push_str("&space_guids=");
        path.push_str(&space_guids.join(","));
    }
    if let Some(f) = from {
        path.push_str(&format!("&from={f}"));
    }
    path
}

/// The tag of a `PUT tags` answer. The key matches case-insensitively, as Go's JSON decoder
/// matches struct fields.
pub fn parse_tag(body: &[u8]) -> Result<String, ClientError> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(ClientError::Decode)?;
    let tag = object
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("tag"))
        .map(|(_, v)| v)
        .ok_or_else(|| ClientError::Decode(serde::de::Error::missing_field("tag")))?;
    serde_json::from_value(tag.clone()).map_err(ClientError::Decode)
}

impl PolicyClient {
    pub fn new(url: &str, tls: &ClientTls, timeout: Duration) -> Result<Self, ClientError> {
        Ok(PolicyClient {
            http: MtlsClient::new(url, tls, timeout)?,
        })
    }

    /// `GET /networking/v1/internal/policies[?id=...]`.
    pub async fn policies(&self, ids: Option<&[String]>) -> Result<Vec<Policy>, ClientError> {
        let (status, body) = self
            .http
            .call(Method::GET, &policies_path(ids), None)
            .await?;
        decode_ok::<PoliciesResponse>(status, &body).map(|r| r.policies)
    }

    /// `GET /networking/v1/internal/policies_last_updated`: a bare integer (Unix ns).
    pub async fn policies_last_updated(&self) -> Result<i64, ClientError> {
        let (status, body) = self.http.call(Method::GET, LAST_UPDATED_PATH, None).await?;
        decode_ok(status, &body)
    }

    /// Every security group bound by default or to one of `space_guids`: the pages of
    /// `GET /networking/v1/internal/security_groups` followed through `next`/`from` and
    /// concatenated. Any page failing fails the whole fetch (no partial answer).
    pub async fn security_groups(
        &self,
        space_guids: &[String],
    ) -> Result<Vec<SecurityGroup>, ClientError> {
        let mut groups = Vec::new();
        let mut from = None;
        for _ in 0..MAX_PAGES {
            let path = security_groups_path(space_guids, from);
            let (status, body) = self.http.call(Method::GET, &path, None).await?;
            let page: SecurityGroupsResponse = decode_ok(status, &body)?;
            groups.extend(page.security_groups);
            if page.next == 0 {
                return Ok(groups);
            }
            if from == Some(page.next) {
                return Err(ClientError::Pagination(format!(
                    "security groups: page from={} names itself as next",
                    page.next
                )));
            }
            from = Some(page.next);
        }
        Err(ClientError::Pagination(format!(
            "security groups: more than {MAX_PAGES} pages"
        )))
    }

    /// `GET /networking/v1/internal/security_groups_last_updated` (newer policy servers): a bare
    /// integer. Older servers answer 404 ([`ClientError::Status`]).
    pub async fn security_groups_last_updated(&self) -> Result<i64, ClientError> {
        let (status, body) = self
            .http
            .call(Method::GET, SECURITY_GROUPS_LAST_UPDATED_PATH, None)
            .await?;
        decode_ok(status, &body)
    }

    /// `PUT /networking/v1/internal/tags`: create-or-get the tag of group `(id, type)`.
    pub async fn create_or_get_tag(
        &self,
        id: &str,
        group_type: &str,
    ) -> Result<String, ClientError> {
        let body =
            serde_json::to_vec(&TagRequest { id, group_type }).map_err(ClientError::Decode)?;
        let (status, bytes) = self.http.call(Method::PUT, TAGS_PATH, Some(body)).await?;
        check_status(status, &bytes)?;
        parse_tag(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_the_contract() {
        assert_eq!(policies_path(None), "/networking/v1/internal/policies");
        let ids = vec!["a-1".to_string(), "b-2".to_string()];
        assert_eq!(
            policies_path(Some(&ids)),
            "/networking/v1/internal/policies?id=a-1,b-2"
        );
        assert_eq!(
            security_groups_path(&[], None),
            "/networking/v1/internal/security_groups?per_page=5000"
        );
        assert_eq!(
            security_groups_path(&ids, Some(17)),
            "/networking/v1/internal/security_groups?per_page=5000&space_guids=a-1,b-2&from=17"
        );
    }

    #[test]
    fn tag_keys_match_case_insensitively() {
        let tag = |b: &str| parse_tag(b.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(
            tag(r#"{"id":"INGRESS_ROUTER","type":"router","tag":"0004"}"#),
            Ok("0004".into())
        );
        assert_eq!(
            tag(r#"{"ID":"INGRESS_ROUTER","Tag":"00ff"}"#),
            Ok("00ff".into())
        );
        assert_eq!(tag(r#"{"TAG":"0001"}"#), Ok("0001".into()));
        assert_eq!(tag(r#"{"tAg":"0002"}"#), Ok("0002".into()));
        assert_eq!(
            tag(r#"{"ID":"INGRESS_ROUTER"}"#),
            Err("decode response body: missing field `tag`".into())
        );
        assert!(tag(r#"{"tag":7}"#).is_err());
        assert!(tag("[]").is_err());
    }
}
