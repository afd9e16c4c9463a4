//! `silk-daemon-bootstrap` (contract §6.3), for single-IP VMs (Istio routers): ask the policy
//! server for the `INGRESS_ROUTER` tag, then mark traffic leaving through `silk-vtep` with it
//! in the filter chain `istio-ingress`, jumped to first from `OUTPUT` ([`crate::istio`]). A
//! no-op unless the config's `single_ip_only` is true.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use silk_client::{ClientTls, PolicyClient};
use silk_dataplane::iptables::{Iptables, SystemIptables};
use silk_ops::config::{nonempty, ConfigError};

use crate::istio::{self, IstioError};

/// The group the tag is asked for (upstream's `{"ID":"INGRESS_ROUTER","Type":"router"}`).
pub const INGRESS_ROUTER_ID: &str = "INGRESS_ROUTER";
pub const INGRESS_ROUTER_TYPE: &str = "router";

/// `bootstrap-config.json` (contract §5.3) as rendered. Unknown keys are rejected so a typo
/// in a template fails loudly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBootstrapConfig {
    #[serde(default)]
    pub policy_server_url: String,
    #[serde(default)]
    pub policy_server_ca_cert_file: String,
    #[serde(default)]
    pub policy_client_cert_file: String,
    #[serde(default)]
    pub policy_client_key_file: String,
    #[serde(default)]
    pub iptables_lock_file: String,
    #[serde(default)]
    pub single_ip_only: bool,
}

/// A checked `bootstrap-config.json`: when `single_ip_only` is set, the policy server's
/// https URL and the three mutual-TLS files are present (the no-op config of a VM that is not
/// single-IP needs nothing else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapConfig {
    pub policy_server_url: String,
    pub policy_server_ca_cert_file: String,
    pub policy_client_cert_file: String,
    pub policy_client_key_file: String,
    pub iptables_lock_file: String,
    pub single_ip_only: bool,
}

impl BootstrapConfig {
    /// Decodes and checks a rendered `bootstrap-config.json`, every problem listed at once.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        silk_ops::config::parse::<RawBootstrapConfig, BootstrapConfig>(text)
    }
}

impl TryFrom<RawBootstrapConfig> for BootstrapConfig {
    type Error = ConfigError;

    fn try_from(r: RawBootstrapConfig) -> Result<Self, ConfigError> {
        let mut e = Vec::new();
        if r.single_ip_only {
            if !r.policy_server_url.starts_with("https://")
                || r.policy_server_url.len() == "https://".len()
            {
                e.push(format!(
                    "policy_server_url: must be an https URL, got {:?}",
                    r.policy_server_url
                ));
            }
            nonempty(
                &mut e,
                "policy_server_ca_cert_file",
                &r.policy_server_ca_cert_file,
            );
            nonempty(
                &mut e,
                "policy_client_cert_file",
                &r.policy_client_cert_file,
            );
            nonempty(&mut e, "policy_client_key_file", &r.policy_client_key_file);
        }
        if !e.is_empty() {
            return Err(ConfigError::Invalid(e));
        }
        Ok(BootstrapConfig {
            policy_server_url: r.policy_server_url,
            policy_server_ca_cert_file: r.policy_server_ca_cert_file,
            policy_client_cert_file: r.policy_client_cert_file,
            policy_client_key_file: r.policy_client_key_file,
            iptables_lock_file: r.iptables_lock_file,
            single_ip_only: r.single_ip_only,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("policy server tls: {0}")]
    Tls(#[from] silk_client::TlsError),
    #[error("policy server request: {0}")]
    Request(#[from] silk_client::ClientError),
    #[error("policy server response has no tag")]
    NoTag,
    #[error("iptables: {0}")]
    Iptables(#[from] IstioError),
}

/// The deadline of the tag request (contract §6.3).
pub const TAG_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests the `INGRESS_ROUTER` tag with silk-client's policy client (mutual TLS, one
/// request within [`TAG_TIMEOUT`]).
pub async fn fetch_tag(cfg: &BootstrapConfig) -> Result<String, BootstrapError> {
    let tls = ClientTls::from_files(
        &cfg.policy_server_ca_cert_file,
        &cfg.policy_client_cert_file,
        &cfg.policy_client_key_file,
    )?;
    let client = PolicyClient::new(&cfg.policy_server_url, &tls, TAG_TIMEOUT)?;
    let tag = client
        .create_or_get_tag(INGRESS_ROUTER_ID, INGRESS_ROUTER_TYPE)
        .await?;
    if tag.is_empty() {
        return Err(BootstrapError::NoTag);
    }
    Ok(tag)
}

/// Creates `istio-ingress` and its rules where missing, in one restore under the shared
/// iptables lock (when `lock_file` is given).
pub fn install_istio_chain(tag: &str, lock_file: Option<&Path>) -> Result<(), BootstrapError> {
    let iptables = SystemIptables::new(lock_file.unwrap_or(Path::new("")));
    install_istio_chain_with(&iptables, lock_file.is_some(), tag)
}

/// [`install_istio_chain`] through any [`Iptables`] port.
pub fn install_istio_chain_with(
    iptables: &dyn Iptables,
    lock: bool,
    tag: &str,
) -> Result<(), BootstrapError> {
    let mark = istio::tag_mark(tag)?;
    istio::apply(iptables, lock, |saved| istio::plan_install(saved, mark))
        .map_err(IstioError::from)?;
    Ok(())
}

/// The whole program: no-op unless `single_ip_only`.
pub async fn bootstrap(cfg: &BootstrapConfig) -> Result<(), BootstrapError> {
    if !cfg.single_ip_only {
        return Ok(());
    }
    let tag = fetch_tag(cfg).await?;
    let lock = Some(Path::new(&cfg.iptables_lock_file)).filter(|p| !p.as_os_str().is_empty());
    install_istio_chain(&tag, lock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use silk_dataplane::iptables::{Family, RecordingIptables};

    #[test]
    fn installs_through_the_port_in_one_restore() {
        let ipt = RecordingIptables::default();
        *ipt.saved.lock().unwrap() = "*filter\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n".into();
        install_istio_chain_with(&ipt, true, "0004").unwrap();
        assert_eq!(
            ipt.payloads(),
            vec![(
                Family::V4,
                "*filter\n:istio-ingress - [0:0]\n-I OUTPUT 1 -j istio-ingress\n\
                 -A istio-ingress -o silk-vtep -j MARK --set-xmark 0x4/0xffffffff\n\
                 -A istio-ingress -o silk-vtep -j ACCEPT\nCOMMIT\n"
                    .to_string()
            )]
        );
        let e = install_istio_chain_with(&ipt, true, "zz").unwrap_err();
        assert_eq!(
            e.to_string(),
            "iptables: tag \"zz\" is not a hexadecimal mark"
        );
        assert_eq!(ipt.payloads().len(), 1, "a bad tag writes nothing");
    }

    #[test]
    fn config_keys_are_the_rendered_ones() {
        let cfg = BootstrapConfig::parse(
            r#"{"policy_server_url":"https://policy-server.service.cf.internal:4003",
                "policy_server_ca_cert_file":"/c/ca.crt","policy_client_cert_file":"/c/client.crt",
                "policy_client_key_file":"/c/client.key","iptables_lock_file":"/l",
                "single_ip_only":true}"#,
        )
        .unwrap();
        assert!(cfg.single_ip_only);
        assert_eq!(
            cfg.policy_server_url,
            "https://policy-server.service.cf.internal:4003"
        );
        assert_eq!(cfg.iptables_lock_file, "/l");
        assert!(matches!(
            BootstrapConfig::parse(r#"{"unknown":1}"#),
            Err(ConfigError::Json(_))
        ));
    }

    #[test]
    fn a_single_ip_config_needs_the_policy_server_and_its_tls_files() {
        let e = BootstrapConfig::parse(
            r#"{"policy_server_url":"http://policy-server:4003","policy_client_cert_file":" ",
                "single_ip_only":true}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid config: policy_server_url: must be an https URL, got \"http://policy-server:4003\"; \
             policy_server_ca_cert_file: must not be empty; policy_client_cert_file: must not be empty; \
             policy_client_key_file: must not be empty"
        );
        // Not single-IP: the program does nothing, so nothing else is required.
        let off = BootstrapConfig::parse(r#"{"single_ip_only":false}"#).unwrap();
        assert!(!off.single_ip_only);
    }
}
