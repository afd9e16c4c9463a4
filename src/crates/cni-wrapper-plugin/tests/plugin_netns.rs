//! The wrapper binary driven as garden-external-networker's libcni drives it, with the real
//! silk-cni as delegate, in a namespace of its own: example A end to end, DEL leaving nothing,
//! 50 parallel ADDs and DELs, and bad input producing spec errors with nothing half-created.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

mod common;

use common::{cni, extra_links, rules_and_chains, save, Cell};
use silk_dataplane::iptables::save::normalize;
use silk_testkit::netns::NsHolder;

const EXAMPLE_A: &str = include_str!("fixtures/example_a.save");
const HANDLE_A: &str = "5f3c9a1e-7b2d-4c8e-6a91-0d4e";
const HANDLE_B: &str = "7b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e";

fn a_runtime() -> serde_json::Value {
    serde_json::json!({
        "netOutRules": [{"networks": [{"end": "10.10.255.255", "start": "10.10.0.0"}], "ports": [{"end": 443, "start": 443}], "protocol": 1}],
        "portMappings": [{"container_port": 8080, "host_port": 61000}]
    })
}

fn metadata() -> serde_json::Value {
    serde_json::json!({"container_workload": "app", "policy_group_id": "pg", "space_id": "sp", "ports": "8080"})
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn example_a_through_the_binaries_then_del_leaves_nothing() {
    let cell = Cell::new();
    let before = rules_and_chains();
    assert!(before.is_empty());
    let ns = NsHolder::spawn().unwrap();
    let netns = ns.path().to_str().unwrap();
    let conf = cell.config(metadata(), a_runtime()).to_string();
    let out = cni(&cell.cni_path, "ADD", HANDLE_A, netns, &conf, &[]);
    assert_eq!(out.code, 0, "ADD failed: {} {}", out.stdout, out.stderr);
    let r = out.json();
    assert_eq!(r["ips"][0]["address"], "10.255.30.2/32");
    assert_eq!(r["dns"]["nameservers"], serde_json::json!(["169.254.0.53"]));
    assert_eq!(r["interfaces"][1]["name"], "eth0");

    // The live tables are exactly upstream's for example A.
    assert_eq!(normalize(&save()), normalize(EXAMPLE_A));
    let store: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(cell.path("container-metadata/store.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(store[HANDLE_A]["ip"], "10.255.30.2");
    assert_eq!(store[HANDLE_A]["metadata"]["container_workload"], "app");
    assert_eq!(
        std::fs::read_to_string(cell.path("container-metadata/store.json_version")).unwrap(),
        "2"
    );
    let reqs = cell.server.requests.lock().unwrap().clone();
    assert!(reqs
        .iter()
        .any(|l| l.starts_with("GET /force-policy-poll-cycle ")));
    assert!(reqs.iter().any(|l| l.starts_with(&format!(
        "GET /force-asgs-for-container?container={HANDLE_A} "
    ))));

    let mut del_conf = cell.config(serde_json::Value::Null, serde_json::Value::Null);
    del_conf.as_object_mut().unwrap().remove("metadata");
    del_conf.as_object_mut().unwrap().remove("runtimeConfig");
    del_conf["prevResult"] = r.clone();
    for _ in 0..2 {
        let d = cni(
            &cell.cni_path,
            "DEL",
            HANDLE_A,
            netns,
            &del_conf.to_string(),
            &[],
        );
        assert_eq!(
            (d.code, d.stdout.as_str()),
            (0, ""),
            "DEL failed: {}",
            d.stderr
        );
    }
    assert_eq!(
        rules_and_chains(),
        before,
        "DEL must leave the tables as they were"
    );
    assert!(extra_links().is_empty());
    assert_eq!(
        std::fs::read_to_string(cell.path("container-metadata/store.json")).unwrap(),
        "{}\n"
    );
    assert!(!cell.path("host-local/ipam/silk/10.255.30.2").exists());
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn dynamic_asgs_leave_only_the_reject_in_netout() {
    let cell = Cell::new();
    cell.server
        .asg_status
        .store(200, std::sync::atomic::Ordering::SeqCst);
    let ns = NsHolder::spawn().unwrap();
    let conf = cell.config(metadata(), a_runtime()).to_string();
    let out = cni(
        &cell.cni_path,
        "ADD",
        "7b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e",
        ns.path().to_str().unwrap(),
        &conf,
        &[],
    );
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    let netout: Vec<String> = save()
        .lines()
        .filter(|l| l.starts_with("-A netout--7b8c9d0e-1f2a-4b3c-8 "))
        .map(String::from)
        .collect();
    assert_eq!(
        netout,
        vec!["-A netout--7b8c9d0e-1f2a-4b3c-8 -j REJECT --reject-with icmp-port-unreachable"]
    );
}

/// ADD through the binary, which must succeed; the container's namespace holder.
fn add_ok(cell: &Cell, handle: &str, conf: &str) -> NsHolder {
    let ns = NsHolder::spawn().unwrap();
    let out = cni(
        &cell.cni_path,
        "ADD",
        handle,
        ns.path().to_str().unwrap(),
        conf,
        &[],
    );
    assert_eq!(out.code, 0, "ADD {handle}: {} {}", out.stdout, out.stderr);
    ns
}

/// The `-A netout--… ` lines of the live filter table for `handle`.
fn netout_of(handle: &str) -> Vec<String> {
    let chain = silk_dataplane::iptables::ChainName::netout(handle);
    save()
        .lines()
        .filter(|l| l.starts_with(&format!("-A {chain} ")))
        .map(String::from)
        .collect()
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn agent_answering_405_then_200_static_rules_never_outlive_the_switch() {
    // The same agent process answers 405 (static ASGs) for one ADD and 200 (dynamic) for the
    // next, as across an upgrade that turns enable_asg_syncing on. The second container must
    // never hold the static ACCEPT rules, only the agent's jump and the REJECT.
    let cell = Cell::new();
    let conf = cell.config(metadata(), a_runtime()).to_string();
    let (first, second) = ("aaaa0000-1111-4222-8333-444455556666", HANDLE_B);
    let _ns1 = add_ok(&cell, first, &conf);
    let static_rule =
        "-p tcp -m iprange --dst-range 10.10.0.0-10.10.255.255 -m tcp --dport 443 -j ACCEPT";
    assert!(
        netout_of(first).iter().any(|l| l.ends_with(static_rule)),
        "405: static rules expected: {:?}",
        netout_of(first)
    );

    // 200 from an agent that writes nothing for this container (as for one without a space),
    // right after a 405 (the first restore wrote static rules, as the last answer suggested):
    // the netout chain ends closed, nothing static in it.
    cell.server
        .asg_status
        .store(200, std::sync::atomic::Ordering::SeqCst);
    let _ns2 = add_ok(&cell, second, &conf);
    let netout2 = silk_dataplane::iptables::ChainName::netout(second);
    assert_eq!(
        netout_of(second),
        vec![format!(
            "-A {netout2} -j REJECT --reject-with icmp-port-unreachable"
        )]
    );

    // 200 from an agent that syncs: its jump and the REJECT only.
    cell.server
        .acts_as_agent
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let third = "cccc0000-1111-4222-8333-444455556666";
    let _ns3 = add_ok(&cell, third, &conf);
    let asg = silk_dataplane::iptables::ChainName::asg(third);
    let netout = silk_dataplane::iptables::ChainName::netout(third);
    assert_eq!(
        netout_of(third),
        vec![
            format!("-A {netout} -j {asg}"),
            format!("-A {netout} -j REJECT --reject-with icmp-port-unreachable"),
        ],
    );
    // The first container keeps its static rules: nothing but the agent changes a running
    // container's egress.
    assert!(netout_of(first).iter().any(|l| l.ends_with(static_rule)));
    // And back to 405 (a downgrade): the static rules are written for the next container.
    cell.server
        .asg_status
        .store(405, std::sync::atomic::Ordering::SeqCst);
    let fourth = "dddd0000-1111-4222-8333-444455556666";
    let _ns4 = add_ok(&cell, fourth, &conf);
    assert!(netout_of(fourth).iter().any(|l| l.ends_with(static_rule)));
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn fifty_parallel_adds_then_dels() {
    let cell = Cell::new();
    let before = rules_and_chains();
    assert!(before.is_empty());
    let holders: Vec<NsHolder> = (0..50).map(|_| NsHolder::spawn().unwrap()).collect();
    let conf = cell.config(metadata(), a_runtime()).to_string();
    let ips: Vec<String> = std::thread::scope(|s| {
        let joins: Vec<_> = holders
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let (cell, conf) = (&cell, &conf);
                s.spawn(move || {
                    let o = cni(
                        &cell.cni_path,
                        "ADD",
                        &format!("container-{i:02}"),
                        h.path().to_str().unwrap(),
                        conf,
                        &[],
                    );
                    assert_eq!(o.code, 0, "ADD {i}: {} {}", o.stdout, o.stderr);
                    o.json()["ips"][0]["address"].as_str().unwrap().to_string()
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let mut distinct = ips.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 50, "IPs must be distinct: {ips:?}");
    let saved = save();
    for (i, ip) in ips.iter().enumerate() {
        let h = format!("container-{i:02}");
        for chain in [
            format!("input--{h}"),
            format!("netout--{h}"),
            format!("overlay--{h}"),
            format!("netout--{h}--log"),
            format!("netin--{h}"),
        ] {
            assert!(
                saved.contains(&format!(":{chain} ")),
                "missing chain {chain}"
            );
        }
        assert!(
            saved.contains(&format!("-A INPUT -s {ip} -j input--{h}")),
            "missing INPUT jump for {h}"
        );
        assert!(saved.contains(&format!(
            "-A POSTROUTING -s {ip} ! -d 10.255.0.0/16 ! -o silk-vtep -j MASQUERADE"
        )));
        assert!(saved.contains(&format!(
            "--to-destination {}:8080",
            ip.trim_end_matches("/32")
        )));
    }
    assert_eq!(extra_links().len(), 50);

    let del_conf = cell
        .config(serde_json::Value::Null, serde_json::Value::Null)
        .to_string();
    std::thread::scope(|s| {
        for (i, h) in holders.iter().enumerate() {
            let (cell, conf) = (&cell, &del_conf);
            s.spawn(move || {
                let o = cni(
                    &cell.cni_path,
                    "DEL",
                    &format!("container-{i:02}"),
                    h.path().to_str().unwrap(),
                    conf,
                    &[],
                );
                assert_eq!(o.code, 0, "DEL {i}: {} {}", o.stdout, o.stderr);
            });
        }
    });
    assert_eq!(rules_and_chains(), before, "no chain or rule may remain");
    assert!(
        extra_links().is_empty(),
        "no interface may remain: {:?}",
        extra_links()
    );
    let ipam: Vec<_> = std::fs::read_dir(cell.path("host-local/ipam/silk"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    assert!(ipam.is_empty(), "IPAM files remain: {ipam:?}");
    assert_eq!(
        std::fs::read_to_string(cell.path("container-metadata/store.json")).unwrap(),
        "{}\n"
    );
    assert_eq!(
        std::fs::read_to_string(cell.path("silk/store.json")).unwrap(),
        "{}\n"
    );
}

/// Asserts a spec error with `code`, and that nothing was created.
fn assert_clean_failure(
    cell: &Cell,
    out: &common::Out,
    code: u64,
    msg_prefix: &str,
    before: &[String],
) {
    assert_eq!(out.code, 1, "must exit non-zero: {}", out.stdout);
    let v = out.json();
    assert_eq!(v["code"].as_u64(), Some(code), "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(
        msg.starts_with(msg_prefix),
        "msg {msg:?} does not start with {msg_prefix:?}"
    );
    assert_eq!(rules_and_chains(), before, "no rule may be written");
    assert!(extra_links().is_empty(), "no interface may be created");
    let ipam = cell.path("host-local/ipam/silk");
    let left = std::fs::read_dir(&ipam)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .count()
        })
        .unwrap_or(0);
    assert_eq!(left, 0, "no address may stay reserved");
    let store =
        std::fs::read_to_string(cell.path("container-metadata/store.json")).unwrap_or_default();
    assert!(
        store.is_empty() || store == "{}\n",
        "no store entry may remain: {store}"
    );
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn bad_input_gives_spec_errors_and_creates_nothing() {
    let cell = Cell::new();
    let before = rules_and_chains();
    assert!(before.is_empty());
    let ns = NsHolder::spawn().unwrap();
    let netns = ns.path().to_str().unwrap();
    let good = cell.config(metadata(), a_runtime());

    let o = cni(&cell.cni_path, "ADD", "h1", netns, "{not json", &[]);
    assert_clean_failure(
        &cell,
        &o,
        6,
        "decoding version from network config",
        &before,
    );

    let o = cni(
        &cell.cni_path,
        "ADD",
        "h1",
        netns,
        &good.to_string(),
        &["CNI_NETNS"],
    );
    assert_clean_failure(
        &cell,
        &o,
        4,
        "required env variables [CNI_NETNS] missing",
        &before,
    );

    let mut v = good.clone();
    v["cniVersion"] = "9.9.9".into();
    let o = cni(&cell.cni_path, "ADD", "h1", netns, &v.to_string(), &[]);
    assert_clean_failure(&cell, &o, 1, "incompatible CNI versions", &before);

    let mut v = good.clone();
    v["runtimeConfig"]["netOutRules"] = serde_json::json!([{"protocol": 1, "networks": [{"start": "nope", "end": "10.0.0.1"}], "ports": [{"start": 1, "end": 2}]}]);
    let o = cni(&cell.cni_path, "ADD", "h1", netns, &v.to_string(), &[]);
    assert_clean_failure(&cell, &o, 999, "invalid ip range", &before);

    let mut v = good.clone();
    v["dns_servers"] = serde_json::json!(["not-an-ip"]);
    let o = cni(&cell.cni_path, "ADD", "h1", netns, &v.to_string(), &[]);
    assert_clean_failure(&cell, &o, 999, "invalid DNS server \"not-an-ip\"", &before);

    // silk-daemon down: the delegate reports it; the wrapper rolls back and creates nothing.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let mut v = good.clone();
    v["delegate"]["daemonPort"] = dead_port.into();
    let o = cni(&cell.cni_path, "ADD", "h1", netns, &v.to_string(), &[]);
    assert_clean_failure(
        &cell,
        &o,
        999,
        "delegate call: discover network info",
        &before,
    );

    // A missing log directory is no reason to fail (the plugins' log files live under
    // /var/vcap/sys/log, absent on a test machine).
    let o = cni(&cell.cni_path, "ADD", "h1", netns, &good.to_string(), &[]);
    assert_eq!(o.code, 0, "{} {}", o.stdout, o.stderr);
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn gc_sweeps_what_the_runtime_no_longer_lists_and_nothing_else() {
    let cell = Cell::new();
    let add = |id: &str, ns: &NsHolder| {
        let conf = cell.config(metadata(), a_runtime()).to_string();
        let out = cni(
            &cell.cni_path,
            "ADD",
            id,
            ns.path().to_str().unwrap(),
            &conf,
            &[],
        );
        assert_eq!(out.code, 0, "ADD {id}: {} {}", out.stdout, out.stderr);
        out.json()["ips"][0]["address"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let keep_ns = NsHolder::spawn().unwrap();
    let keep_ip = add("keep-1", &keep_ns);
    let only_keep = rules_and_chains();
    let only_keep_links = extra_links();
    // gone-2: the runtime forgot it, its namespace still exists; gone-3: its namespace is gone
    // too (a garden crash), so its veth went with it.
    let ns2 = NsHolder::spawn().unwrap();
    add("gone-2", &ns2);
    {
        let ns3 = NsHolder::spawn().unwrap();
        add("gone-3", &ns3);
    }
    assert_ne!(rules_and_chains(), only_keep);

    let gc_conf = |valid: Option<serde_json::Value>| {
        let mut c = cell.config(serde_json::Value::Null, serde_json::Value::Null);
        let o = c.as_object_mut().unwrap();
        o.remove("metadata");
        o.remove("runtimeConfig");
        o.insert("cniVersion".into(), "1.1.0".into());
        if let Some(v) = valid {
            o.insert("cni.dev/valid-attachments".into(), v);
        }
        c.to_string()
    };
    // Without the list GC refuses and removes nothing.
    let before = rules_and_chains();
    let out = cni(&cell.cni_path, "GC", "", "", &gc_conf(None), &[]);
    assert_ne!(out.code, 0);
    assert_eq!(out.json()["code"], 7, "{}", out.stdout);
    assert_eq!(rules_and_chains(), before);

    let valid = serde_json::json!([{"containerID": "keep-1", "ifname": "eth0"}]);
    let out = cni(
        &cell.cni_path,
        "GC",
        "",
        "",
        &gc_conf(Some(valid.clone())),
        &[],
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, ""),
        "GC: {}",
        out.stderr
    );
    assert_eq!(
        rules_and_chains(),
        only_keep,
        "GC must leave exactly keep-1's rules"
    );
    assert_eq!(extra_links(), only_keep_links);
    let store: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(cell.path("container-metadata/store.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        store.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["keep-1"]
    );
    let mut ipam: Vec<String> = std::fs::read_dir(cell.path("host-local/ipam/silk"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    ipam.sort();
    assert_eq!(ipam, vec![keep_ip.trim_end_matches("/32").to_string()]);
    let silk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cell.path("silk/store.json")).unwrap())
            .unwrap();
    for e in silk.as_object().unwrap().values() {
        assert_eq!(e["ip"].as_str(), keep_ip.strip_suffix("/32"), "{silk}");
    }
    let reqs = cell.server.requests.lock().unwrap().clone();
    for gone in ["gone-2", "gone-3"] {
        assert!(reqs.iter().any(|l| l.starts_with(&format!(
            "GET /force-orphaned-asgs-cleanup?container={gone} "
        ))));
    }
    // A second GC finds nothing to do.
    let out = cni(&cell.cni_path, "GC", "", "", &gc_conf(Some(valid)), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rules_and_chains(), only_keep);
}

/// DEL through the binary as libcni calls it (no runtime injections), which must succeed.
fn del_ok(cell: &Cell, handle: &str, ns: &NsHolder) {
    let mut conf = cell.config(serde_json::Value::Null, serde_json::Value::Null);
    conf.as_object_mut().unwrap().remove("metadata");
    conf.as_object_mut().unwrap().remove("runtimeConfig");
    let d = cni(
        &cell.cni_path,
        "DEL",
        handle,
        ns.path().to_str().unwrap(),
        &conf.to_string(),
        &[],
    );
    assert_eq!(d.code, 0, "DEL {handle}: {}", d.stderr);
}

/// The IPAM reservations of the cell (addresses only), sorted.
fn reservations(cell: &Cell) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cell.path("host-local/ipam/silk"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn an_add_whose_chain_names_belong_to_a_live_container_fails_and_changes_nothing() {
    // Two handles sharing their first 28 characters map to the same chain names. The second
    // ADD must fail with a CNI error naming both and leave the first container as it was
    // (upstream fails it too; flushing the first container's chains would drop its DNAT).
    let cell = Cell::new();
    let conf = cell.config(metadata(), a_runtime()).to_string();
    for (dynamic, first, second) in [
        (
            false,
            "c1a5b000-0000-4000-8000-00000000000a",
            "c1a5b000-0000-4000-8000-00000000000b",
        ),
        (
            true,
            "d1a5b000-0000-4000-8000-00000000000a",
            "d1a5b000-0000-4000-8000-00000000000b",
        ),
    ] {
        cell.server.asg_status.store(
            if dynamic { 200 } else { 405 },
            std::sync::atomic::Ordering::SeqCst,
        );
        cell.server
            .acts_as_agent
            .store(dynamic, std::sync::atomic::Ordering::SeqCst);
        let ns1 = add_ok(&cell, first, &conf);
        let tables = rules_and_chains();
        let dnat = tables
            .iter()
            .find(|l| l.contains("-j DNAT") && l.contains("--dport 61000"))
            .cloned();
        assert!(
            dnat.is_some(),
            "the first container's DNAT rule: {tables:?}"
        );
        let store = std::fs::read_to_string(cell.path("container-metadata/store.json")).unwrap();
        let version =
            std::fs::read_to_string(cell.path("container-metadata/store.json_version")).unwrap();
        let links = extra_links();
        let ipam = reservations(&cell);
        let asked = cell.server.requests.lock().unwrap().len();

        let ns2 = NsHolder::spawn().unwrap();
        let out = cni(
            &cell.cni_path,
            "ADD",
            second,
            ns2.path().to_str().unwrap(),
            &conf,
            &[],
        );
        assert_eq!(
            out.code, 1,
            "the ADD must fail: {} {}",
            out.stdout, out.stderr
        );
        let v = out.json();
        assert_eq!(v["code"], 999, "{v}");
        assert_eq!(v["cniVersion"], "1.0.0", "{v}");
        let msg = v["msg"].as_str().unwrap();
        let netout = silk_dataplane::iptables::ChainName::netout(second);
        assert!(
            msg.starts_with(&format!(
                "chain name clash: container {second} maps to chain "
            )) && msg.contains(netout.as_str())
                && msg.ends_with(&format!("of live container {first}")),
            "{msg}"
        );
        assert!(v["details"].as_str().is_some_and(|d| !d.is_empty()), "{v}");

        // Nothing of either container changed: tables, store, interfaces, addresses.
        assert_eq!(rules_and_chains(), tables, "no iptables change");
        assert_eq!(
            std::fs::read_to_string(cell.path("container-metadata/store.json")).unwrap(),
            store
        );
        assert_eq!(
            std::fs::read_to_string(cell.path("container-metadata/store.json_version")).unwrap(),
            version,
            "no store write"
        );
        assert_eq!(extra_links(), links, "no delegate ADD left behind");
        assert_eq!(reservations(&cell), ipam, "no address reserved");
        assert_eq!(
            cell.server.requests.lock().unwrap().len(),
            asked,
            "the agent is not asked either"
        );

        // The first container's DEL still removes everything it has.
        del_ok(&cell, first, &ns1);
        // Left: only what the agent owns (its `asg-` chain, removed by its orphan cleanup,
        // which this fake agent does not do).
        let asg = silk_dataplane::iptables::ChainName::asg(first);
        let left = rules_and_chains();
        assert!(
            left.iter().all(|l| dynamic && l.contains(asg.as_str())),
            "{left:?}"
        );
        for l in left.iter().filter(|l| l.starts_with(":")) {
            let chain = l[1..].split_whitespace().next().unwrap();
            silk_testkit::netns::run_ok(&["iptables", "-F", chain]).unwrap();
            silk_testkit::netns::run_ok(&["iptables", "-X", chain]).unwrap();
        }
        // Now the second handle's chains are free.
        let ns2 = add_ok(&cell, second, &conf);
        del_ok(&cell, second, &ns2);
    }
}

/// ip6tables-save of this namespace's filter table, rules only.
fn save6() -> Vec<String> {
    silk_testkit::netns::run_ok(&["ip6tables-save", "-t", "filter"])
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("-A ") || (l.starts_with(':') && l.contains(" - ")))
        .map(|l| l.split(" [").next().unwrap().to_string())
        .collect()
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn ipv6_egress_end_to_end_through_both_plugins() {
    let cell = Cell::with_daemon(
        r#"{"overlay_subnet":"10.255.30.0/24","mtu":1450,"ipv6_prefix":"2001:db8:ab::/64"}"#,
    );
    let v4_before = rules_and_chains();
    let v6_before = save6();
    let ns = NsHolder::spawn().unwrap();
    let netns = ns.path().to_str().unwrap();
    let mut conf = cell.config(metadata(), a_runtime());
    conf["enable_ipv6"] = true.into();
    let out = cni(
        &cell.cni_path,
        "ADD",
        "v6-handle",
        netns,
        &conf.to_string(),
        &[],
    );
    assert_eq!(out.code, 0, "ADD failed: {} {}", out.stdout, out.stderr);
    let r = out.json();
    assert_eq!(r["ips"][1]["address"], "2001:db8:ab::2/128", "{r}");
    assert_eq!(r["ips"][1]["gateway"], "fe80::1");

    let rules = save6();
    for want in [
        "-A INPUT -s 2001:db8:ab::2/128 -j input--v6-handle",
        "-A FORWARD -s 2001:db8:ab::2/128 -o eth0 -j netout--v6-handle",
        "-A FORWARD -j overlay--v6-handle",
        "-A input--v6-handle -j REJECT --reject-with icmp6-port-unreachable",
        "-A overlay--v6-handle -d 2001:db8:ab::2/128 -j REJECT --reject-with icmp6-port-unreachable",
    ] {
        assert!(rules.iter().any(|l| l == want), "missing {want:?} in {rules:#?}");
    }
    // The IPv4 side is as without IPv6: NAT and DNAT stay IPv4 only.
    assert!(save().contains("-A INPUT -s 10.255.30.2/32 -j input--v6-handle"));
    let store: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(cell.path("container-metadata/store.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(store["v6-handle"]["ipv6"], "2001:db8:ab::2");
    // The cell reaches the container over IPv6, and the reply passes the container's input
    // chain as established traffic.
    silk_testkit::netns::run_ok(&["ping", "-6", "-c1", "-W2", "2001:db8:ab::2"]).unwrap();

    let mut del_conf = cell.config(serde_json::Value::Null, serde_json::Value::Null);
    del_conf["enable_ipv6"] = true.into();
    del_conf["prevResult"] = r;
    let d = cni(
        &cell.cni_path,
        "DEL",
        "v6-handle",
        netns,
        &del_conf.to_string(),
        &[],
    );
    assert_eq!(d.code, 0, "DEL failed: {}", d.stderr);
    assert_eq!(
        save6(),
        v6_before,
        "DEL must leave the IPv6 tables as they were"
    );
    assert_eq!(rules_and_chains(), v4_before);
    assert!(!cell.path("host-local/ipam/silk/2001:db8:ab::2").exists());
}
