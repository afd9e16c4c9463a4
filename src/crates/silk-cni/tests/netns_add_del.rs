//! silk-cni ADD/CHECK/DEL through the real binary as a CNI runtime invokes it: a container
//! namespace held by a process, silk-daemon's network-info endpoint served on 127.0.0.1 in the
//! test's own namespace (the plugin reaches the daemon there, as on a cell).

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures by design

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};

use silk_testkit::netns::{unshare_test_netns, NsHolder};

fn require_root() {
    assert_eq!(
        std::env::var("SILK_TEST_ROOT").as_deref(),
        Ok("1"),
        "needs root: set SILK_TEST_ROOT=1 (scripts/test does)"
    );
    unshare_test_netns().expect("unshare netns");
}

/// Serves `{"overlay_subnet","mtu"}` on a free loopback port of the current namespace.
fn fake_daemon(body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 2048];
            let _ = c.read(&mut buf);
            let resp = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            let _ = c.write_all(resp.as_bytes());
        }
    });
    port
}

struct Run {
    code: i32,
    stdout: String,
}

fn cni(cmd: &str, id: &str, netns: &str, conf: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_silk-cni"))
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

fn conf(dir: &std::path::Path, port: u16, mtu: i64) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": "silk", "type": "silk-cni", "daemonPort": port,
        "dataDir": dir.join("host-local"), "datastore": dir.join("silk/store.json"), "mtu": mtu
    })
    .to_string()
}

fn ip_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip").args(args).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn add_check_del_wire_the_container_as_upstream() {
    require_root();
    let port = fake_daemon(r#"{"overlay_subnet":"10.255.30.0/24","mtu":1450}"#);
    let dir = tempfile::tempdir().unwrap();
    let conf = conf(dir.path(), port, 0);
    let ns = NsHolder::spawn().unwrap();
    let netns = ns.path().to_str().unwrap().to_string();

    let r = cni("ADD", "handle-1", &netns, &conf);
    assert_eq!(r.code, 0, "ADD failed: {}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["ips"][0]["address"], "10.255.30.2/32");
    assert_eq!(v["ips"][0]["gateway"], "169.254.0.1");
    assert_eq!(v["interfaces"][0]["name"], "s-010255030002");
    assert_eq!(v["interfaces"][1]["sandbox"], netns.as_str());

    // Host end: MTU, MAC, NOARP, point-to-point address, permanent neighbour.
    let link = &ip_json(&["-j", "link", "show", "s-010255030002"])[0];
    assert_eq!(link["mtu"], 1450);
    assert_eq!(link["address"], "aa:aa:0a:ff:1e:02");
    assert!(link["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "NOARP"));
    let addr = &ip_json(&["-j", "addr", "show", "dev", "s-010255030002"])[0]["addr_info"][0];
    assert_eq!(
        (addr["local"].as_str(), addr["address"].as_str()),
        (Some("169.254.0.1"), Some("10.255.30.2"))
    );
    let neigh = ip_json(&["-j", "neigh", "show", "dev", "s-010255030002"]);
    assert_eq!(neigh[0]["lladdr"], "ee:ee:0a:ff:1e:02");
    // Container end.
    let routes = ns
        .run_ok(&["ip", "-j", "route", "show", "default"])
        .unwrap();
    let routes: serde_json::Value = serde_json::from_str(&routes).unwrap();
    assert_eq!(
        (routes[0]["gateway"].as_str(), routes[0]["prefsrc"].as_str()),
        (Some("169.254.0.1"), Some("10.255.30.2"))
    );
    // The container reaches its gateway address on the host end.
    assert!(ns
        .run(&["ping", "-c1", "-W2", "169.254.0.1"])
        .unwrap()
        .status
        .success());

    // On-disk state in upstream's layout.
    let ipam = dir.path().join("host-local/ipam/silk");
    assert_eq!(
        std::fs::read_to_string(ipam.join("10.255.30.2")).unwrap(),
        "handle-1\r\neth0"
    );
    let key = ns.path().file_name().unwrap().to_str().unwrap().to_string();
    let store = std::fs::read_to_string(dir.path().join("silk/store.json")).unwrap();
    assert!(store.contains(&format!(
        "\"{key}\":{{\"handle\":\"{key}\",\"ip\":\"10.255.30.2\",\"metadata\":null}}"
    )));

    let check_conf = {
        let mut c: serde_json::Value = serde_json::from_str(&conf).unwrap();
        c["prevResult"] = v.clone();
        c.to_string()
    };
    assert_eq!(cni("CHECK", "handle-1", &netns, &check_conf).code, 0);

    // Second ADD gets the next address; DEL twice is fine and removes everything.
    let ns2 = NsHolder::spawn().unwrap();
    let r2 = cni("ADD", "handle-2", ns2.path().to_str().unwrap(), &conf);
    assert!(r2.stdout.contains("10.255.30.3/32"), "{}", r2.stdout);
    for _ in 0..2 {
        let d = cni("DEL", "handle-1", &netns, &conf);
        assert_eq!((d.code, d.stdout.as_str()), (0, ""));
    }
    assert!(!ipam.join("10.255.30.2").exists());
    assert!(ip_json(&["-j", "link", "show", "s-010255030002"])
        .as_array()
        .is_none_or(|a| a.is_empty()));
    assert!(!std::fs::read_to_string(dir.path().join("silk/store.json"))
        .unwrap()
        .contains(&key));
    assert_ne!(cni("CHECK", "handle-1", &netns, &check_conf).code, 0);
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn daemon_down_is_code_100_and_leaves_nothing_behind() {
    require_root();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let dir = tempfile::tempdir().unwrap();
    let ns = NsHolder::spawn().unwrap();
    let r = cni(
        "ADD",
        "h",
        ns.path().to_str().unwrap(),
        &conf(dir.path(), port, 0),
    );
    assert_eq!(r.code, 1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (v["code"].as_u64(), v["msg"].as_str()),
        (Some(100), Some("discover network info"))
    );
    assert!(!dir.path().join("host-local/ipam/silk").exists());
    let links = ip_json(&["-j", "link", "show"]);
    assert_eq!(
        links.as_array().unwrap().len(),
        1,
        "only lo may exist: {links}"
    );
    // DEL with the daemon down and the namespace gone still succeeds.
    drop(ns);
    assert_eq!(
        cni(
            "DEL",
            "h",
            "/proc/999999999/ns/net",
            &conf(dir.path(), port, 0)
        )
        .code,
        0
    );
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn config_mtu_overrides_the_daemon_value() {
    require_root();
    let port = fake_daemon(r#"{"overlay_subnet":"10.255.9.0/24","mtu":1450}"#);
    let dir = tempfile::tempdir().unwrap();
    let ns = NsHolder::spawn().unwrap();
    let r = cni(
        "ADD",
        "h",
        ns.path().to_str().unwrap(),
        &conf(dir.path(), port, 1350),
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        ip_json(&["-j", "link", "show", "s-010255009002"])[0]["mtu"],
        1350
    );
}
