//! Property tests of the bandwidth plugin's inputs: its conflist entry with garden's
//! `runtimeConfig.bandwidth`, and the `prevResult` it finds the host veth in. Every input gets
//! limits or an error, never a panic; accepted limits and interface names give `ip`/`tc` batch
//! text with exactly the planned commands.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use proptest::prelude::*;
use serde_json::{json, Value};
use silk_cni_skel::CniResult;
use silk_testkit::fuzz;

use crate::plan::{self, Config};
use crate::plugin::host_interface;

fn fixture() -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "cni-wrapper", "type": "bandwidth",
        "ingressRate": 1024000, "ingressBurst": 2048000, "egressRate": 1024000, "egressBurst": 2048000,
        "runtimeConfig": {"bandwidth": {"ingressRate": 8000, "ingressBurst": 16000, "egressRate": 4000, "egressBurst": 8000}},
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "s-010255030002", "mac": "aa:aa:0a:ff:1e:02"},
                           {"name": "eth0", "sandbox": "/proc/1/ns/net"}],
            "ips": [{"address": "10.255.30.2/32", "interface": 1}]
        }
    })
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn any_config_gives_limits_or_an_error_and_exact_commands(
        v in prop_oneof![fuzz::mutated_json(fixture(), fuzz::keys_of(&fixture())), fuzz::json_value_with_keys(fuzz::keys_of(&fixture()))],
        container_id in "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,40}",
        mtu in any::<u32>(),
    ) {
        let Ok(c) = serde_json::from_value::<Config>(v.clone()) else {
            return Ok(());
        };
        let l = c.effective();
        if l.validate().is_err() {
            return Ok(());
        }
        let Some(prev) = v.get("prevResult").and_then(|p| CniResult::from_value(p).ok()) else {
            return Ok(());
        };
        let Ok(host) = host_interface(&prev) else {
            return Ok(());
        };
        let ifb = plan::ifb_name(&c.name, &container_id);
        prop_assert_eq!(ifb.len(), 15);
        let ip = plan::ip_commands(&l, &ifb, mtu);
        prop_assert_eq!(ip.lines().count(), if l.egress_rate > 0 { 2 } else { 0 });
        let tc = plan::tc_commands(&l, &host, &ifb);
        let want = usize::from(l.ingress_rate > 0) + 3 * usize::from(l.egress_rate > 0);
        prop_assert_eq!(tc.lines().count(), want, "{}", tc);
    }
}

/// Plain unit tests with the minimal inputs the properties above found.
mod regressions {
    use super::*;

    /// A host interface name from prevResult with a newline went into `tc -batch` as written, so
    /// tc would have run the text after it as one more command.
    #[test]
    fn host_interface_names_that_are_not_interface_names_are_refused() {
        let prev = |name: &str| {
            CniResult::from_value(
                &json!({"interfaces": [{"name": name}, {"name": "eth0", "sandbox": "/x"}]}),
            )
            .unwrap()
        };
        assert_eq!(
            host_interface(&prev("s-010255030002")).unwrap(),
            "s-010255030002"
        );
        for bad in [
            "s-1\nqdisc del dev eth0 root",
            "a b",
            "",
            "0123456789abcdef",
        ] {
            let e = host_interface(&prev(bad)).unwrap_err();
            assert!(
                e.msg.starts_with("invalid host interface name"),
                "{bad:?}: {e}"
            );
        }
    }
}
