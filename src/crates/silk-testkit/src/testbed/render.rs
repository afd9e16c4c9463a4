//! Config files of the test bed's processes, with the field names the BOSH templates render
//! (control-plane contract §4.2, §5.2).

use std::net::Ipv4Addr;
use std::path::Path;

use crate::certs::{path_str, TestCerts};

/// The controller's DNS name, resolved through `/etc/netns/<ns>/hosts` inside the cells.
pub const CONTROLLER_NAME: &str = "silk-controller.service.cf.internal";
pub const CONTROLLER_PORT: u16 = 4103;
pub const CONTROLLER_HEALTH_PORT: u16 = 19683;
pub const CONTROLLER_DEBUG_PORT: u16 = 46455;
pub const DAEMON_PORT: u16 = 23954;
pub const DAEMON_DEBUG_PORT: u16 = 22233;
/// The lab policy server's DNS name (the vxlan-policy-agent job's default
/// `policy_server.hostname`), resolved like the controller's, and its internal port.
pub const POLICY_SERVER_NAME: &str = "policy-server.service.cf.internal";
pub const POLICY_SERVER_PORT: u16 = 4003;
/// The policy server's control listener inside the api namespace (loopback).
pub const POLICY_SERVER_CONTROL_PORT: u16 = 4004;
/// vxlan-policy-agent's local ports (the job's defaults).
pub const AGENT_DEBUG_PORT: u16 = 8721;
pub const AGENT_FORCE_PORT: u16 = 8722;

/// What the bed's vxlan-policy-agents are run with.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub poll_interval_seconds: u64,
    pub asg_poll_interval_seconds: u64,
    pub enable_asg_syncing: bool,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            poll_interval_seconds: 1,
            asg_poll_interval_seconds: 1,
            enable_asg_syncing: true,
        }
    }
}

/// vxlan-policy-agent.json for one cell, with the keys the job template renders (policy
/// contract §2.3); `datastore` and `lock_file` are the ones the cell's CNI plugins use.
pub fn agent_json(
    certs: &TestCerts,
    underlay_ip: Ipv4Addr,
    overlay: &str,
    datastore: &Path,
    lock_file: &Path,
    s: &AgentSettings,
) -> String {
    serde_json::json!({
        "log_level": "debug",
        "log_prefix": "cfnetworking",
        "iptables_c2c_logging": false,
        "iptables_asg_logging": false,
        "iptables_accepted_udp_logs_per_sec": 100,
        "poll_interval": s.poll_interval_seconds,
        "enable_asg_syncing": s.enable_asg_syncing,
        "asg_poll_interval": s.asg_poll_interval_seconds,
        "iptables_denied_logs_per_sec": 1,
        "deny_networks": {"always": [], "running": [], "staging": []},
        "deny_networks_ipv6": {"always": [], "running": [], "staging": []},
        "outbound_connections": {"limit": false, "logging": false, "burst": 1000, "rate_per_sec": 100},
        "policy_server_url": format!("https://{POLICY_SERVER_NAME}:{POLICY_SERVER_PORT}"),
        "metron_address": "127.0.0.1:3457",
        "underlay_ips": [underlay_ip.to_string()],
        "debug_server_port": AGENT_DEBUG_PORT,
        "force_policy_poll_cycle_port": AGENT_FORCE_PORT,
        "enable_overlay_ingress_rules": false,
        "disable_container_network_policy": false,
        "overlay_network": [overlay],
        "ca_cert_file": path_str(&certs.ca_cert),
        "client_cert_file": path_str(&certs.client_cert),
        "client_key_file": path_str(&certs.client_key),
        "cni_datastore_path": path_str(datastore),
        "iptables_lock_file": path_str(lock_file),
        "debug_server_host": "127.0.0.1",
        "client_timeout_seconds": 5,
        "vni": 1,
        "force_policy_poll_cycle_host": "127.0.0.1",
        "enable_ipv6": false,
        "loggregator": {"loggregator_use_v2_api": false}
    })
    .to_string()
}

/// Knobs shared by the rendered configs.
#[derive(Debug, Clone)]
pub struct Timing {
    pub poll_interval_seconds: u64,
    pub lease_expiration_seconds: u64,
    pub partition_tolerance_seconds: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            poll_interval_seconds: 1,
            lease_expiration_seconds: 60,
            partition_tolerance_seconds: 600,
        }
    }
}

/// silk-controller.json: PostgreSQL over the unix socket in `pg_socket_dir`.
pub fn controller_json(
    certs: &TestCerts,
    overlay: &str,
    prefix: u8,
    pg: (&str, u16, &str, &str),
    t: &Timing,
) -> String {
    let (socket_dir, port, user, db) = pg;
    format!(
        r#"{{
  "debug_server_port": {CONTROLLER_DEBUG_PORT}, "health_check_port": {CONTROLLER_HEALTH_PORT},
  "listen_host": "0.0.0.0", "listen_port": {CONTROLLER_PORT},
  "ca_cert_file": "{ca}", "server_cert_file": "{cert}", "server_key_file": "{key}",
  "network": ["{overlay}"], "subnet_prefix_length": {prefix},
  "database": {{"type": "postgres", "user": "{user}", "password": "", "host": "{socket_dir}",
    "port": {port}, "timeout": 10, "database_name": "{db}", "require_ssl": false, "ca_cert": "",
    "skip_hostname_validation": false}},
  "lease_expiration_seconds": {exp}, "metron_port": 3457, "staleness_threshold_seconds": 3600,
  "metrics_emit_seconds": 30, "log_prefix": "cfnetworking", "max_idle_connections": 10,
  "max_open_connections": 50, "connections_max_lifetime_seconds": 3600
}}"#,
        ca = path_str(&certs.ca_cert),
        cert = path_str(&certs.server_cert),
        key = path_str(&certs.server_key),
        exp = t.lease_expiration_seconds,
    )
}

/// client-config.json for one cell.
pub fn daemon_json(
    certs: &TestCerts,
    underlay_ip: Ipv4Addr,
    overlay: &str,
    prefix: u8,
    datastore: &Path,
    t: &Timing,
    log_level: &str,
) -> String {
    format!(
        r#"{{
  "underlay_ip": "{underlay_ip}", "subnet_prefix_length": {prefix}, "overlay_network": ["{overlay}"],
  "health_check_port": {DAEMON_PORT}, "vtep_name": "silk-vtep",
  "connectivity_server_url": "https://{CONTROLLER_NAME}:{CONTROLLER_PORT}",
  "ca_cert_file": "{ca}", "client_cert_file": "{cert}", "client_key_file": "{key}",
  "vni": 1, "poll_interval": {poll}, "debug_server_port": {DAEMON_DEBUG_PORT},
  "datastore": "{ds}", "partition_tolerance_seconds": {pt}, "client_timeout_seconds": 5,
  "metron_port": 3457, "vtep_port": 4789, "log_prefix": "cfnetworking", "log_level": "{log_level}",
  "vxlan_interface_name": "", "single_ip_only": false, "enable_ipv6": false, "ipv6_prefix": null
}}"#,
        ca = path_str(&certs.ca_cert),
        cert = path_str(&certs.client_cert),
        key = path_str(&certs.client_key),
        poll = t.poll_interval_seconds,
        ds = path_str(datastore),
        pt = t.partition_tolerance_seconds,
    )
}
