//! Property tests of silk-daemon's config file, the one input it reads before asking the
//! controller (whose answers silk-client's properties cover). Every input gets a config or the
//! list of its problems, never a panic.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use proptest::prelude::*;
use silk_testkit::fuzz;

use crate::config::Config;

const CONFIG: &str = r#"{
  "underlay_ip": "10.0.16.12", "subnet_prefix_length": 24,
  "overlay_network": ["10.255.0.0/16"], "health_check_port": 23954, "vtep_name": "silk-vtep",
  "connectivity_server_url": "https://silk-controller.service.cf.internal:4103",
  "ca_cert_file": "/c/ca.crt", "client_cert_file": "/c/client.crt", "client_key_file": "/c/client.key",
  "vni": 1, "poll_interval": 30, "debug_server_port": 22233, "datastore": "/var/vcap/data/silk/store.json",
  "partition_tolerance_seconds": 604800, "client_timeout_seconds": 5, "metron_port": 3457,
  "vtep_port": 4789, "log_prefix": "cfnetworking", "log_level": "info", "vxlan_interface_name": "",
  "single_ip_only": false, "enable_ipv6": true, "ipv6_prefix": "2001:db8:ab::/64"
}"#;

const KEYS: &[&str] = &[
    "underlay_ip",
    "subnet_prefix_length",
    "overlay_network",
    "vtep_name",
    "connectivity_server_url",
    "vni",
    "poll_interval",
    "partition_tolerance_seconds",
    "client_timeout_seconds",
    "vtep_port",
    "log_level",
    "vxlan_interface_name",
    "enable_ipv6",
    "ipv6_prefix",
];

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn any_config_parses_or_lists_its_problems(text in prop_oneof![
        fuzz::json_input(serde_json::from_str(CONFIG).unwrap(), KEYS)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        fuzz::text_or_mutated(CONFIG),
    ]) {
        if let Err(e) = Config::parse(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}
