//! The policy server internal API client of vxlan-policy-agent (policy contract §1): mutual
//! TLS, HTTP/1.1 keep-alive, `client_timeout_seconds` for each whole request, no retries (the
//! next poll is the retry).

use std::time::Duration;

use hyper::Method;
use silk_core::policy::{PoliciesResponse, Policy, TagRequest};

use crate::mtls::{check_status, decode_ok, ClientError, MtlsClient};
use crate::tls::ClientTls;

pub const POLICIES_PATH: &str = "/networking/v1/internal/policies";
pub const LAST_UPDATED_PATH: &str = "/networking/v1/internal/policies_last_updated";
pub const TAGS_PATH: &str = "/networking/v1/internal/tags";

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

#[derive(serde::Deserialize)]
struct TagResponse {
    #[serde(alias = "Tag", alias = "TAG")]
    tag: String,
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
        decode_ok::<TagResponse>(status, &bytes).map(|t| t.tag)
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
    }
}
