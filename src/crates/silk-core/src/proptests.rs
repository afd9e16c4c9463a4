//! Property tests of the domain parsers every component shares: MAC addresses, leases and the
//! overlay network setting. Every input gets a value or an error, never a panic; rendered
//! values parse back.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use proptest::prelude::*;
use silk_testkit::fuzz;

use crate::lease::{HardwareAddr, Lease};
use crate::network::{NetworkSpec, OverlayNetworks};

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn macs_parse_or_fail_and_render_back(s in fuzz::text_or_mutated("ee:ee:0a:ff:07:00"), b in any::<[u8; 6]>()) {
        let _ = s.parse::<HardwareAddr>();
        let mac = HardwareAddr(b);
        prop_assert_eq!(mac.to_string().parse::<HardwareAddr>().unwrap(), mac);
    }

    #[test]
    fn leases_render_and_parse_back(ip in any::<u32>(), net in any::<u32>(), prefix in 0u8..=32) {
        let subnet = Ipv4Network::new(Ipv4Addr::from(net), prefix).unwrap();
        let lease = Lease::new(Ipv4Addr::from(ip), subnet);
        prop_assert_eq!(lease.subnet().unwrap(), subnet);
        prop_assert_eq!(lease.underlay().unwrap(), Ipv4Addr::from(ip));
        prop_assert_eq!(lease.hardware_addr().unwrap(), HardwareAddr::for_overlay_ip(subnet.ip()));
        let text = serde_json::to_string(&lease).unwrap();
        prop_assert_eq!(serde_json::from_str::<Lease>(&text).unwrap(), lease);
    }

    #[test]
    fn any_overlay_network_setting_parses_or_fails(
        one in fuzz::text_or_mutated("10.255.0.0/16"),
        many in prop::collection::vec(prop_oneof![fuzz::interesting_string(), fuzz::text_or_mutated("10.255.96.0/21")], 0..4),
    ) {
        for spec in [NetworkSpec::One(one), NetworkSpec::Many(many)] {
            if let Ok(nets) = OverlayNetworks::parse(&spec) {
                for n in nets.as_slice() {
                    prop_assert!(nets.contains(n.network()));
                }
            }
        }
    }
}
