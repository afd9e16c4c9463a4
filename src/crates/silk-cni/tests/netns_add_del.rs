//! silk-cni ADD/CHECK/DEL through the real binary as a CNI runtime invokes it: a container
//! namespace held by a process, silk-daemon's network-info endpoint served on 127.0.0.1 in the
//! test's own namespace (the plugin reaches the daemon there, as on a cell). The IPv6 test uses
//! the documentation prefix 2001:db8:ab::/64; every address and route it creates lives in the
//! test's own namespace or the container namespaces it spawns.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures by design

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use silk_testkit::netns::{enter_root_test_netns, output_with_stdin, NsHolder};

/// Serves `body` (`{"overlay_subnet","mtu"[,"ipv6_prefix"]}`) on a free loopback port of the
/// current namespace.
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
    let mut c = Command::new(env!("CARGO_BIN_EXE_silk-cni"));
    silk_testkit::cni::cni_env(&mut c, cmd, id, netns, Path::new("/nonexistent"));
    let out = output_with_stdin(&mut c, conf.as_bytes()).unwrap();
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

/// The start of a root test: the test's own namespace, a fake daemon answering `daemon_body`,
/// a data directory and the plugin's config (`mtu` 0: the daemon's).
fn cell(daemon_body: &'static str, mtu: i64) -> (tempfile::TempDir, String) {
    enter_root_test_netns();
    let port = fake_daemon(daemon_body);
    let dir = tempfile::tempdir().unwrap();
    let conf = conf(dir.path(), port, mtu);
    (dir, conf)
}

/// True when `ip -j <args>` lists nothing.
fn ip_lists_nothing(args: &[&str]) -> bool {
    ip_json(args).as_array().is_none_or(|a| a.is_empty())
}

fn ip_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip").args(args).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// `ip -j <args>` inside the container namespace.
fn ns_ip_json(ns: &NsHolder, args: &[&str]) -> serde_json::Value {
    let mut argv = vec!["ip", "-j"];
    argv.extend_from_slice(args);
    serde_json::from_str(&ns.run_ok(&argv).unwrap()).unwrap_or(serde_json::Value::Null)
}

/// A sysctl as seen inside the container namespace.
fn ns_sysctl(ns: &NsHolder, key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.run_ok(&["cat", &path]).unwrap().trim().to_string()
}

/// A sysctl of the test's own (host side) namespace.
fn host_sysctl(key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let out = Command::new("cat").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn with_prev_result(conf: &str, prev: &serde_json::Value) -> String {
    let mut c: serde_json::Value = serde_json::from_str(conf).unwrap();
    c["prevResult"] = prev.clone();
    c.to_string()
}

/// The interface's addresses as (local, peer, prefixlen); peer is empty without one.
fn addrs(v: &serde_json::Value) -> Vec<(String, String, u64)> {
    v[0]["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    (
                        i["local"].as_str().unwrap_or("").to_string(),
                        i["address"].as_str().unwrap_or("").to_string(),
                        i["prefixlen"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A path for the namespace named `name` (as a runtime's bind mount would be), so each
/// container gets its own silk store key (the path's basename).
fn named_netns(dir: &std::path::Path, ns: &NsHolder, name: &str) -> String {
    let p = dir.join(name);
    std::os::unix::fs::symlink(ns.path(), &p).unwrap();
    p.to_str().unwrap().to_string()
}

fn is_permanent(neigh: &serde_json::Value) -> bool {
    neigh["state"]
        .as_array()
        .is_some_and(|s| s.iter().any(|x| x == "PERMANENT"))
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn add_check_del_wire_the_container_as_upstream() {
    let (dir, conf) = cell(r#"{"overlay_subnet":"10.255.30.0/24","mtu":1450}"#, 0);
    let ns = NsHolder::spawn().unwrap();
    let netns = ns.path().to_str().unwrap().to_string();

    let r = cni("ADD", "handle-1", &netns, &conf);
    assert_eq!(r.code, 0, "ADD failed: {}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["ips"][0]["address"], "10.255.30.2/32");
    assert_eq!(v["ips"][0]["gateway"], "169.254.0.1");
    // Without an ipv6_prefix from the daemon: one address, IPv6 off on both ends.
    assert_eq!(v["ips"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(
        v["routes"],
        serde_json::json!([{"dst": "0.0.0.0/0", "gw": "169.254.0.1"}])
    );
    assert_eq!(
        host_sysctl("net.ipv6.conf.s-010255030002.disable_ipv6"),
        "1"
    );
    assert_eq!(ns_sysctl(&ns, "net.ipv6.conf.eth0.disable_ipv6"), "1");
    assert!(addrs(&ns_ip_json(&ns, &["-6", "addr", "show", "dev", "eth0"])).is_empty());
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
    assert!(!ipam.join("last_reserved_ip.1").exists());
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
    assert!(ip_lists_nothing(&["-j", "link", "show", "s-010255030002"]));
    assert!(!std::fs::read_to_string(dir.path().join("silk/store.json"))
        .unwrap()
        .contains(&key));
    assert_ne!(cni("CHECK", "handle-1", &netns, &check_conf).code, 0);
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn daemon_down_is_code_100_and_leaves_nothing_behind() {
    enter_root_test_netns();
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
    let (_dir, conf) = cell(r#"{"overlay_subnet":"10.255.9.0/24","mtu":1450}"#, 1350);
    let ns = NsHolder::spawn().unwrap();
    let r = cni("ADD", "h", ns.path().to_str().unwrap(), &conf);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        ip_json(&["-j", "link", "show", "s-010255009002"])[0]["mtu"],
        1350
    );
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn ipv6_prefix_gives_the_container_a_routed_ipv6_address() {
    let (dir, conf) = cell(
        r#"{"overlay_subnet":"10.255.30.0/24","mtu":1450,"ipv6_prefix":"2001:db8:ab::/64"}"#,
        0,
    );
    let ns = NsHolder::spawn().unwrap();
    let netns = named_netns(dir.path(), &ns, "container-6");
    assert_eq!(host_sysctl("net.ipv6.conf.all.forwarding"), "0");

    let r = cni("ADD", "handle-6", &netns, &conf);
    assert_eq!(r.code, 0, "ADD failed: {}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        v["ips"],
        serde_json::json!([
            {"address": "10.255.30.2/32", "gateway": "169.254.0.1", "interface": 1},
            {"address": "2001:db8:ab::2/128", "gateway": "fe80::1", "interface": 1}
        ])
    );
    assert_eq!(
        v["routes"],
        serde_json::json!([{"dst": "0.0.0.0/0", "gw": "169.254.0.1"}])
    );

    // Host end: fe80::1/128 peer <v6>/128 and nothing else IPv6 (no generated link-local),
    // a permanent neighbour to the container MAC, the /128 route, IPv6 on, forwarding on.
    let host = "s-010255030002";
    assert_eq!(
        addrs(&ip_json(&["-j", "-6", "addr", "show", "dev", host])),
        vec![("fe80::1".into(), "2001:db8:ab::2".into(), 128)]
    );
    let neigh = ip_json(&["-j", "-6", "neigh", "show", "dev", host]);
    assert_eq!(neigh.as_array().map(Vec::len), Some(1), "{neigh}");
    assert_eq!(
        (neigh[0]["dst"].as_str(), neigh[0]["lladdr"].as_str()),
        (Some("2001:db8:ab::2"), Some("ee:ee:0a:ff:1e:02"))
    );
    assert!(is_permanent(&neigh[0]), "{neigh}");
    let route = ip_json(&["-j", "-6", "route", "show", "2001:db8:ab::2"]);
    assert_eq!(route[0]["dev"], host, "{route}");
    for (k, want) in [
        ("disable_ipv6", "0"),
        ("accept_ra", "0"),
        ("accept_dad", "0"),
        ("autoconf", "0"),
    ] {
        assert_eq!(
            host_sysctl(&format!("net.ipv6.conf.{host}.{k}")),
            want,
            "{k}"
        );
    }
    assert_eq!(host_sysctl("net.ipv6.conf.all.forwarding"), "1");

    // Container end: <v6>/128 peer fe80::1, default route via fe80::1 on eth0, a permanent
    // neighbour fe80::1 -> host MAC, IPv6 on.
    assert_eq!(
        addrs(&ns_ip_json(&ns, &["-6", "addr", "show", "dev", "eth0"])),
        vec![("2001:db8:ab::2".into(), "fe80::1".into(), 128)]
    );
    let routes = ns_ip_json(&ns, &["-6", "route", "show", "default"]);
    assert_eq!(
        (routes[0]["gateway"].as_str(), routes[0]["dev"].as_str()),
        (Some("fe80::1"), Some("eth0")),
        "{routes}"
    );
    let neigh = ns_ip_json(&ns, &["-6", "neigh", "show", "dev", "eth0"]);
    assert_eq!(
        (neigh[0]["dst"].as_str(), neigh[0]["lladdr"].as_str()),
        (Some("fe80::1"), Some("aa:aa:0a:ff:1e:02")),
        "{neigh}"
    );
    assert!(is_permanent(&neigh[0]), "{neigh}");
    assert_eq!(ns_sysctl(&ns, "net.ipv6.conf.eth0.disable_ipv6"), "0");
    assert_eq!(ns_sysctl(&ns, "net.ipv6.conf.eth0.accept_ra"), "0");

    // Reachability over the veth in both directions: the host side reaches the container's
    // global address through the /128 route, the container reaches fe80::1.
    let ping = Command::new("ping")
        .args(["-6", "-c1", "-W2", "2001:db8:ab::2"])
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");
    let ping = ns
        .run(&["ping", "-6", "-c1", "-W2", "fe80::1%eth0"])
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");
    // IPv4 is wired as before.
    assert!(ns
        .run(&["ping", "-c1", "-W2", "169.254.0.1"])
        .unwrap()
        .status
        .success());

    // A second container gets the next address of both range sets; the two containers reach
    // each other over IPv6 through the host namespace: default route via fe80::1, forwarding,
    // the other container's /128 route.
    let ns2 = NsHolder::spawn().unwrap();
    let r2 = cni(
        "ADD",
        "handle-7",
        &named_netns(dir.path(), &ns2, "container-7"),
        &conf,
    );
    assert_eq!(r2.code, 0, "{}", r2.stdout);
    let v2: serde_json::Value = serde_json::from_str(&r2.stdout).unwrap();
    assert_eq!(v2["ips"][1]["address"], "2001:db8:ab::3/128", "{v2}");
    let ping = ns
        .run(&["ping", "-6", "-c1", "-W2", "2001:db8:ab::3"])
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");

    // On-disk state: both addresses in the one network directory, one cursor per range set,
    // the silk store entry with "ipv6".
    let ipam = dir.path().join("host-local/ipam/silk");
    for f in ["10.255.30.2", "2001:db8:ab::2"] {
        assert_eq!(
            std::fs::read_to_string(ipam.join(f)).unwrap(),
            "handle-6\r\neth0",
            "{f}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(ipam.join("last_reserved_ip.1")).unwrap(),
        "2001:db8:ab::3"
    );
    let store = std::fs::read_to_string(dir.path().join("silk/store.json")).unwrap();
    assert!(
        store.contains(
            "\"container-6\":{\"handle\":\"container-6\",\"ip\":\"10.255.30.2\",\"ipv6\":\"2001:db8:ab::2\",\"metadata\":null}"
        ),
        "{store}"
    );

    // CHECK verifies the IPv6 address too: from prevResult and, without it there, from the
    // silk store.
    let check_conf = with_prev_result(&conf, &v);
    let mut v4_only = v.clone();
    v4_only["ips"].as_array_mut().unwrap().truncate(1);
    let check_v4_only = with_prev_result(&conf, &v4_only);
    assert_eq!(cni("CHECK", "handle-6", &netns, &check_conf).code, 0);
    assert_eq!(cni("CHECK", "handle-6", &netns, &check_v4_only).code, 0);
    ns.run_ok(&[
        "ip",
        "-6",
        "addr",
        "del",
        "2001:db8:ab::2/128",
        "peer",
        "fe80::1/128",
        "dev",
        "eth0",
    ])
    .unwrap();
    let failed = cni("CHECK", "handle-6", &netns, &check_v4_only);
    assert_ne!(failed.code, 0);
    assert!(
        failed.stdout.contains("2001:db8:ab::2"),
        "{}",
        failed.stdout
    );

    // DEL releases both addresses and the store entry; a second DEL is fine.
    for _ in 0..2 {
        let d = cni("DEL", "handle-6", &netns, &conf);
        assert_eq!((d.code, d.stdout.as_str()), (0, ""));
    }
    assert!(!ipam.join("10.255.30.2").exists());
    assert!(!ipam.join("2001:db8:ab::2").exists());
    assert!(ipam.join("2001:db8:ab::3").exists());
    assert!(ip_lists_nothing(&["-j", "link", "show", host]));
    assert!(ip_lists_nothing(&[
        "-j",
        "-6",
        "route",
        "show",
        "2001:db8:ab::2"
    ]));
    let store = std::fs::read_to_string(dir.path().join("silk/store.json")).unwrap();
    assert!(!store.contains("container-6"), "{store}");
    assert!(store.contains("2001:db8:ab::3"), "{store}");
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn exhausted_ipv6_prefix_fails_add_and_keeps_no_ipv4_address() {
    let (dir, conf) = cell(
        r#"{"overlay_subnet":"10.255.30.0/24","mtu":1450,"ipv6_prefix":"2001:db8:ab::/126"}"#,
        0,
    );
    let holders: Vec<_> = (0..3).map(|_| NsHolder::spawn().unwrap()).collect();
    for (i, h) in holders.iter().take(2).enumerate() {
        let r = cni("ADD", &format!("h{i}"), h.path().to_str().unwrap(), &conf);
        assert_eq!(r.code, 0, "{}", r.stdout);
    }
    let r = cni("ADD", "h2", holders[2].path().to_str().unwrap(), &conf);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (v["code"].as_u64(), v["msg"].as_str(), v["details"].as_str()),
        (
            Some(100),
            Some("run ipam plugin"),
            Some("failed to allocate for range 1: no IP addresses available in range set: 2001:db8:ab::1-2001:db8:ab::3")
        )
    );
    assert!(!dir.path().join("host-local/ipam/silk/10.255.30.4").exists());
    assert!(ip_lists_nothing(&["-j", "link", "show", "s-010255030004"]));
}
