//! The bandwidth binary chained after a silk-style result, in a namespace of its own: TBF on the
//! host veth, ingress redirect to the IFB with its own TBF, IFB in the result, DEL removes it.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use std::path::Path;
use std::process::Command;

use silk_testkit::netns::{enter_root_test_netns, output_with_stdin, run_ok, NsHolder};

fn plugin(cmd: &str, netns: &str, conf: &serde_json::Value) -> (i32, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bandwidth"));
    silk_testkit::cni::cni_env(&mut c, cmd, "handle-1", netns, Path::new("/nonexistent"));
    let o = output_with_stdin(&mut c, conf.to_string().as_bytes()).unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn shapes_both_directions_and_del_removes_the_ifb() {
    enter_root_test_netns();
    let ns = NsHolder::spawn().unwrap();
    let netns = ns.path().to_str().unwrap().to_string();
    run_ok(&[
        "ip",
        "link",
        "add",
        "s-010255030002",
        "mtu",
        "1450",
        "type",
        "veth",
        "peer",
        "name",
        "c-010255030002",
        "netns",
        &netns,
    ])
    .unwrap();
    run_ok(&["ip", "link", "set", "s-010255030002", "up"]).unwrap();
    let prev = serde_json::json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "s-010255030002", "mac": "aa:aa:0a:ff:1e:02"}, {"name": "eth0", "mac": "ee:ee:0a:ff:1e:02", "sandbox": netns}],
        "ips": [{"address": "10.255.30.2/32", "gateway": "169.254.0.1", "interface": 1}]});
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "cni-wrapper", "type": "bandwidth",
        "ingressRate": 1024000, "ingressBurst": 2048000, "egressRate": 512000, "egressBurst": 1024000, "prevResult": prev});
    let (code, out) = plugin("ADD", &netns, &conf);
    assert_eq!(code, 0, "{out}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ifb = r["interfaces"][2]["name"].as_str().unwrap().to_string();
    assert_eq!(ifb, bandwidth::plan::ifb_name("cni-wrapper", "handle-1"));

    let q: serde_json::Value = serde_json::from_str(
        &run_ok(&["tc", "-j", "qdisc", "show", "dev", "s-010255030002"]).unwrap(),
    )
    .unwrap();
    let kinds: Vec<&str> = q
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"tbf") && kinds.contains(&"ingress"),
        "{kinds:?}"
    );
    let tbf = q
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["kind"] == "tbf")
        .unwrap();
    assert_eq!(
        tbf["options"]["rate"].as_u64(),
        Some(1_024_000 / 8),
        "rate in bytes/s: {tbf}"
    );
    let qi: serde_json::Value =
        serde_json::from_str(&run_ok(&["tc", "-j", "qdisc", "show", "dev", &ifb]).unwrap())
            .unwrap();
    assert!(qi.as_array().unwrap().iter().any(|x| x["kind"] == "tbf"));
    let link: serde_json::Value =
        serde_json::from_str(&run_ok(&["ip", "-j", "link", "show", &ifb]).unwrap()).unwrap();
    assert_eq!(link[0]["mtu"], 1450);

    let mut check = conf.clone();
    check["prevResult"] = r.clone();
    assert_eq!(plugin("CHECK", &netns, &check).0, 0);
    for _ in 0..2 {
        assert_eq!(plugin("DEL", &netns, &check), (0, String::new()));
    }
    assert!(Command::new("ip")
        .args(["link", "show", &ifb])
        .output()
        .unwrap()
        .stdout
        .is_empty());

    // All zero: the previous result passes through untouched.
    let zero = serde_json::json!({"cniVersion": "1.0.0", "name": "cni-wrapper", "type": "bandwidth", "prevResult": prev});
    let (code, out) = plugin("ADD", &netns, &zero);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["interfaces"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Rate without burst: spec error, nothing created.
    let bad = serde_json::json!({"cniVersion": "1.0.0", "name": "cni-wrapper", "type": "bandwidth", "ingressRate": 1000, "prevResult": prev});
    let (code, out) = plugin("ADD", &netns, &bad);
    assert_eq!(code, 1);
    assert!(out.contains("if rate is set, burst must also be set"));
}
