//! The `loggregator` block of a job's JSON config, with the keys upstream's
//! vxlan-policy-agent template renders (diego-logging-client's config): off unless
//! `loggregator_use_v2_api` is true; then the agent's port on 127.0.0.1, the mutual-TLS files
//! and the identity every envelope carries.

use std::collections::BTreeMap;

use serde::Deserialize;

/// go-loggregator's default agent port (`localhost:3458`), used when the key is absent.
pub const DEFAULT_API_PORT: u16 = 3458;

/// The block as rendered. Unknown keys are ignored, as upstream's Go decoder ignores them
/// (cf-deployment passes the shared diego block, with keys silk does not use).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RawLoggregator {
    pub loggregator_use_v2_api: bool,
    pub loggregator_api_port: i64,
    pub loggregator_ca_path: String,
    pub loggregator_cert_path: String,
    pub loggregator_key_path: String,
    pub loggregator_job_deployment: String,
    pub loggregator_job_name: String,
    pub loggregator_job_index: String,
    pub loggregator_job_ip: String,
    pub loggregator_job_origin: String,
    pub loggregator_source_id: String,
    pub loggregator_instance_id: String,
}

/// A validated v2 target: where the agent listens, the TLS files, and the identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggregatorV2 {
    pub api_port: u16,
    pub ca_path: String,
    pub cert_path: String,
    pub key_path: String,
    /// `source_id` of every envelope; empty means the program's origin (job name).
    pub source_id: String,
    pub instance_id: String,
    /// Tags on every envelope, as go-loggregator's `WithTag` client options set them:
    /// `deployment`, `job`, `index`, `ip`, `origin` (only those rendered non-empty).
    pub tags: BTreeMap<String, String>,
}

impl RawLoggregator {
    /// `None` when v2 is off (metrics go over dropsonde v1); otherwise the validated target.
    /// Problems are added to `errors` with the key prefixed by `loggregator.`.
    pub fn validate(&self, errors: &mut Vec<String>) -> Option<LoggregatorV2> {
        if !self.loggregator_use_v2_api {
            return None;
        }
        let api_port = match self.loggregator_api_port {
            0 => DEFAULT_API_PORT,
            p => match u16::try_from(p) {
                Ok(p) => p,
                Err(_) => {
                    errors.push(format!(
                        "loggregator.loggregator_api_port: must be a port number 1-65535, got {p}"
                    ));
                    0
                }
            },
        };
        for (key, value) in [
            ("loggregator_ca_path", &self.loggregator_ca_path),
            ("loggregator_cert_path", &self.loggregator_cert_path),
            ("loggregator_key_path", &self.loggregator_key_path),
        ] {
            if value.trim().is_empty() {
                errors.push(format!(
                    "loggregator.{key}: required when loggregator_use_v2_api is true"
                ));
            }
        }
        let tags = [
            ("deployment", &self.loggregator_job_deployment),
            ("job", &self.loggregator_job_name),
            ("index", &self.loggregator_job_index),
            ("ip", &self.loggregator_job_ip),
            ("origin", &self.loggregator_job_origin),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
        Some(LoggregatorV2 {
            api_port,
            ca_path: self.loggregator_ca_path.clone(),
            cert_path: self.loggregator_cert_path.clone(),
            key_path: self.loggregator_key_path.clone(),
            source_id: self.loggregator_source_id.clone(),
            instance_id: self.loggregator_instance_id.clone(),
            tags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawLoggregator {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn off_by_default_and_when_false() {
        let mut e = Vec::new();
        assert_eq!(raw("{}").validate(&mut e), None);
        assert_eq!(
            raw(r#"{"loggregator_use_v2_api": false}"#).validate(&mut e),
            None
        );
        assert!(e.is_empty());
    }

    #[test]
    fn the_rendered_v2_block_validates_with_upstream_tags() {
        let mut e = Vec::new();
        let v2 = raw(r#"{
          "loggregator_use_v2_api": true,
          "loggregator_api_port": 3459,
          "loggregator_ca_path": "/var/vcap/jobs/vxlan-policy-agent/config/certs/loggregator/ca.crt",
          "loggregator_cert_path": "/var/vcap/jobs/vxlan-policy-agent/config/certs/loggregator/client.crt",
          "loggregator_key_path": "/var/vcap/jobs/vxlan-policy-agent/config/certs/loggregator/client.key",
          "loggregator_job_deployment": "cf",
          "loggregator_job_name": "diego-cell",
          "loggregator_job_index": "cell-guid",
          "loggregator_job_ip": "10.0.16.7",
          "loggregator_job_origin": "vxlan-policy-agent",
          "loggregator_source_id": "vxlan-policy-agent",
          "loggregator_instance_id": "cell-guid",
          "app_metric_exclusion_filter": ["absolute_usage"]
        }"#)
        .validate(&mut e)
        .unwrap();
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(v2.api_port, 3459);
        assert_eq!(v2.source_id, "vxlan-policy-agent");
        assert_eq!(v2.instance_id, "cell-guid");
        assert_eq!(
            v2.tags.keys().map(String::as_str).collect::<Vec<_>>(),
            ["deployment", "index", "ip", "job", "origin"]
        );
        assert_eq!(v2.tags["job"], "diego-cell");
    }

    #[test]
    fn v2_without_tls_files_or_with_a_bad_port_lists_every_problem() {
        let mut e = Vec::new();
        raw(r#"{"loggregator_use_v2_api": true, "loggregator_api_port": 70000}"#).validate(&mut e);
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].contains("loggregator_api_port"));
        assert!(e[1].contains("loggregator_ca_path"));
        let mut e = Vec::new();
        let v2 = raw(
            r#"{"loggregator_use_v2_api": true, "loggregator_ca_path": "a",
                         "loggregator_cert_path": "b", "loggregator_key_path": "c"}"#,
        )
        .validate(&mut e)
        .unwrap();
        assert!(e.is_empty());
        assert_eq!(v2.api_port, DEFAULT_API_PORT);
        assert!(v2.tags.is_empty());
    }
}
