//! `client-config.json` (control-plane contract §5.2, upstream-delta §2): the raw JSON shape
//! with Go's field names, and the validated [`Config`]. Every problem is collected and
//! reported together; the binary exits 64 on any of them before touching a socket.

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnetwork::Ipv6Network;
use serde::Deserialize;
use silk_core::{NetworkSpec, OverlayNetworks};
use silk_ops::config::{nonempty, port};

/// The file as rendered. Unknown keys are rejected so a typo in a template fails loudly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub underlay_ip: String,
    #[serde(default)]
    pub subnet_prefix_length: u32,
    pub overlay_network: Option<NetworkSpec>,
    #[serde(default)]
    pub health_check_port: u32,
    #[serde(default)]
    pub vtep_name: String,
    #[serde(default)]
    pub connectivity_server_url: String,
    #[serde(default)]
    pub ca_cert_file: String,
    #[serde(default)]
    pub client_cert_file: String,
    #[serde(default)]
    pub client_key_file: String,
    #[serde(default)]
    pub vni: u32,
    #[serde(default)]
    pub poll_interval: u64,
    #[serde(default)]
    pub debug_server_port: u32,
    #[serde(default)]
    pub datastore: String,
    #[serde(default)]
    pub partition_tolerance_seconds: u64,
    #[serde(default)]
    pub client_timeout_seconds: u64,
    #[serde(default)]
    pub metron_port: u32,
    #[serde(default)]
    pub vtep_port: u32,
    #[serde(default)]
    pub log_prefix: String,
    #[serde(default)]
    pub log_level: String,
    #[serde(default)]
    pub vxlan_interface_name: String,
    #[serde(default)]
    pub single_ip_only: bool,
    #[serde(default)]
    pub enable_ipv6: bool,
    #[serde(default)]
    pub ipv6_prefix: Option<String>,
    /// Not rendered by the job (the kernel default, underlay MTU - 50, applies); accepted for
    /// labs whose underlay MTU differs.
    #[serde(default)]
    pub vtep_mtu: Option<u32>,
    /// Not rendered by the job (upstream's silk-daemon has no loggregator properties); the
    /// same block as vxlan-policy-agent's, for sending metrics over Loggregator v2.
    #[serde(default)]
    pub loggregator: silk_ops::loggregator::RawLoggregator,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub underlay_ip: Ipv4Addr,
    pub subnet_prefix_length: u8,
    pub overlay_network: OverlayNetworks,
    pub health_check_port: u16,
    pub vtep_name: String,
    pub connectivity_server_url: String,
    pub ca_cert_file: String,
    pub client_cert_file: String,
    pub client_key_file: String,
    pub vni: u32,
    pub poll_interval: Duration,
    pub debug_server_port: u16,
    pub datastore: String,
    pub partition_tolerance: Duration,
    pub client_timeout: Duration,
    pub metron_port: u16,
    pub vtep_port: u16,
    pub log_prefix: String,
    pub log_level: String,
    pub vxlan_interface_name: Option<String>,
    pub single_ip_only: bool,
    pub ipv6_prefix: Option<Ipv6Network>,
    pub vtep_mtu: Option<u32>,
    /// Loggregator v2 target; `None`: dropsonde v1 to `metron_port`.
    pub loggregator: Option<silk_ops::loggregator::LoggregatorV2>,
}

pub use silk_ops::config::ConfigError;

impl Config {
    /// Parses and validates the JSON text of `client-config.json`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        silk_ops::config::parse::<RawConfig, Config>(text)
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(r: RawConfig) -> Result<Self, ConfigError> {
        let mut e = Vec::new();
        let underlay_ip = r.underlay_ip.parse().unwrap_or_else(|_| {
            e.push(format!(
                "underlay_ip: invalid ipv4 address: {:?}",
                r.underlay_ip
            ));
            Ipv4Addr::UNSPECIFIED
        });
        let subnet_prefix_length = match u8::try_from(r.subnet_prefix_length) {
            Ok(p) if (1..=32).contains(&p) => p,
            _ => {
                e.push(format!(
                    "subnet_prefix_length: must be 1-32, got {}",
                    r.subnet_prefix_length
                ));
                0
            }
        };
        let overlay_network = OverlayNetworks::from_config_key(&mut e, r.overlay_network.as_ref());
        let health_check_port = port(&mut e, "health_check_port", r.health_check_port);
        let debug_server_port = port(&mut e, "debug_server_port", r.debug_server_port);
        let metron_port = port(&mut e, "metron_port", r.metron_port);
        let vtep_port = port(&mut e, "vtep_port", r.vtep_port);
        for (name, v) in [
            ("vtep_name", &r.vtep_name),
            ("connectivity_server_url", &r.connectivity_server_url),
            ("ca_cert_file", &r.ca_cert_file),
            ("client_cert_file", &r.client_cert_file),
            ("client_key_file", &r.client_key_file),
            ("datastore", &r.datastore),
            ("log_prefix", &r.log_prefix),
        ] {
            nonempty(&mut e, name, v);
        }
        if r.vtep_name.len() > 15 {
            e.push(format!(
                "vtep_name: {:?} is longer than 15 bytes",
                r.vtep_name
            ));
        }
        for (name, v) in [
            ("vni", u64::from(r.vni)),
            ("poll_interval", r.poll_interval),
            ("partition_tolerance_seconds", r.partition_tolerance_seconds),
            ("client_timeout_seconds", r.client_timeout_seconds),
        ] {
            if v == 0 {
                e.push(format!("{name}: must not be zero"));
            }
        }
        let log_level = if r.log_level.is_empty() {
            "info".to_string()
        } else {
            r.log_level.clone()
        };
        if silk_ops::log::parse_level(&log_level).is_none() {
            e.push(format!("log_level: unknown level {:?}", r.log_level));
        }
        let ipv6_prefix = match (r.enable_ipv6, r.ipv6_prefix.as_deref().unwrap_or("")) {
            (false, _) => None,
            (true, "") => {
                e.push("IPv6 is enabled but no prefix is configured".into());
                None
            }
            (true, p) => match p.parse::<Ipv6Network>() {
                Ok(n) => Some(n),
                Err(_) => {
                    e.push(format!("invalid IPv6 prefix: {p}"));
                    None
                }
            },
        };
        let loggregator = r.loggregator.validate(&mut e);
        if !e.is_empty() {
            return Err(ConfigError::Invalid(e));
        }
        Ok(Config {
            underlay_ip,
            subnet_prefix_length,
            // Invariant: pushed an error above when None.
            overlay_network: overlay_network.ok_or_else(|| ConfigError::Invalid(vec![]))?,
            health_check_port,
            vtep_name: r.vtep_name,
            connectivity_server_url: r.connectivity_server_url,
            ca_cert_file: r.ca_cert_file,
            client_cert_file: r.client_cert_file,
            client_key_file: r.client_key_file,
            vni: r.vni,
            poll_interval: Duration::from_secs(r.poll_interval),
            debug_server_port,
            datastore: r.datastore,
            partition_tolerance: Duration::from_secs(r.partition_tolerance_seconds),
            client_timeout: Duration::from_secs(r.client_timeout_seconds),
            metron_port,
            vtep_port,
            log_prefix: r.log_prefix,
            log_level,
            vxlan_interface_name: Some(r.vxlan_interface_name).filter(|s| !s.is_empty()),
            single_ip_only: r.single_ip_only,
            ipv6_prefix,
            vtep_mtu: r.vtep_mtu,
            loggregator,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const RENDERED: &str = r#"{
      "underlay_ip": "10.0.16.12", "subnet_prefix_length": 24,
      "overlay_network": ["10.255.0.0/16"], "health_check_port": 23954, "vtep_name": "silk-vtep",
      "connectivity_server_url": "https://silk-controller.service.cf.internal:4103",
      "ca_cert_file": "/c/ca.crt", "client_cert_file": "/c/client.crt", "client_key_file": "/c/client.key",
      "vni": 1, "poll_interval": 30, "debug_server_port": 22233, "datastore": "/var/vcap/data/silk/store.json",
      "partition_tolerance_seconds": 604800, "client_timeout_seconds": 5, "metron_port": 3457,
      "vtep_port": 4789, "log_prefix": "cfnetworking", "log_level": "info", "vxlan_interface_name": "",
      "single_ip_only": false, "enable_ipv6": false, "ipv6_prefix": null
    }"#;

    #[test]
    fn parses_rendered_file_with_array_or_string_network() {
        let c = Config::parse(RENDERED).unwrap();
        assert_eq!(c.overlay_network.as_slice().len(), 1);
        assert_eq!(c.poll_interval, Duration::from_secs(30));
        assert!(c.vxlan_interface_name.is_none());
        let s = RENDERED.replace(r#"["10.255.0.0/16"]"#, r#""10.255.0.0/16""#);
        assert!(Config::parse(&s).is_ok());
    }

    #[test]
    fn collects_every_problem() {
        let s = RENDERED
            .replace(r#""vni": 1"#, r#""vni": 0"#)
            .replace(r#""vtep_port": 4789"#, r#""vtep_port": 0"#)
            .replace(r#""underlay_ip": "10.0.16.12""#, r#""underlay_ip": "x""#);
        let err = Config::parse(&s).unwrap_err().to_string();
        assert!(
            err.contains("vni") && err.contains("vtep_port") && err.contains("underlay_ip"),
            "{err}"
        );
        let s = RENDERED.replace(r#""enable_ipv6": false"#, r#""enable_ipv6": true"#);
        assert!(Config::parse(&s)
            .unwrap_err()
            .to_string()
            .contains("no prefix"));
        assert!(Config::parse(&RENDERED.replace("\"vni\"", "\"bogus\": 1, \"vni\"")).is_err());
    }
}
