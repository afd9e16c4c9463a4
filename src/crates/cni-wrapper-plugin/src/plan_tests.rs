//! Table tests of the pure ADD/DEL planner.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::config::WrapperConfig;

pub(crate) const HANDLE: &str = "7b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e";
pub(crate) const NETOUT: &str = "netout--7b8c9d0e-1f2a-4b3c-8";

/// The wrapper config of the unit tests: one static ASG rule, optional ASG logging and
/// outbound limiting with logging (which adds the `--rl-log` chain).
pub(crate) fn config(asg_logging: bool, rl_log: bool) -> WrapperConfig {
    let text = serde_json::json!({
        "cniVersion": "1.0.0", "name": "cni-wrapper", "type": "cni-wrapper-plugin",
        "datastore": "/unused/store.json", "iptables_lock_file": "/unused/iptables.lock",
        "instance_address": "10.0.16.15", "underlay_ips": ["10.0.16.15"],
        "no_masquerade_cidr_range": "10.255.0.0/16",
        "ingress_tag": "ffff0000", "vtep_name": "silk-vtep",
        "iptables_denied_logs_per_sec": 1, "iptables_accepted_udp_logs_per_sec": 100,
        "iptables_asg_logging": asg_logging,
        "policy_agent_force_poll_address": "127.0.0.1:8722",
        "dns_servers": ["169.254.0.53", "8.8.8.8"],
        "outbound_connections": {"limit": rl_log, "logging": rl_log, "burst": 1000, "rate_per_sec": 100},
        "delegate": {"cniVersion": "1.0.0", "name": "silk", "type": "silk-cni"},
        "runtimeConfig": {
            "portMappings": [{"container_port": 8080, "host_port": 61000}],
            "netOutRules": [
                {"protocol": 1, "networks": [{"start": "10.10.0.0", "end": "10.10.255.255"}], "ports": [{"start": 443, "end": 443}]},
                {"protocol": 1, "networks": [{"start": "2001:db8::1", "end": "2001:db8::9"}], "ports": [{"start": 80, "end": 80}]},
                {"protocol": 2, "networks": [{"start": "10.20.0.0", "end": "10.20.0.255"}]}
            ]
        }
    });
    WrapperConfig::parse(text.to_string().as_bytes()).unwrap()
}

pub(crate) fn request(handle: &str, asg_logging: bool, enable_ipv6: bool) -> AddRequest {
    let cfg = config(asg_logging, false);
    AddRequest {
        handle: handle.into(),
        opts: RuleOptions::from_config(&cfg).unwrap(),
        underlay_ifs: vec!["eth0".into()],
        port_mappings: cfg.runtime_config.port_mappings.clone(),
        workload: "app".into(),
        masq_exclude: Some("10.255.0.0/16".into()),
        net_out_rules: cfg.runtime_config.net_out_rules.clone(),
        metadata: serde_json::json!({"space_id": "sp", "policy_group_id": "pg"}),
        enable_ipv6,
        dns_servers: cfg.dns_servers.clone(),
    }
}

/// A delegate result with `ips` (IPv4 and/or IPv6 `/32`, `/128` addresses).
pub(crate) fn result(ips: &[&str]) -> CniResult {
    let ips: Vec<Value> = ips
        .iter()
        .map(|a| serde_json::json!({"address": a, "interface": 1}))
        .collect();
    CniResult::from_value(&serde_json::json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "s-010255030004", "mac": "aa:aa:0a:ff:1e:04"}, {"name": "eth0", "sandbox": "/ns"}],
        "ips": ips,
        "dns": {"nameservers": ["1.1.1.1"]},
    }))
    .unwrap()
}

fn answer(status: u16, body: &str) -> AgentAnswer {
    AgentAnswer {
        status,
        body: body.into(),
    }
}

#[test]
fn the_probe_answer_names_the_mode() {
    let table = [
        (405, Ok(AsgMode::Static)),
        (400, Ok(AsgMode::Dynamic)),
        (200, Ok(AsgMode::Dynamic)),
        (500, Err("asg sync returned 500 with message: b")),
        (404, Err("asg sync returned 404 with message: b")),
    ];
    for (status, want) in table {
        let got = mode_from_probe(&answer(status, "b")).map_err(|e| e.msg);
        assert_eq!(got, want.map_err(String::from), "status {status}");
    }
}

#[test]
fn agent_answers_checked_against_what_the_add_expects() {
    let s = Expect::Mode(AsgMode::Static);
    let d = Expect::Mode(AsgMode::Dynamic);
    let table: [(Expect, u16, Result<(), &str>); 8] = [
        (Expect::PolicyPoll, 200, Ok(())),
        (
            Expect::PolicyPoll,
            503,
            Err("vpa response code: 503 with message: b"),
        ),
        (s, 405, Ok(())),
        (d, 200, Ok(())),
        (
            s,
            200,
            Err("asg sync returned 200 with message: b: vxlan-policy-agent changed its ASG mode during the ADD (it was static)"),
        ),
        (
            d,
            405,
            Err("asg sync returned 405 with message: b: vxlan-policy-agent changed its ASG mode during the ADD (it was dynamic)"),
        ),
        (d, 500, Err("asg sync returned 500 with message: b")),
        (s, 400, Err("asg sync returned 400 with message: b")),
    ];
    for (expect, status, want) in table {
        let got = check_answer(expect, &answer(status, "b")).map_err(|e| e.msg);
        assert_eq!(got, want.map_err(String::from), "{expect:?} {status}");
    }
    assert!(check_cleanup(&answer(200, "")).is_ok());
    assert!(check_cleanup(&answer(405, "")).is_ok());
    assert_eq!(
        check_cleanup(&answer(500, "boom")).unwrap_err().msg,
        "asg cleanup returned 500 with message: boom"
    );
}

fn entries(handles: &[&str]) -> Entries {
    handles
        .iter()
        .map(|h| {
            (
                h.to_string(),
                ports::store_entry(h, "10.255.30.9", None, Value::Null),
            )
        })
        .collect()
}

#[test]
fn a_clash_is_another_live_handle_with_one_of_our_chain_names() {
    let opts = |rl: bool| RuleOptions::from_config(&config(false, rl)).unwrap();
    let o = opts(false);
    // Sharing the first 28 characters: every chain name is shared.
    let twin = "7b8c9d0e-1f2a-4b3c-8d4e-5f6a0000ffff";
    let c = find_clash(HANDLE, &o, &entries(&["aaaa", twin])).unwrap();
    assert_eq!(c.other, twin);
    assert_eq!(
        c.chains,
        [
            "netin--7b8c9d0e-1f2a-4b3c-8d",
            "input--7b8c9d0e-1f2a-4b3c-8d",
            NETOUT,
            "overlay--7b8c9d0e-1f2a-4b3c-",
            "netout--7b8c9d0e-1f2a-4--log"
        ]
    );
    assert_eq!(
        c.message(),
        format!(
            "chain name clash: container {HANDLE} maps to chain netin--7b8c9d0e-1f2a-4b3c-8d, \
             input--7b8c9d0e-1f2a-4b3c-8d, {NETOUT}, overlay--7b8c9d0e-1f2a-4b3c-, \
             netout--7b8c9d0e-1f2a-4--log of live container {twin}"
        )
    );
    // Sharing 15 characters: the log chain alone.
    let c = find_clash(HANDLE, &o, &entries(&["7b8c9d0e-1f2a-4ccc"])).unwrap();
    assert_eq!(c.chains, ["netout--7b8c9d0e-1f2a-4--log"]);
    // Sharing 12: only the rate-limit log chain, which exists only when configured.
    let short = "7b8c9d0e-1f2z";
    assert_eq!(find_clash(HANDLE, &o, &entries(&[short])), None);
    let c = find_clash(HANDLE, &opts(true), &entries(&[short])).unwrap();
    assert_eq!(c.chains, ["netout--7b8c9d0e-1f2--rl-log"]);
    // Our own entry (a repeated ADD) and unrelated handles are no clash.
    assert_eq!(
        find_clash(HANDLE, &o, &entries(&[HANDLE, "c0de0000-1ab0"])),
        None
    );
    assert_eq!(find_clash(HANDLE, &o, &Entries::new()), None);
}

/// The plan of an ADD of [`HANDLE`] given 10.255.30.4.
fn planned(mode: AsgMode, asg_logging: bool) -> AddPlan {
    plan_add(
        &request(HANDLE, asg_logging, false),
        mode,
        &result(&["10.255.30.4/32"]),
    )
    .unwrap()
}

fn restores(p: &AddPlan) -> Vec<(Family, &str)> {
    p.steps
        .iter()
        .filter_map(|s| match s {
            AddStep::Restore { family, payload } => Some((*family, payload.as_str())),
            _ => None,
        })
        .collect()
}

pub(crate) fn netout_lines(payload: &str) -> Vec<&str> {
    payload
        .lines()
        .filter(|l| l.starts_with(&format!("-A {NETOUT} ")))
        .collect()
}

pub(crate) const REJECT: &str =
    "-A netout--7b8c9d0e-1f2a-4b3c-8 -j REJECT --reject-with icmp-port-unreachable";
const STATIC_ACCEPT: &str = "-A netout--7b8c9d0e-1f2a-4b3c-8 -p tcp -m iprange --dst-range 10.10.0.0-10.10.255.255 -m tcp --dport 443 -j ACCEPT";

#[test]
fn static_add_is_store_one_restore_with_the_static_rules_then_the_agent() {
    let p = planned(AsgMode::Static, false);
    assert_eq!(p.steps.len(), 4);
    let AddStep::StoreAdd(entry) = &p.steps[0] else {
        panic!("store first: {:?}", p.steps[0])
    };
    assert_eq!(
        (entry.handle.as_str(), entry.ip.as_str()),
        (HANDLE, "10.255.30.4")
    );
    assert_eq!(entry.ipv6.as_deref(), Some(""));
    assert_eq!(entry.metadata["space_id"], "sp");
    let r = restores(&p);
    assert_eq!(r.len(), 1, "one restore");
    assert_eq!(r[0].0, Family::V4);
    let lines = netout_lines(r[0].1);
    assert_eq!(
        lines,
        [
            "-A netout--7b8c9d0e-1f2a-4b3c-8 -m state --state RELATED,ESTABLISHED -j ACCEPT",
            "-A netout--7b8c9d0e-1f2a-4b3c-8 -p tcp -m state --state INVALID -j DROP",
            STATIC_ACCEPT,
            REJECT
        ]
    );
    // Every other chain is in the same payload: DNAT, MARK and MASQUERADE too.
    for needle in [
        "*nat\n",
        "*mangle\n",
        "-j DNAT --to-destination 10.255.30.4:8080",
        "-j MASQUERADE",
    ] {
        assert!(r[0].1.contains(needle), "{needle} missing");
    }
    assert_eq!(
        p.steps[2..],
        [
            AddStep::Agent {
                path: POLICY_POLL.into(),
                expect: Expect::PolicyPoll
            },
            AddStep::Agent {
                path: format!("/force-asgs-for-container?container={HANDLE}"),
                expect: Expect::Mode(AsgMode::Static)
            },
        ]
    );
    assert_eq!(p.result.dns.nameservers, ["169.254.0.53", "8.8.8.8"]);
    // A UDP rule without ports cannot be expressed; upstream says so on stderr.
    assert_eq!(p.dropped.len(), 1, "{:?}", p.dropped);
    assert!(p.dropped[0].starts_with("UDP/TCP rule must specify ports: "));
}

#[test]
fn dynamic_add_leaves_netout_closed_for_the_agent() {
    let p = planned(AsgMode::Dynamic, false);
    let r = restores(&p);
    assert_eq!(r.len(), 1);
    assert_eq!(netout_lines(r[0].1), [REJECT]);
    assert!(p.dropped.is_empty(), "static conversion is not used");
    assert_eq!(
        p.steps.last().unwrap(),
        &AddStep::Agent {
            path: format!("/force-asgs-for-container?container={HANDLE}"),
            expect: Expect::Mode(AsgMode::Dynamic)
        }
    );
    // With ASG logging the closed chain keeps the DENY_ log line first.
    let p = planned(AsgMode::Dynamic, true);
    assert_eq!(
        netout_lines(restores(&p)[0].1),
        [
            "-A netout--7b8c9d0e-1f2a-4b3c-8 -m limit --limit 1/sec --limit-burst 1 -j LOG --log-prefix \"DENY_7b8c9d0e-1f2a-4b3c-8d4e \"",
            REJECT
        ]
    );
}

#[test]
fn ipv6_adds_one_restore_per_family() {
    let res = result(&["10.255.30.4/32", "2001:db8:ab::4/128"]);
    for (mode, static_v6) in [(AsgMode::Static, true), (AsgMode::Dynamic, false)] {
        let p = plan_add(&request(HANDLE, false, true), mode, &res).unwrap();
        let r = restores(&p);
        assert_eq!(
            r.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            [Family::V4, Family::V6]
        );
        assert!(r[1].1.contains("-A INPUT -s 2001:db8:ab::4/128 -j input--"));
        assert_eq!(
            r[1].1.contains("--dst-range 2001:db8::1-2001:db8::9"),
            static_v6,
            "{mode:?}"
        );
        let AddStep::StoreAdd(entry) = &p.steps[0] else {
            panic!()
        };
        assert_eq!(entry.ipv6.as_deref(), Some("2001:db8:ab::4"));
    }
    // IPv6 off: the address is not wired.
    let p = plan_add(&request(HANDLE, false, false), AsgMode::Static, &res).unwrap();
    assert_eq!(restores(&p).len(), 1);
}

#[test]
fn a_result_without_ipv4_is_an_error() {
    let e = plan_add(
        &request(HANDLE, false, true),
        AsgMode::Static,
        &result(&["2001:db8:ab::4/128"]),
    )
    .unwrap_err();
    assert_eq!(e.msg, "delegate call: result has no IPv4 address");
}

#[test]
fn del_takes_addresses_from_the_store_then_the_cached_result() {
    let entry = ports::store_entry(HANDLE, "10.255.30.4", Some("2001:db8::4"), Value::Null);
    let prev = result(&["10.255.30.7/32"]);
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    let table = [
        (
            Some(&entry),
            None,
            false,
            vec![
                (Family::V4, ip("10.255.30.4")),
                (Family::V6, ip("2001:db8::4")),
            ],
        ),
        (
            None,
            Some(&prev),
            false,
            vec![(Family::V4, ip("10.255.30.7"))],
        ),
        (None, None, false, vec![(Family::V4, None)]),
        (
            None,
            None,
            true,
            vec![(Family::V4, None), (Family::V6, None)],
        ),
    ];
    for (entry, prev, v6, want) in table {
        let p = plan_del(HANDLE, entry, prev, v6, None);
        let got: Vec<(Family, Option<IpAddr>)> =
            p.families.iter().map(|f| (f.family, f.ip)).collect();
        assert_eq!(got, want);
        assert!(p.families.iter().all(|f| f.expected.is_none()), "no facts");
        assert_eq!(
            p.cleanup_path,
            format!("/force-orphaned-asgs-cleanup?container={HANDLE}")
        );
    }
}

pub(crate) fn del_facts() -> DelFacts {
    let r = request(HANDLE, false, false);
    DelFacts {
        opts: r.opts,
        underlay_ifs: r.underlay_ifs,
        masq_exclude: r.masq_exclude,
    }
}

#[test]
fn del_rebuilds_what_the_add_wrote_when_address_and_facts_are_known() {
    let facts = del_facts();
    let entry = ports::store_entry(HANDLE, "10.255.30.4", None, Value::Null);
    let p = plan_del(HANDLE, Some(&entry), None, false, Some(&facts));
    let expected = p.families[0].expected.as_deref().unwrap();
    // Exactly the builtin-chain rules the ADD appended, by text, nat first.
    let added = plan_add(
        &request(HANDLE, false, false),
        AsgMode::Static,
        &result(&["10.255.30.4/32"]),
    )
    .unwrap();
    let AddStep::Restore { payload, .. } = &added.steps[1] else {
        panic!()
    };
    for builtin in ["INPUT", "FORWARD", "PREROUTING", "POSTROUTING"] {
        let prefix = format!("-A {builtin} ");
        for line in payload.lines().filter(|l| l.starts_with(&prefix)) {
            let del = line.replacen("-A ", "-D ", 1);
            assert!(expected.contains(&del), "{del} missing from {expected}");
        }
    }
    assert!(expected.starts_with("*nat\n"), "{expected}");
    // Without an address there is nothing to rebuild: the tables are read.
    let p = plan_del(HANDLE, None, None, false, Some(&facts));
    assert_eq!(p.families[0].expected, None);
}
