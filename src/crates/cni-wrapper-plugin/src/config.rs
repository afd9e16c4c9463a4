//! The wrapper's stdin config (the conflist's `cni-wrapper-plugin` object plus what the runtime
//! injects) and its validation, with upstream's messages in upstream's order (cni.md §4.1).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DenyNetworks {
    pub always: Vec<String>,
    pub running: Vec<String>,
    pub staging: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OutboundConnections {
    pub limit: bool,
    pub logging: bool,
    pub burst: i64,
    pub rate_per_sec: i64,
    pub dry_run: bool,
}

impl Default for OutboundConnections {
    fn default() -> Self {
        OutboundConnections {
            limit: false,
            logging: false,
            burst: 1000,
            rate_per_sec: 100,
            dry_run: false,
        }
    }
}

impl OutboundConnections {
    /// The `--rl-log` chain exists when `(limit && logging) || dry_run`.
    pub fn has_rl_log_chain(&self) -> bool {
        (self.limit && self.logging) || self.dry_run
    }
}

/// A garden port mapping (`runtimeConfig.portMappings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct PortMapping {
    pub host_port: i64,
    pub container_port: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RuntimeConfig {
    #[serde(rename = "portMappings", deserialize_with = "null_as_empty")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(rename = "netOutRules", deserialize_with = "null_as_empty")]
    pub net_out_rules: Vec<crate::netrules::asg::NetOutRule>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WrapperConfig {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    pub datastore: String,
    pub datastore_file_owner: String,
    pub datastore_file_group: String,
    pub iptables_lock_file: String,
    pub instance_address: String,
    pub no_masquerade_cidr_range: String,
    pub temporary_underlay_interface_names: Vec<String>,
    pub underlay_ips: Vec<String>,
    pub iptables_asg_logging: bool,
    pub iptables_c2c_logging: bool,
    pub iptables_denied_logs_per_sec: i64,
    pub iptables_accepted_udp_logs_per_sec: i64,
    pub ingress_tag: String,
    pub vtep_name: String,
    pub policy_agent_force_poll_address: String,
    pub dns_servers: Vec<String>,
    pub host_tcp_services: Vec<String>,
    pub host_udp_services: Vec<String>,
    pub host_tcp_services_ipv6: Vec<String>,
    pub host_udp_services_ipv6: Vec<String>,
    pub deny_networks: DenyNetworks,
    pub deny_networks_ipv6: DenyNetworks,
    pub enable_ipv6: bool,
    pub delegate: Option<serde_json::Map<String, Value>>,
    pub outbound_connections: OutboundConnections,
    #[serde(deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, Value>,
    #[serde(rename = "runtimeConfig", deserialize_with = "null_as_default")]
    pub runtime_config: RuntimeConfig,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("loading wrapper config: {0}")]
    Decode(String),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("validator: {0}")]
    Validator(&'static str),
}

impl WrapperConfig {
    /// Decodes and validates; the first problem wins, in upstream's order.
    pub fn parse(stdin: &[u8]) -> Result<WrapperConfig, ConfigError> {
        let mut c: WrapperConfig =
            serde_json::from_slice(stdin).map_err(|e| ConfigError::Decode(e.to_string()))?;
        let checks: [(bool, &'static str); 9] = [
            (c.datastore.is_empty(), "missing datastore path"),
            (
                c.iptables_lock_file.is_empty(),
                "missing iptables lock file path",
            ),
            (c.instance_address.is_empty(), "missing instance address"),
            (c.underlay_ips.is_empty(), "missing underlay ips"),
            (c.ingress_tag.is_empty(), "missing ingress tag"),
            (c.vtep_name.is_empty(), "missing vtep device name"),
            (
                c.iptables_denied_logs_per_sec <= 0,
                "invalid denied logs per sec",
            ),
            (
                c.iptables_accepted_udp_logs_per_sec <= 0,
                "invalid accepted udp logs per sec",
            ),
            // Upstream panics when the delegate is absent; we report it.
            (c.delegate.is_none(), "missing delegate"),
        ];
        if let Some((_, msg)) = checks.iter().find(|(bad, _)| *bad) {
            return Err(ConfigError::Invalid(msg));
        }
        if let Some(d) = c.delegate.as_mut() {
            d.entry("cniVersion")
                .or_insert_with(|| Value::String("1.0.0".into()));
        }
        if c.outbound_connections.burst <= 0 {
            return Err(ConfigError::Invalid("invalid outbound connection burst"));
        }
        if c.outbound_connections.rate_per_sec <= 0 {
            return Err(ConfigError::Invalid("invalid outbound connection rate"));
        }
        if c.policy_agent_force_poll_address.is_empty() {
            return Err(ConfigError::Validator(
                "PolicyAgentForcePollAddress: zero value",
            ));
        }
        Ok(c)
    }

    pub fn delegate_type(&self) -> &str {
        self.delegate
            .as_ref()
            .and_then(|d| d.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn delegate_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.delegate).unwrap_or_default()
    }

    /// `delegate.daemonPort`: where the masquerade exclusion asks silk-daemon for the lease.
    pub fn daemon_port(&self) -> Option<u16> {
        self.delegate
            .as_ref()?
            .get("daemonPort")?
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
    }

    /// The `container_workload` metadata value (empty when absent).
    pub fn workload(&self) -> String {
        self.metadata
            .get("container_workload")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const CONFLIST_PLUGIN: &str = r#"{
      "cniVersion": "1.0.0", "name": "cni-wrapper", "type": "cni-wrapper-plugin",
      "datastore": "/var/vcap/data/container-metadata/store.json",
      "datastore_file_owner": "vcap", "datastore_file_group": "vcap",
      "iptables_lock_file": "/var/vcap/data/garden-cni/iptables.lock",
      "instance_address": "10.0.16.15", "no_masquerade_cidr_range": "10.255.0.0/16",
      "temporary_underlay_interface_names": [], "underlay_ips": ["10.0.16.15"],
      "iptables_asg_logging": false, "iptables_c2c_logging": false,
      "iptables_denied_logs_per_sec": 1, "iptables_accepted_udp_logs_per_sec": 100,
      "ingress_tag": "ffff0000", "vtep_name": "silk-vtep",
      "policy_agent_force_poll_address": "127.0.0.1:8722",
      "dns_servers": ["169.254.0.53"], "host_tcp_services": [], "host_udp_services": [],
      "deny_networks": {"always": [], "running": [], "staging": []},
      "delegate": {"name": "silk", "type": "silk-cni", "daemonPort": 23954,
                   "dataDir": "/var/vcap/data/host-local", "datastore": "/var/vcap/data/silk/store.json", "mtu": 0},
      "outbound_connections": {"limit": false, "logging": false, "burst": 1000, "rate_per_sec": 100, "dry_run": false},
      "metadata": {"container_workload": "app"},
      "runtimeConfig": {"portMappings": [{"container_port": 8080, "host_port": 61000}], "netOutRules": null}
    }"#;

    fn with(key: &str, value: Value) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(CONFLIST_PLUGIN).unwrap();
        v[key] = value;
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn parses_the_rendered_conflist_entry() {
        let c = WrapperConfig::parse(CONFLIST_PLUGIN.as_bytes()).unwrap();
        assert_eq!(c.delegate_type(), "silk-cni");
        assert_eq!(c.delegate.as_ref().unwrap()["cniVersion"], "1.0.0");
        assert_eq!(c.daemon_port(), Some(23954));
        assert_eq!(
            c.runtime_config.port_mappings,
            vec![PortMapping {
                host_port: 61000,
                container_port: 8080
            }]
        );
        assert!(c.runtime_config.net_out_rules.is_empty());
        assert_eq!(c.workload(), "app");
    }

    #[test]
    fn reports_upstream_messages_in_order() {
        let e = |k: &str, v: Value| WrapperConfig::parse(&with(k, v)).unwrap_err().to_string();
        assert_eq!(e("datastore", "".into()), "missing datastore path");
        assert_eq!(
            e("underlay_ips", serde_json::json!([])),
            "missing underlay ips"
        );
        assert_eq!(
            e("iptables_denied_logs_per_sec", 0.into()),
            "invalid denied logs per sec"
        );
        assert_eq!(e("delegate", Value::Null), "missing delegate");
        assert_eq!(
            e("outbound_connections", serde_json::json!({"burst": 0})),
            "invalid outbound connection burst"
        );
        assert!(WrapperConfig::parse(b"{")
            .unwrap_err()
            .to_string()
            .starts_with("loading wrapper config: "));
    }
}
