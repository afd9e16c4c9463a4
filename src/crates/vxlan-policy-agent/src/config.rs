//! `config/vxlan-policy-agent.json` (policy contract §2.3, upstream-delta §1.3): the raw JSON
//! shape with upstream's keys, and the validated [`Config`].
//!
//! Unknown keys are ignored, as upstream's Go decoder ignores them. Every problem is collected
//! and reported together; the binary then exits 1, as upstream does, before it opens a socket
//! or touches iptables.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use silk_core::{NetworkSpec, OverlayNetworks};
use silk_dataplane::iptables::egress::{DenyLists, EgressOptions, OutboundLimit};
use silk_dataplane::iptables::Family;
use silk_ops::config::nonempty;
use silk_ops::loggregator::{LoggregatorV2, RawLoggregator};

use crate::asg::AsgOptions;
use crate::planner::allow_overlay_rules;

#[derive(Debug, Default, Deserialize)]
pub struct RawDenyNetworks {
    #[serde(default)]
    pub always: Vec<String>,
    #[serde(default)]
    pub running: Vec<String>,
    #[serde(default)]
    pub staging: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawOutboundConnections {
    #[serde(default)]
    pub limit: bool,
    #[serde(default)]
    pub logging: bool,
    #[serde(default)]
    pub burst: i64,
    #[serde(default)]
    pub rate_per_sec: i64,
    /// Not rendered by upstream's template (its agent ignores it); read when present.
    #[serde(default)]
    pub dry_run: bool,
}

/// The file as rendered by `vxlan-policy-agent.json.erb`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub log_level: String,
    pub log_prefix: String,
    pub iptables_c2c_logging: bool,
    pub iptables_asg_logging: bool,
    pub iptables_accepted_udp_logs_per_sec: i64,
    pub poll_interval: i64,
    pub enable_asg_syncing: bool,
    pub asg_poll_interval: i64,
    pub iptables_denied_logs_per_sec: i64,
    pub deny_networks: RawDenyNetworks,
    pub deny_networks_ipv6: RawDenyNetworks,
    pub outbound_connections: RawOutboundConnections,
    pub policy_server_url: String,
    pub metron_address: String,
    pub underlay_ips: Vec<String>,
    pub debug_server_port: i64,
    pub force_policy_poll_cycle_port: i64,
    pub enable_overlay_ingress_rules: bool,
    pub disable_container_network_policy: bool,
    pub overlay_network: Option<NetworkSpec>,
    pub ca_cert_file: String,
    pub client_cert_file: String,
    pub client_key_file: String,
    pub cni_datastore_path: String,
    pub iptables_lock_file: String,
    pub debug_server_host: String,
    pub client_timeout_seconds: i64,
    pub vni: i64,
    pub force_policy_poll_cycle_host: String,
    pub enable_ipv6: bool,
    pub loggregator: RawLoggregator,
}

/// A validated configuration: the keys the agent acts on today, typed.
#[derive(Debug, Clone)]
pub struct Config {
    pub log_level: String,
    pub log_prefix: String,
    pub iptables_c2c_logging: bool,
    pub iptables_accepted_udp_logs_per_sec: u32,
    pub poll_interval: Duration,
    pub enable_asg_syncing: bool,
    pub asg_poll_interval: Duration,
    pub policy_server_url: String,
    pub metron_address: SocketAddr,
    pub underlay_ips: Vec<Ipv4Addr>,
    pub debug_server_host: String,
    pub debug_server_port: u16,
    pub force_policy_poll_cycle_host: String,
    pub force_policy_poll_cycle_port: u16,
    pub enable_overlay_ingress_rules: bool,
    pub disable_container_network_policy: bool,
    pub overlay_network: OverlayNetworks,
    pub ca_cert_file: String,
    pub client_cert_file: String,
    pub client_key_file: String,
    pub cni_datastore_path: String,
    pub iptables_lock_file: String,
    pub client_timeout: Duration,
    pub enable_ipv6: bool,
    /// Loggregator v2 target when `loggregator.loggregator_use_v2_api` is true.
    pub loggregator: Option<LoggregatorV2>,
    /// `iptables_asg_logging`: ASG rules go to the netout log chain; denied egress is logged.
    pub iptables_asg_logging: bool,
    pub iptables_denied_logs_per_sec: u32,
    /// `deny_networks`, normalised to `network/prefix`.
    pub deny_networks: DenyLists,
    pub deny_networks_ipv6: DenyLists,
    pub outbound_connections: OutboundLimit,
}

impl Config {
    /// The settings of the ASG planner.
    pub fn asg_options(&self) -> AsgOptions {
        let egress = |deny: &DenyLists| EgressOptions {
            asg_logging: self.iptables_asg_logging,
            denied_logs_per_sec: i64::from(self.iptables_denied_logs_per_sec),
            outbound: self.outbound_connections,
            deny: deny.clone(),
        };
        AsgOptions {
            v4: egress(&self.deny_networks),
            v6: egress(&self.deny_networks_ipv6),
            head_v4: if self.disable_container_network_policy {
                allow_overlay_rules(self.overlay_network.as_slice())
            } else {
                Vec::new()
            },
        }
    }
}

fn deny_lists(e: &mut Vec<String>, key: &str, d: &RawDenyNetworks, family: Family) -> DenyLists {
    DenyLists::parse(&d.always, &d.running, &d.staging, family).unwrap_or_else(|err| {
        e.push(format!("{key}: {err}"));
        DenyLists::default()
    })
}

pub use silk_ops::config::ConfigError;

impl Config {
    /// Parses and validates the JSON text of `vxlan-policy-agent.json`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        silk_ops::config::parse::<RawConfig, Config>(text)
    }
}

fn port(errors: &mut Vec<String>, name: &str, v: i64) -> u16 {
    match u16::try_from(v) {
        Ok(p) if p != 0 => p,
        _ => {
            errors.push(format!("{name}: must be a port number 1-65535, got {v}"));
            0
        }
    }
}

fn at_least_one(errors: &mut Vec<String>, name: &str, v: i64) -> u32 {
    match u32::try_from(v) {
        Ok(n) if n >= 1 => n,
        _ => {
            errors.push(format!("{name}: must be at least 1, got {v}"));
            0
        }
    }
}

fn seconds(errors: &mut Vec<String>, name: &str, v: i64) -> Duration {
    Duration::from_secs(u64::from(at_least_one(errors, name, v)))
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(r: RawConfig) -> Result<Self, ConfigError> {
        let mut e = Vec::new();
        let poll_interval = seconds(&mut e, "poll_interval", r.poll_interval);
        let asg_poll_interval = seconds(&mut e, "asg_poll_interval", r.asg_poll_interval);
        let client_timeout = seconds(&mut e, "client_timeout_seconds", r.client_timeout_seconds);
        let udp_logs = at_least_one(
            &mut e,
            "iptables_accepted_udp_logs_per_sec",
            r.iptables_accepted_udp_logs_per_sec,
        );
        at_least_one(
            &mut e,
            "outbound_connections.burst",
            r.outbound_connections.burst,
        );
        at_least_one(
            &mut e,
            "outbound_connections.rate_per_sec",
            r.outbound_connections.rate_per_sec,
        );
        if r.vni == 0 {
            e.push("vni: must not be zero".into());
        }
        for (name, v) in [
            ("cni_datastore_path", &r.cni_datastore_path),
            ("ca_cert_file", &r.ca_cert_file),
            ("client_cert_file", &r.client_cert_file),
            ("client_key_file", &r.client_key_file),
            ("iptables_lock_file", &r.iptables_lock_file),
            ("debug_server_host", &r.debug_server_host),
            ("log_prefix", &r.log_prefix),
            (
                "force_policy_poll_cycle_host",
                &r.force_policy_poll_cycle_host,
            ),
        ] {
            nonempty(&mut e, name, v);
        }
        if r.policy_server_url.is_empty() {
            e.push("policy_server_url: must not be empty".into());
        }
        let denied_logs = at_least_one(
            &mut e,
            "iptables_denied_logs_per_sec",
            r.iptables_denied_logs_per_sec,
        );
        let deny_networks = deny_lists(&mut e, "deny_networks", &r.deny_networks, Family::V4);
        let deny_networks_ipv6 = deny_lists(
            &mut e,
            "deny_networks_ipv6",
            &r.deny_networks_ipv6,
            Family::V6,
        );
        let metron_address = match r.metron_address.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                e.push(format!(
                    "metron_address: want ip:port, got {:?}",
                    r.metron_address
                ));
                None
            }
        };
        let debug_server_port = port(&mut e, "debug_server_port", r.debug_server_port);
        let force_port = port(
            &mut e,
            "force_policy_poll_cycle_port",
            r.force_policy_poll_cycle_port,
        );
        let overlay_network = OverlayNetworks::from_config_key(&mut e, r.overlay_network.as_ref());
        let mut underlay_ips = Vec::new();
        for ip in &r.underlay_ips {
            match ip.parse::<Ipv4Addr>() {
                Ok(a) => underlay_ips.push(a),
                Err(_) => e.push(format!("underlay_ips: invalid ipv4 address {ip:?}")),
            }
        }
        if !r.log_level.is_empty() && silk_ops::log::parse_level(&r.log_level).is_none() {
            e.push(format!(
                "log_level: want debug, info, warn, error or fatal, got {:?}",
                r.log_level
            ));
        }
        let loggregator = r.loggregator.validate(&mut e);
        let (Some(metron_address), Some(overlay_network), true) =
            (metron_address, overlay_network, e.is_empty())
        else {
            return Err(ConfigError::Invalid(e));
        };
        Ok(Config {
            log_level: r.log_level,
            log_prefix: r.log_prefix,
            iptables_c2c_logging: r.iptables_c2c_logging,
            iptables_accepted_udp_logs_per_sec: udp_logs,
            poll_interval,
            enable_asg_syncing: r.enable_asg_syncing,
            asg_poll_interval,
            policy_server_url: r.policy_server_url,
            metron_address,
            underlay_ips,
            debug_server_host: r.debug_server_host,
            debug_server_port,
            force_policy_poll_cycle_host: r.force_policy_poll_cycle_host,
            force_policy_poll_cycle_port: force_port,
            enable_overlay_ingress_rules: r.enable_overlay_ingress_rules,
            disable_container_network_policy: r.disable_container_network_policy,
            overlay_network,
            ca_cert_file: r.ca_cert_file,
            client_cert_file: r.client_cert_file,
            client_key_file: r.client_key_file,
            cni_datastore_path: r.cni_datastore_path,
            iptables_lock_file: r.iptables_lock_file,
            client_timeout,
            enable_ipv6: r.enable_ipv6,
            loggregator,
            iptables_asg_logging: r.iptables_asg_logging,
            iptables_denied_logs_per_sec: denied_logs,
            deny_networks,
            deny_networks_ipv6,
            outbound_connections: OutboundLimit {
                limit: r.outbound_connections.limit,
                logging: r.outbound_connections.logging,
                dry_run: r.outbound_connections.dry_run,
                burst: r.outbound_connections.burst,
                rate_per_sec: r.outbound_connections.rate_per_sec,
            },
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What the job template renders with default properties (rspec-checked key set).
    pub const RENDERED: &str = r#"{
      "log_level": "info",
      "log_prefix": "cfnetworking",
      "iptables_c2c_logging": false,
      "iptables_asg_logging": false,
      "iptables_accepted_udp_logs_per_sec": 100,
      "poll_interval": 5,
      "enable_asg_syncing": true,
      "asg_poll_interval": 60,
      "iptables_denied_logs_per_sec": 1,
      "deny_networks": {"always": [], "running": [], "staging": []},
      "deny_networks_ipv6": {"always": [], "running": [], "staging": []},
      "outbound_connections": {"limit": false, "logging": false, "burst": 1000, "rate_per_sec": 100},
      "policy_server_url": "https://policy-server.service.cf.internal:4003",
      "metron_address": "127.0.0.1:3457",
      "underlay_ips": ["10.0.16.7"],
      "debug_server_port": 8721,
      "force_policy_poll_cycle_port": 8722,
      "enable_overlay_ingress_rules": false,
      "disable_container_network_policy": false,
      "overlay_network": ["10.255.0.0/16"],
      "ca_cert_file": "/var/vcap/jobs/vxlan-policy-agent/config/certs/ca.crt",
      "client_cert_file": "/var/vcap/jobs/vxlan-policy-agent/config/certs/client.crt",
      "client_key_file": "/var/vcap/jobs/vxlan-policy-agent/config/certs/client.key",
      "cni_datastore_path": "/var/vcap/data/container-metadata/store.json",
      "iptables_lock_file": "/var/vcap/data/garden-cni/iptables.lock",
      "debug_server_host": "127.0.0.1",
      "client_timeout_seconds": 5,
      "vni": 1,
      "force_policy_poll_cycle_host": "127.0.0.1",
      "enable_ipv6": false,
      "loggregator": {"loggregator_use_v2_api": false}
    }"#;

    #[test]
    fn accepts_asg_syncing_and_reads_its_keys() {
        let text = RENDERED
            .replace(
                r#""deny_networks": {"always": [], "running": [], "staging": []}"#,
                r#""deny_networks": {"always": ["10.1.2.3/8"], "running": ["192.168.0.5"], "staging": []}"#,
            )
            .replace(r#""iptables_asg_logging": false"#, r#""iptables_asg_logging": true"#)
            .replace(
                r#""limit": false, "logging": false, "burst": 1000"#,
                r#""limit": true, "logging": true, "dry_run": true, "burst": 1000"#,
            );
        let c = Config::parse(&text).unwrap();
        assert!(c.enable_asg_syncing);
        assert_eq!(c.deny_networks.always, vec!["10.0.0.0/8"]);
        assert_eq!(c.deny_networks.running, vec!["192.168.0.5/32"]);
        let o = c.asg_options();
        assert!(o.v4.asg_logging && o.v4.outbound.limit && o.v4.outbound.dry_run);
        assert_eq!(o.v4.denied_logs_per_sec, 1);
        assert!(o.head_v4.is_empty());
    }

    #[test]
    fn bad_deny_networks_are_config_errors() {
        let text = RENDERED.replace(
            r#""deny_networks_ipv6": {"always": [], "running": [], "staging": []}"#,
            r#""deny_networks_ipv6": {"always": ["10.0.0.0/8"], "running": [], "staging": []}"#,
        );
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("deny_networks_ipv6: network is ipv4 in ipv6 chain: 10.0.0.0/8"),
            "{err}"
        );
    }

    fn runnable() -> String {
        RENDERED.to_string()
    }

    #[test]
    fn the_loggregator_block_chooses_v1_or_v2() {
        assert_eq!(Config::parse(&runnable()).unwrap().loggregator, None);
        let v2 = runnable().replace(
            r#""loggregator": {"loggregator_use_v2_api": false}"#,
            r#""loggregator": {"loggregator_use_v2_api": true, "loggregator_api_port": 3458,
               "loggregator_ca_path": "/l/ca.crt", "loggregator_cert_path": "/l/client.crt",
               "loggregator_key_path": "/l/client.key", "loggregator_job_origin": "vxlan-policy-agent",
               "loggregator_source_id": "vxlan-policy-agent", "loggregator_instance_id": "guid"}"#,
        );
        let l = Config::parse(&v2).unwrap().loggregator.unwrap();
        assert_eq!((l.api_port, l.instance_id.as_str()), (3458, "guid"));
        let broken = v2.replace(r#""loggregator_key_path": "/l/client.key","#, "");
        let err = Config::parse(&broken).unwrap_err().to_string();
        assert!(
            err.contains("loggregator.loggregator_key_path: required"),
            "{err}"
        );
    }

    #[test]
    fn parses_the_rendered_defaults() {
        let c = Config::parse(&runnable()).unwrap();
        assert_eq!(c.poll_interval, Duration::from_secs(5));
        assert_eq!(c.asg_poll_interval, Duration::from_secs(60));
        assert_eq!(c.client_timeout, Duration::from_secs(5));
        assert_eq!(c.metron_address.port(), 3457);
        assert_eq!(c.force_policy_poll_cycle_port, 8722);
        assert_eq!(c.overlay_network.as_slice()[0].to_string(), "10.255.0.0/16");
        assert_eq!(c.underlay_ips, vec![Ipv4Addr::new(10, 0, 16, 7)]);
        assert!(c.enable_asg_syncing && !c.iptables_c2c_logging);
    }

    #[test]
    fn tolerates_unknown_keys_and_a_single_overlay_string() {
        let text = runnable()
            .replace(r#"["10.255.0.0/16"]"#, r#""10.255.0.0/16""#)
            .replace(r#""vni": 1,"#, r#""vni": 1, "something_newer": {"x": 1},"#);
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.overlay_network.as_slice().len(), 1);
    }

    #[test]
    fn lists_every_problem() {
        let text = RENDERED
            .replace(r#""poll_interval": 5"#, r#""poll_interval": 0"#)
            .replace(r#""vni": 1"#, r#""vni": 0"#)
            .replace(r#""127.0.0.1:3457""#, r#""nowhere""#)
            .replace(
                r#""force_policy_poll_cycle_port": 8722"#,
                r#""force_policy_poll_cycle_port": 0"#,
            )
            .replace(r#""log_level": "info""#, r#""log_level": "verbose""#)
            .replace(
                r#""cni_datastore_path": "/var/vcap/data/container-metadata/store.json""#,
                r#""cni_datastore_path": """#,
            );
        let err = Config::parse(&text).unwrap_err().to_string();
        for want in [
            "poll_interval: must be at least 1, got 0",
            "vni: must not be zero",
            "metron_address: want ip:port",
            "force_policy_poll_cycle_port: must be a port number",
            "log_level: want debug, info, warn, error or fatal",
            "cni_datastore_path: must not be empty",
        ] {
            assert!(err.contains(want), "{want} missing from {err}");
        }
    }

    #[test]
    fn missing_keys_are_errors_not_defaults() {
        let err = Config::parse("{}").unwrap_err().to_string();
        assert!(
            err.contains("policy_server_url: must not be empty"),
            "{err}"
        );
        assert!(err.contains("overlay_network: must not be empty"), "{err}");
        assert!(
            err.contains("asg_poll_interval: must be at least 1"),
            "{err}"
        );
    }
}
