//! Property tests of netmon's outside inputs: `/proc/net/dev`, `iptables-save` output and its
//! config file. Every input gets a count or a config error, never a panic.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use proptest::prelude::*;
use silk_testkit::fuzz;

use crate::config::Config;
use crate::stats::{count_proc_net_dev, count_saved_rules};

const PROC_NET_DEV: &str = "Inter-|   Receive                                                |  Transmit\n \
    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
    lo:  123456     789    0    0    0     0          0         0   123456     789    0    0    0     0       0          0\n  \
    eth0: 9876543   12345    0    0    0     0          0         0  5432109    6789    0    0    0     0       0          0\n";

const CONFIG: &str = r#"{
  "metron_address": "127.0.0.1:3457", "poll_interval": 30, "interface_name": "silk-vtep",
  "log_level": "info", "log_prefix": "cfnetworking",
  "iptables_lock_file": "/var/vcap/data/garden-cni/iptables.lock",
  "telemetry_enabled": true, "telemetry_interval": 600
}"#;

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn any_proc_net_dev_and_rule_listing_count(dev in fuzz::text_or_mutated(PROC_NET_DEV), rules in fuzz::text_or_mutated("*filter\n:INPUT ACCEPT [0:0]\n:netout--h - [0:0]\n-A netout--h -j REJECT\nCOMMIT\n")) {
        prop_assert!(count_proc_net_dev(&dev) <= dev.lines().count() as u64);
        prop_assert!(count_saved_rules(&rules) <= rules.lines().count() as u64);
    }

    #[test]
    fn any_config_parses_or_fails(text in fuzz::config_text(CONFIG)) {
        if let Ok(c) = Config::parse(&text) {
            let _ = c.level_filter();
            prop_assert!(!c.poll_interval.is_zero());
        }
    }
}
