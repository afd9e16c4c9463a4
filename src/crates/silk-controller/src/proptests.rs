//! Property tests of silk-controller's outside inputs: the request bodies of the lease API
//! (decoded as Go's `encoding/json` does, then the lease fields checked the way the handlers
//! check them), the subnet strings a cell renews with, and the config file. Every input gets
//! a value or an error, never a panic; pool members render to strings that parse back as
//! members.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use proptest::prelude::*;
use serde_json::{json, Value};
use silk_core::network::{NetworkSpec, OverlayNetworks};
use silk_testkit::fuzz;

use crate::api::body::GoObject;
use crate::config::tests::RENDERED;
use crate::config::Config;
use crate::leaser::parse_underlay_v4;
use crate::pool::{CidrPool, Kind};

const BODY_KEYS: &[&str] = &[
    "underlay_ip",
    "UNDERLAY_IP",
    "Underlay_Ip",
    "single_overlay_ip",
    "overlay_subnet",
    "overlay_hardware_addr",
];

fn body_fixture() -> Value {
    json!({"underlay_ip": "10.0.16.12", "overlay_subnet": "10.255.7.0/24",
           "overlay_hardware_addr": "ee:ee:0a:ff:07:00", "single_overlay_ip": false})
}

fn pool() -> impl Strategy<Value = CidrPool> {
    (
        prop::collection::vec((any::<u32>(), 8u8..=28), 1..3),
        1u8..=30,
    )
        .prop_filter_map("a valid pool", |(nets, prefix)| {
            let cidrs: Vec<String> = nets
                .iter()
                .map(|(ip, p)| {
                    let n = ipnetwork::Ipv4Network::new((*ip).into(), *p).unwrap();
                    format!("{}/{}", n.network(), p)
                })
                .collect();
            let nets = OverlayNetworks::parse(&NetworkSpec::Many(cidrs)).ok()?;
            CidrPool::new(&nets, prefix).ok()
        })
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn any_request_body_decodes_like_go_or_is_a_400(
        body in fuzz::json_input(body_fixture(), BODY_KEYS),
        type_name in prop::sample::select(vec!["AcquireRequest", "Lease", "ReleaseRequest"]),
    ) {
        let o = match GoObject::parse(type_name, &body) {
            Ok(o) => o,
            Err(e) => {
                prop_assert!(e.to_string().starts_with("unmarshal-request: "), "{}", e);
                return Ok(());
            }
        };
        for key in ["underlay_ip", "overlay_subnet", "overlay_hardware_addr"] {
            match o.string(key) {
                Ok(s) => {
                    // The handlers' checks of what they read.
                    let _ = parse_underlay_v4(&s);
                    let _ = s.parse::<silk_core::lease::HardwareAddr>();
                }
                Err(e) => {
                    let want = format!("Go struct field {type_name}.{key} of type string");
                    prop_assert!(e.to_string().contains(&want), "{}", e);
                }
            }
        }
        let _ = o.bool("single_overlay_ip");
    }

    #[test]
    fn pool_members_render_and_parse_back(pool in pool(), idx in any::<u64>(), single in any::<bool>(), junk in fuzz::interesting_string()) {
        let kind = Kind::of(single);
        let size = pool.size(kind);
        let member = pool.nth(kind, idx % size.max(1));
        prop_assert_eq!(member.is_some(), size > 0);
        if let Some(m) = member {
            prop_assert!(pool.is_member(&m), "{} is not a member", m);
        }
        prop_assert_eq!(pool.nth(kind, size), None);
        let _ = pool.is_member(&junk);
    }

    #[test]
    fn any_config_parses_or_lists_its_problems(
        text in fuzz::config_text(RENDERED),
    ) {
        if let Err(e) = Config::parse(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}
