//! Property tests of the wrapper's outside inputs: its stdin config (the conflist entry plus
//! garden's `metadata` and `runtimeConfig`: port mappings and static ASGs), the container handle
//! its chain names come from, and the iptables-save text DEL and GC plan removals from. Every
//! input gets a result or an error, never a panic; every payload planned from an accepted
//! config renders lines iptables-restore reads as meant (each rule parses back to itself).

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use serde_json::Value;
use silk_dataplane::iptables::{ChainName, Payload, SavedTable};
use silk_testkit::fuzz;

use crate::config::WrapperConfig;
use crate::netrules::asg::{self, NetOutRule};
use crate::netrules::options::{self, RuleOptions};
use crate::netrules::{self, Container, FilterChains};

const CONFLIST_PLUGIN: &str = r#"{
  "cniVersion": "1.0.0", "name": "cni-wrapper", "type": "cni-wrapper-plugin",
  "datastore": "/var/vcap/data/container-metadata/store.json",
  "datastore_file_owner": "vcap", "datastore_file_group": "vcap",
  "iptables_lock_file": "/var/vcap/data/garden-cni/iptables.lock",
  "instance_address": "10.0.16.15", "no_masquerade_cidr_range": "10.255.0.0/16",
  "temporary_underlay_interface_names": ["eth0"], "underlay_ips": ["10.0.16.15"],
  "iptables_asg_logging": true, "iptables_c2c_logging": true,
  "iptables_denied_logs_per_sec": 1, "iptables_accepted_udp_logs_per_sec": 100,
  "ingress_tag": "ffff0000", "vtep_name": "silk-vtep",
  "policy_agent_force_poll_address": "127.0.0.1:8722",
  "dns_servers": ["169.254.0.53"], "host_tcp_services": ["169.254.0.2:9001"],
  "host_udp_services": ["169.254.0.2:53"],
  "deny_networks": {"always": ["10.100.0.0/16"], "running": ["10.200.0.5"], "staging": []},
  "delegate": {"name": "silk", "type": "silk-cni", "daemonPort": 23954,
               "dataDir": "/var/vcap/data/host-local", "datastore": "/var/vcap/data/silk/store.json", "mtu": 0},
  "outbound_connections": {"limit": true, "logging": true, "burst": 1000, "rate_per_sec": 100, "dry_run": false},
  "metadata": {"container_workload": "app", "policy_group_id": "pg", "space_id": "sp"},
  "runtimeConfig": {
    "portMappings": [{"container_port": 8080, "host_port": 61000}],
    "netOutRules": [
      {"protocol": 1, "networks": [{"start": "10.10.0.0", "end": "10.10.255.255"}], "ports": [{"start": 443, "end": 443}], "log": true},
      {"protocol": 3, "networks": [{"start": "0.0.0.0", "end": "255.255.255.255"}], "icmps": {"type": 8, "code": 0}},
      {"networks": [{"start": "2001:db8::", "end": "2001:db8::ff"}]}
    ]
  }
}"#;

/// Every key of the conflist entry, metadata and runtimeConfig included.
fn config_keys() -> &'static [&'static str] {
    fuzz::keys_of(&fixture())
}

fn fixture() -> Value {
    serde_json::from_str(CONFLIST_PLUGIN).unwrap()
}

/// A container ID as the CNI harness lets it through (libcni's ValidateContainerID).
fn handle() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}"
}

/// The payload's text is what was planned: well-formed lines, each planned rule exactly once.
fn assert_well_formed(p: &Payload) -> Result<(), TestCaseError> {
    let appended: Vec<String> = p
        .tables
        .iter()
        .filter(|t| !t.is_empty())
        .flat_map(|t| t.append.iter().map(|r| r.append_line()))
        .collect();
    fuzz::check_restore_text(&p.render(), &appended).map_err(TestCaseError::fail)
}

/// The container the ADD would wire for `cfg`, as the plugin builds it (the underlay
/// interfaces from the config's names, the masquerade exclusion from its range).
fn container(cfg: &WrapperConfig, handle: String, ip: IpAddr) -> Option<Container> {
    Some(Container {
        handle,
        ip,
        underlay_ifs: cfg.temporary_underlay_interface_names.clone(),
        port_mappings: cfg.runtime_config.port_mappings.clone(),
        workload: cfg.workload(),
        masq_exclude: options::no_masq_range(cfg).ok()?,
    })
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn any_stdin_is_a_config_or_an_error(stdin in fuzz::json_input(fixture(), config_keys())) {
        let Ok(cfg) = WrapperConfig::parse(&stdin) else {
            return Ok(());
        };
        let _ = RuleOptions::from_config(&cfg);
        let _ = options::no_masq_range(&cfg);
        let _ = (cfg.daemon_port(), cfg.workload(), cfg.delegate_type());
        // The delegate gets its object back as JSON, cniVersion filled in.
        let delegate: Value = serde_json::from_slice(&cfg.delegate_bytes()).unwrap();
        prop_assert!(delegate.get("cniVersion").is_some());
        for family in [asg::Family::V4, asg::Family::V6] {
            let _ = asg::convert(&cfg.runtime_config.net_out_rules, family, cfg.iptables_asg_logging);
        }
    }

    #[test]
    fn accepted_configs_plan_well_formed_payloads(
        stdin in fuzz::mutated_json(fixture(), config_keys()),
        handle in handle(),
        ip in any::<u32>(),
        v6 in any::<u128>(),
    ) {
        let Ok(cfg) = WrapperConfig::parse(stdin.to_string().as_bytes()) else {
            return Ok(());
        };
        let Ok(opts) = RuleOptions::from_config(&cfg) else {
            return Ok(());
        };
        let Some(c) = container(&cfg, handle, IpAddr::V4(Ipv4Addr::from(ip))) else {
            return Ok(());
        };
        let rules = &cfg.runtime_config.net_out_rules;
        let Ok(v4) = asg::convert(rules, asg::Family::V4, opts.asg_logging) else {
            return Ok(());
        };
        for asgs in [None, Some(v4.rules.as_slice())] {
            if let Ok(p) = netrules::plan_add(&opts, &c, asgs) {
                assert_well_formed(&p)?;
                // DEL plans from what the tables show: here, what the ADD wrote.
                assert_well_formed(&netrules::plan_del(&c.handle, Some(c.ip), &p.render()))?;
            }
        }
        assert_well_formed(&netrules::plan_del_expected(&opts, &c))?;
        let c6 = Container { ip: IpAddr::V6(v6.into()), ..c };
        let v6_rules = asg::convert(rules, asg::Family::V6, opts.asg_logging).unwrap().rules;
        for asgs in [None, Some(v6_rules.as_slice())] {
            assert_well_formed(&netrules::plan_add_v6(&opts, &c6, asgs))?;
        }
    }

    #[test]
    fn any_net_out_rules_convert_or_fail(
        rules in fuzz::mutated_json(fixture()["runtimeConfig"]["netOutRules"].clone(), config_keys()),
        log in any::<bool>(),
    ) {
        let Ok(rules) = serde_json::from_value::<Vec<NetOutRule>>(rules) else {
            return Ok(());
        };
        for family in [asg::Family::V4, asg::Family::V6] {
            if let Ok(c) = asg::convert(&rules, family, log) {
                for (r, _) in &c.rules {
                    prop_assert!(!r.contains('\n') && !r.contains('\r'), "{:?}", r);
                }
            }
        }
    }

    #[test]
    fn chain_names_of_any_handle_are_valid(h in prop_oneof![handle(), any::<String>()]) {
        let f = FilterChains::for_handle(&h);
        for c in [&f.input, &f.netout, &f.overlay, &f.log, &f.rl_log, &ChainName::netin(&h)] {
            prop_assert!(ChainName::new(c.as_str()).is_ok(), "{:?}", c);
        }
        for c in netrules::chains_of(std::slice::from_ref(&h)) {
            prop_assert!(ChainName::new(&c).is_ok(), "{:?}", c);
        }
    }

    #[test]
    fn removals_planned_from_any_saved_text_are_well_formed(
        saved in fuzz::text_or_mutated(SAVED),
        handle in prop_oneof![Just("h".to_string()), handle()],
        ip in proptest::option::of(any::<u32>()),
        keep in prop::collection::vec(handle(), 0..3),
    ) {
        let ip = ip.map(|i| IpAddr::V4(Ipv4Addr::from(i)));
        let del = netrules::plan_del(&handle, ip, &saved);
        assert_well_formed_removal(&del, &saved)?;
        let keep = netrules::chains_of(&keep);
        let sweep = netrules::plan_sweep(&saved, netrules::CONTAINER_CHAIN_PREFIXES, &keep);
        assert_well_formed_removal(&sweep, &saved)?;
    }
}

/// iptables-save text with one container `h` wired (chains in filter, nat and mangle).
const SAVED: &str = "*mangle\n:PREROUTING ACCEPT [0:0]\n:netin--h - [0:0]\n-A PREROUTING -j netin--h\n\
    COMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:netin--h - [0:0]\n\
    -A PREROUTING -j netin--h\n-A POSTROUTING -s 10.255.30.2/32 ! -d 10.255.0.0/16 ! -o silk-vtep -j MASQUERADE\n\
    COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:input--h - [0:0]\n:netout--h - [0:0]\n\
    :netout--h--log - [0:0]\n:overlay--h - [0:0]\n:asg-h - [0:0]\n-A INPUT -s 10.255.30.2/32 -j input--h\n\
    -A FORWARD -s 10.255.30.2/32 -o eth0 -j netout--h\n-A FORWARD -j overlay--h\n\
    -A netout--h -p tcp -m iprange --dst-range 10.10.0.0-10.10.255.255 -g netout--h--log\n\
    -A asg-h -j netout--h--log\nCOMMIT\n";

/// A removal payload only deletes rules that are in `saved` and declares chains it saw there.
fn assert_well_formed_removal(p: &Payload, saved: &str) -> Result<(), TestCaseError> {
    for t in &p.tables {
        let s = SavedTable::parse(saved, t.table);
        for c in &t.declare {
            prop_assert!(s.has_chain(c.as_str()), "{} not in saved {:?}", c, t.table);
        }
        for r in &t.delete {
            prop_assert!(s.rules.contains(r), "{:?} not in saved", r);
        }
        for c in &t.remove {
            prop_assert!(t.declare.contains(c), "{} removed without a flush", c);
        }
    }
    Ok(())
}

/// Plain unit tests with the minimal inputs the properties above found.
mod regressions {
    use super::*;

    fn fixture_with(key: &str, value: Value) -> WrapperConfig {
        let mut v = fixture();
        v[key] = value;
        WrapperConfig::parse(v.to_string().as_bytes()).unwrap()
    }

    /// `outbound_connections.burst` near i64::MAX overflowed computing the hashlimit expiry: a
    /// panic in the plugin (a silently wrong number in a release build).
    #[test]
    fn huge_outbound_burst_does_not_overflow() {
        let cfg = fixture_with(
            "outbound_connections",
            serde_json::json!({"limit": true, "logging": false, "burst": i64::MAX, "rate_per_sec": 1}),
        );
        let opts = RuleOptions::from_config(&cfg).unwrap();
        let c = container(&cfg, "A".into(), IpAddr::V4(Ipv4Addr::UNSPECIFIED)).unwrap();
        let rules = netrules::netout_rules(&opts, &c, Some(&[]));
        assert!(rules.iter().any(|r| r
            .spec
            .contains("--hashlimit-htable-expire 9223372036854775807 ")));
        let cfg = fixture_with(
            "outbound_connections",
            serde_json::json!({"limit": true, "burst": i64::MAX, "rate_per_sec": i64::MAX}),
        );
        let opts = RuleOptions::from_config(&cfg).unwrap();
        let rules = netrules::netout_rules(&opts, &c, Some(&[]));
        assert!(rules
            .iter()
            .any(|r| r.spec.contains("--hashlimit-htable-expire 1000 ")));
    }

    /// An interface name with a newline (`temporary_underlay_interface_names`, `vtep_name`) was
    /// written into the restore payload as is, so iptables-restore read a line nobody planned
    /// (`" -j netout--0"`). Such names are refused before anything is touched.
    #[test]
    fn interface_names_with_whitespace_are_refused() {
        for (key, value) in [
            (
                "temporary_underlay_interface_names",
                serde_json::json!(["eth0\n-A INPUT -j ACCEPT"]),
            ),
            (
                "temporary_underlay_interface_names",
                serde_json::json!(["\n"]),
            ),
            ("vtep_name", serde_json::json!("silk vtep")),
            ("vtep_name", serde_json::json!("a-name-longer-than-15")),
        ] {
            let cfg = fixture_with(key, value.clone());
            assert!(
                matches!(
                    RuleOptions::from_config(&cfg),
                    Err(options::OptionsError::InterfaceName(_))
                ),
                "{key} = {value}"
            );
        }
        assert!(RuleOptions::from_config(&fixture_with("vtep_name", "silk-vtep".into())).is_ok());
    }
}
