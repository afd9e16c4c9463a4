//! Property tests of the CNI protocol inputs: the environment, stdin configs through the whole
//! harness, results of any version (`prevResult`, a delegate's output), a delegate's error
//! output, GC's attachment list and the responses of the loopback HTTP services. Every input
//! gets a result or an error, never a panic; renderers round-trip through their parsers.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};
use silk_testkit::fuzz;

use crate::env::{Command, Env};
use crate::error::{CniError, ErrorCode};
use crate::result::{CniResult, Dns, Interface, IpConfig, Route};
use crate::run::tests::{env as harness_env, Probe};
use crate::version::SpecVersion;
use crate::{delegate, gc, http, run_with};

const ENV_KEYS: &[&str] = &[
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
];

/// A wrapper DEL config with a prevResult, as libcni passes it.
fn config_fixture() -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "cni-wrapper", "type": "cni-wrapper-plugin",
        "delegate": {"cniVersion": "1.0.0", "name": "silk", "type": "silk-cni", "daemonPort": 23954},
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "s-010255030002", "mac": "aa:aa:0a:ff:1e:02"},
                           {"name": "eth0", "mac": "ee:ee:0a:ff:1e:02", "sandbox": "/proc/1/ns/net"}],
            "ips": [{"address": "10.255.30.2/32", "gateway": "169.254.0.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.0.1"}],
            "dns": {"nameservers": ["169.254.0.53"]}
        },
        "cni.dev/valid-attachments": [{"containerID": "h1", "ifname": "eth0"}]
    })
}

/// The fixture's keys (and those of its prevResult and GC list).
fn config_keys() -> &'static [&'static str] {
    fuzz::keys_of(&config_fixture())
}

fn env_value() -> impl Strategy<Value = String> {
    prop_oneof![
        fuzz::interesting_string(),
        "[A-Za-z0-9][A-Za-z0-9_.-]{0,40}",
        Just("/opt/cni/bin:/var/vcap/packages/silk-cni/bin".to_string()),
        "([A-Z_]{1,6}=[a-z0-9]{0,6};?){0,4}",
        prop::sample::select(vec!["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"])
            .prop_map(str::to_string),
    ]
}

fn env_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(ENV_KEYS).prop_map(str::to_string),
        env_value(),
        0..7,
    )
}

fn command() -> impl Strategy<Value = Command> {
    prop::sample::select(vec![
        Command::Add,
        Command::Del,
        Command::Check,
        Command::Gc,
        Command::Status,
        Command::Version,
    ])
}

fn interface() -> impl Strategy<Value = Interface> {
    (
        fuzz::interesting_string(),
        fuzz::interesting_string(),
        proptest::option::of(any::<u32>()),
        fuzz::interesting_string(),
    )
        .prop_map(|(name, mac, mtu, sandbox)| Interface {
            name,
            mac,
            mtu,
            sandbox,
        })
}

fn ip_config() -> impl Strategy<Value = IpConfig> {
    (
        fuzz::interesting_string(),
        proptest::option::of(fuzz::interesting_string()),
        proptest::option::of(any::<usize>()),
    )
        .prop_map(|(address, gateway, interface)| IpConfig {
            address,
            gateway,
            interface,
        })
}

fn cni_result() -> impl Strategy<Value = CniResult> {
    let strings = || prop::collection::vec(fuzz::interesting_string(), 0..3);
    (
        prop::collection::vec(interface(), 0..3),
        prop::collection::vec(ip_config(), 0..3),
        prop::collection::vec(
            (
                fuzz::interesting_string(),
                proptest::option::of(fuzz::interesting_string()),
            )
                .prop_map(|(dst, gw)| Route { dst, gw }),
            0..3,
        ),
        (strings(), fuzz::interesting_string(), strings(), strings()),
    )
        .prop_map(
            |(interfaces, ips, routes, (nameservers, domain, search, options))| CniResult {
                interfaces,
                ips,
                routes,
                dns: Dns {
                    nameservers,
                    domain,
                    search,
                    options,
                },
            },
        )
}

/// A result as it reads back from `version`: 1.1.0-only fields dropped for older versions.
fn as_seen_in(r: &CniResult, version: SpecVersion) -> CniResult {
    let mut r = r.clone();
    if version < SpecVersion(1, 1, 0) {
        for i in &mut r.interfaces {
            i.mtu = None;
        }
    }
    r
}

/// A chunked transfer-encoding of `body` in pieces of `sizes` bytes (cut at char boundaries).
fn chunked(body: &str, sizes: &[usize]) -> String {
    let mut out = String::new();
    let mut rest = body;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let mut at = (n % 16 + 1).min(rest.len());
        while !rest.is_char_boundary(at) {
            at += 1;
        }
        let (piece, tail) = rest.split_at(at);
        out.push_str(&format!("{:x}\r\n{piece}\r\n", piece.len()));
        rest = tail;
    }
    out.push_str("0\r\n\r\n");
    out
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn env_gives_args_or_an_invalid_environment_error(env in env_map(), cmd in command()) {
        match Env(&env).parse(cmd) {
            Ok(a) => {
                prop_assert_eq!(a.command, cmd);
                if cmd != Command::Version && cmd != Command::Gc && cmd != Command::Status {
                    prop_assert!(crate::env::validate_container_id(&a.container_id).is_ok());
                    prop_assert!(crate::env::validate_ifname(&a.ifname).is_ok());
                }
            }
            Err(e) => prop_assert_eq!(e.code, ErrorCode::InvalidEnvironment),
        }
    }

    #[test]
    fn harness_answers_every_stdin_with_a_result_or_a_spec_error(
        env in env_map(),
        stdin in fuzz::json_input(config_fixture(), config_keys()),
    ) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(&Probe::default(), &env, &stdin, &mut out, &mut err);
        let out = String::from_utf8(out).expect("the harness writes UTF-8");
        match code {
            0 if out.is_empty() => {}
            0 => {
                let v: Value = serde_json::from_str(&out).expect("a result is JSON");
                prop_assert!(v.get("cniVersion").is_some(), "{}", out);
            }
            1 => {
                let v: Value = serde_json::from_str(&out).expect("an error is JSON");
                prop_assert!(v["code"].as_u64().is_some(), "{}", out);
                prop_assert!(v["msg"].as_str().is_some(), "{}", out);
            }
            other => prop_assert!(false, "exit code {}", other),
        }
    }

    #[test]
    fn harness_runs_add_and_del_for_mutated_configs(
        cmd in prop::sample::select(vec!["ADD", "DEL", "CHECK", "GC", "STATUS"]),
        stdin in fuzz::json_input(config_fixture(), config_keys()),
    ) {
        let env = harness_env(cmd);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(&Probe::default(), &env, &stdin, &mut out, &mut err);
        prop_assert!(code == 0 || code == 1);
        if code == 1 {
            let v: Value = serde_json::from_slice(&out).expect("an error is JSON");
            prop_assert!(v["code"].as_u64().is_some());
        }
    }

    #[test]
    fn any_json_is_a_result_or_a_decode_error(
        v in prop_oneof![
            fuzz::json_value_with_keys(config_keys()),
            fuzz::mutated_json(config_fixture()["prevResult"].clone(), config_keys()),
        ],
        version in prop::sample::select(vec!["0.3.0", "0.4.0", "1.0.0", "1.1.0", "0.2.0", "x", ""]),
    ) {
        if let Ok(r) = CniResult::from_value(&v) {
            // What was read can be written again in any supported version.
            let _ = r.to_version_json(version);
            let _ = (r.first_ipv4(), r.first_ipv6());
        }
    }

    #[test]
    fn results_round_trip_through_every_version(
        r in cni_result(),
        version in prop::sample::select(vec!["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]),
    ) {
        let text = r.to_version_json(version).expect("a supported version renders");
        let v: Value = serde_json::from_str(&text).expect("rendered JSON parses");
        prop_assert_eq!(v["cniVersion"].as_str(), Some(version));
        let back = CniResult::from_value(&v).expect("a rendered result parses");
        let parsed = SpecVersion::parse(version).expect("a supported version parses");
        prop_assert_eq!(back, as_seen_in(&r, parsed));
    }

    #[test]
    fn versions_parse_or_not_and_render_back(s in fuzz::interesting_string(), v in (0u32..100, 0u32..100, 0u32..100)) {
        let _ = SpecVersion::parse(&s);
        let _ = crate::version::check_supported(&s, crate::version::SUPPORTED);
        let text = format!("{}.{}.{}", v.0, v.1, v.2);
        prop_assert_eq!(SpecVersion::parse(&text), Some(SpecVersion(v.0, v.1, v.2)));
    }

    #[test]
    fn a_delegate_error_reads_back_as_written(
        code in any::<u32>(),
        msg in fuzz::interesting_string(),
        details in fuzz::interesting_string(),
        version in fuzz::interesting_string(),
    ) {
        let written = CniError::new(ErrorCode::from_u32(code), msg, details);
        let read = delegate::decode_error(written.to_json(&version).as_bytes(), b"", "silk-cni");
        prop_assert_eq!(read, written);
    }

    #[test]
    fn any_delegate_output_is_an_error(
        stdout in fuzz::bytes_or_mutated(br#"{"cniVersion":"1.0.0","code":100,"msg":"run ipam plugin","details":"exhausted"}"#),
        stderr in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let e = delegate::decode_error(&stdout, &stderr, "silk-cni");
        // Either the delegate's own error JSON (which has a code), or code 999 quoting its
        // output. serde skips unknown fields without checking their UTF-8, so no stricter
        // oracle than the key is at hand.
        prop_assert!(
            stdout.windows(6).any(|w| w == b"\"code\"")
                || (e.code == ErrorCode::Internal && e.msg.starts_with("netplugin failed: silk-cni:")),
            "{:?}", e
        );
    }

    #[test]
    fn gc_attachments_parse_or_fail_with_a_spec_code(
        config in prop_oneof![
            fuzz::json_value_with_keys(config_keys()),
            fuzz::mutated_json(config_fixture(), config_keys()),
        ],
    ) {
        let args = crate::gc::tests::args(config);
        match gc::valid_attachments(&args) {
            Ok(list) => {
                for a in &list {
                    prop_assert!(gc::keeps(&list, &a.container_id, &a.ifname));
                }
            }
            Err(e) => prop_assert!(matches!(e.code.as_u32(), 6 | 7)),
        }
    }

    #[test]
    fn any_http_response_parses_or_is_malformed(
        raw in fuzz::bytes_or_mutated(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        ),
    ) {
        let _ = http::parse_response(&raw);
    }

    #[test]
    fn http_bodies_round_trip_plain_and_chunked(
        status in 100u16..600,
        body in any::<String>(),
        sizes in prop::collection::vec(any::<usize>(), 1..4),
    ) {
        let plain = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let r = http::parse_response(plain.as_bytes()).expect("a well-formed response parses");
        prop_assert_eq!((r.status, r.body.as_str()), (status, body.as_str()));
        let chunked = format!(
            "HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            chunked(&body, &sizes)
        );
        let r = http::parse_response(chunked.as_bytes()).expect("a well-formed response parses");
        prop_assert_eq!((r.status, r.body.as_str()), (status, body.as_str()));
    }
}
