//! Property tests of silk-cni's inputs: its stdin config (the wrapper's `delegate` object), the
//! flannel-style subnet file, and silk-daemon's network-info answer, served on loopback as the
//! daemon serves it. Every input gets network info or an error, never a panic.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use std::net::TcpListener;

use proptest::prelude::*;
use serde_json::{json, Value};
use silk_testkit::fuzz;

use crate::config::{parse_ipv6_prefix, parse_subnet_file, Config};

fn delegate_fixture() -> Value {
    json!({"cniVersion": "1.0.0", "daemonPort": 23954, "dataDir": "/var/vcap/data/host-local",
           "datastore": "/var/vcap/data/silk/store.json", "mtu": 0, "name": "silk", "type": "silk-cni"})
}

fn daemon_fixture() -> Value {
    json!({"overlay_subnet": "10.255.30.0/24", "mtu": 1450, "ipv6_prefix": "2001:db8:ab::/64"})
}

/// Answers one connection on loopback with `body` and `status`, as silk-daemon would.
fn serve_once(status: u16, body: Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        if let Ok((c, _)) = l.accept() {
            fuzz::answer_once(c, status, &body);
        }
    });
    (port, t)
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn any_delegate_config_decodes_or_fails(v in prop_oneof![
        fuzz::mutated_json(delegate_fixture(), fuzz::keys_of(&delegate_fixture())),
        fuzz::json_value_with_keys(fuzz::keys_of(&delegate_fixture())),
    ]) {
        if let Ok(c) = serde_json::from_value::<Config>(v) {
            if c.mtu < 0 {
                prop_assert!(c.net_info().is_err());
            }
        }
    }

    #[test]
    fn any_subnet_file_gives_info_or_none(text in fuzz::text_or_mutated("FLANNEL_NETWORK=10.255.0.0/16\nFLANNEL_SUBNET=10.255.7.0/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")) {
        let _ = parse_subnet_file(&text);
    }

    #[test]
    fn any_ipv6_prefix_is_a_network_none_or_an_error(p in proptest::option::of(fuzz::interesting_string())) {
        if let Ok(Some(n)) = parse_ipv6_prefix(p.as_deref()) {
            // Normalised to its network address.
            prop_assert_eq!(n.ip(), n.network());
        }
    }

    #[test]
    fn any_network_info_answer_is_info_or_an_error(
        status in prop_oneof![Just(200u16), 100u16..600],
        body in fuzz::json_input(daemon_fixture(), fuzz::keys_of(&daemon_fixture())),
        // A negative mtu fails before any request (see the config property above).
        mtu in prop_oneof![Just(0i64), 0..=i64::MAX],
    ) {
        let (port, t) = serve_once(status, body.0.clone());
        let c = Config { daemon_port: port, mtu, ..Config::default() };
        let got = c.net_info();
        t.join().unwrap();
        match got {
            Ok(info) => {
                prop_assert!((200..300).contains(&status));
                prop_assert_eq!(info.subnet.ip(), info.subnet.network());
                // A positive config mtu wins over the daemon's.
                if mtu > 0 && mtu <= i64::from(u32::MAX) {
                    prop_assert_eq!(i64::from(info.mtu), mtu);
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}
