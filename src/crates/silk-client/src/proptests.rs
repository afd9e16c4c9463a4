//! Property tests of the answers silk-client decodes: the controller's leases and errors, the
//! policy server's policies, `policies_last_updated` and tags, the configured URLs, and the
//! raw answers the blocking face reads. Every body gets a value or an error, never a panic;
//! bodies rendered from values decode back; an answer parses the same however it arrives.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use hyper::StatusCode;
use proptest::prelude::*;
use serde_json::json;
use silk_core::policy::PoliciesResponse;
use silk_core::Lease;
use silk_testkit::fuzz;

use crate::blocking::{parse, parse_response, Parsed};
use crate::mtls::{decode_list_ok, decode_ok, error_text, parse_url};

fn policies_fixture() -> serde_json::Value {
    json!({"total_policies": 1, "policies": [
        {"source": {"id": "0a9d7c2e-5f1b-4c8a-9e3d-7b6a5c4d3e2f", "tag": "0001"},
         "destination": {"id": "c3f1a2b4-77e0-4d2f-9a61-5e8b2c9d0f13", "tag": "0002",
                         "protocol": "tcp", "ports": {"start": 8080, "end": 8080}}}]})
}

fn leases_fixture() -> serde_json::Value {
    json!({"leases": [{"underlay_ip": "10.0.16.12", "overlay_subnet": "10.255.7.0/24",
                       "overlay_hardware_addr": "ee:ee:0a:ff:07:00"}]})
}

/// Every key of both answers, and the error body's.
fn keys() -> &'static [&'static str] {
    fuzz::keys_of(&json!([policies_fixture(), leases_fixture(), {"error": ""}]))
}

fn status() -> impl Strategy<Value = StatusCode> {
    prop_oneof![Just(200u16), 100u16..600].prop_map(|s| StatusCode::from_u16(s).unwrap())
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn any_answer_decodes_or_is_an_error(
        status in status(),
        policies in fuzz::json_input(policies_fixture(), keys()),
        leases in fuzz::json_input(leases_fixture(), keys()),
    ) {
        let _ = decode_ok::<PoliciesResponse>(status, &policies);
        let _ = decode_ok::<i64>(status, &policies);
        let _ = decode_ok::<Lease>(status, &leases);
        let _ = decode_list_ok::<Vec<Lease>>(status, &leases);
        let _ = decode_ok::<serde_json::Value>(status, &leases);
        let _ = error_text(&leases);
    }

    /// The list decoder takes exactly what serde_json takes, into the same leases.
    #[test]
    fn the_list_decoder_agrees_with_serde_json(
        status in status(),
        leases in fuzz::json_input(leases_fixture(), keys()),
    ) {
        #[derive(Debug, PartialEq, serde::Deserialize)]
        struct List {
            leases: Vec<Lease>,
        }
        let fast = decode_list_ok::<List>(status, &leases).ok();
        let slow = decode_ok::<List>(status, &leases).ok();
        prop_assert_eq!(fast, slow, "{}", String::from_utf8_lossy(&leases));
    }

    #[test]
    fn policies_round_trip(body in fuzz::mutated_json(policies_fixture(), keys())) {
        if let Ok(p) = serde_json::from_value::<PoliciesResponse>(body) {
            let text = serde_json::to_vec(&p).unwrap();
            prop_assert_eq!(decode_ok::<PoliciesResponse>(StatusCode::OK, &text).unwrap(), p);
        }
    }

    #[test]
    fn urls_parse_or_not(url in fuzz::text_or_mutated("https://silk-controller.service.cf.internal:4103"), host in "[a-z0-9.-]{1,30}", port in 1u16..) {
        let _ = parse_url(&url);
        prop_assert_eq!(parse_url(&format!("https://{host}:{port}/")), Some((host, port)));
    }

    #[test]
    fn answers_parse_the_same_however_they_arrive(
        raw in fuzz::bytes_or_mutated(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        ),
        cut in any::<usize>(),
    ) {
        let whole = parse_response(&raw.0);
        let prefix = &raw.0[..cut % (raw.0.len() + 1)];
        match parse(prefix, false) {
            Parsed::Done(r) => prop_assert_eq!(whole, Some(r)),
            Parsed::Malformed(_) => prop_assert_eq!(whole, None),
            Parsed::NeedMore => {}
        }
    }

    #[test]
    fn tags_decode_or_are_an_error(body in fuzz::json_input(json!({"id": "INGRESS_ROUTER", "type": "router", "tag": "0003"}), &["id", "type", "tag", "Tag"])) {
        let _ = crate::policy::parse_tag(&body.0);
    }
}
