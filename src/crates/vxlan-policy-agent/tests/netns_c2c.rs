//! The real binary against a fake policy server (HTTPS, client certificates required) and real
//! iptables, in a network namespace of the test's own; plus start-up failures that need no
//! privileges.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure by design

mod common;

use std::thread;
use std::time::Duration;

use common::*;
use serde_json::json;
use silk_testkit::certs::{ServerKey, TestCerts};
use silk_testkit::netns::run_ok;

// === tests ===

#[test]
#[ignore = "needs root: run via scripts/test"]
fn c2c_rules_are_swapped_in_on_change_and_kept_when_the_server_is_down() {
    let Bed {
        certs,
        dir,
        mut server,
    } = Bed::new(example_policies());
    // A rule of someone else's in FORWARD: the agent's jump must go before it.
    run_ok(&["iptables", "-N", "overlay--x"]).unwrap();
    run_ok(&["iptables", "-A", "FORWARD", "-j", "overlay--x"]).unwrap();

    let force_port = free_port();
    let debug_port = free_port();
    let config = write_config(dir.path(), &certs, server.port, force_port, debug_port);
    let mut agent = Agent::spawn(&config);

    // The first cycle runs one poll interval after start.
    wait_for("the first vpa chain", Duration::from_secs(20), || {
        assert!(agent.running(), "agent exited");
        vpa_chain().is_some()
    });
    let first = vpa_chain().unwrap();
    assert_eq!(vpa_lines(), expected(&first, &WORKED_EXAMPLE));
    let forward = run_ok(&["iptables", "-S", "FORWARD"]).unwrap();
    assert_eq!(
        forward.lines().collect::<Vec<_>>(),
        [
            "-P FORWARD ACCEPT",
            &format!("-A FORWARD -j {first}"),
            "-A FORWARD -j overlay--x"
        ]
    );
    let requests = server.requests();
    assert_eq!(
        requests[0], "GET /networking/v1/internal/policies",
        "start-up probe is unfiltered"
    );
    assert!(
        requests.contains(&format!(
            "GET /networking/v1/internal/policies?id={FRONTEND_APP},{SPACE},{BACKEND_APP}"
        )),
        "{requests:?}"
    );
    assert!(requests.contains(&"GET /networking/v1/internal/policies_last_updated".to_string()));

    // Unchanged policies: ticks skip, a forced cycle finds nothing to do.
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        http_get(force_port, "/force-policy-poll-cycle"),
        (200, String::new())
    );
    assert_eq!(vpa_chain().as_deref(), Some(first.as_str()));

    // The udp policy goes away: a forced cycle rewrites the backend group's chain; the main
    // chain keeps its name.
    {
        let mut s = server.state.lock().unwrap();
        s.policies.remove(1);
        s.last_updated += 1000;
    }
    assert_eq!(
        http_get(force_port, "/force-policy-poll-cycle"),
        (200, String::new())
    );
    let second = vpa_chain().expect("exactly one vpa chain after the change");
    assert_eq!(second, first);
    assert_eq!(vpa_lines(), expected(&second, &WORKED_EXAMPLE[..3]));
    assert_eq!(
        run_ok(&["iptables", "-S", "FORWARD"])
            .unwrap()
            .lines()
            .nth(1),
        Some(format!("-A FORWARD -j {second}").as_str())
    );

    // c2c logging switched on at runtime: the next forced cycle adds the LOG rule.
    assert_eq!(
        http(
            "PUT",
            debug_port,
            "/iptables-c2c-logging",
            r#"{"enabled": true}"#
        ),
        (200, "{\"enabled\":true}\n".to_string())
    );
    assert_eq!(http_get(force_port, "/force-policy-poll-cycle").0, 200);
    let logged = vpa_chain().unwrap();
    let log_rule = r#"-d 10.255.7.4/32 -p tcp -m tcp --dport 8080 -m mark --mark 0x1 -m conntrack --ctstate INVALID,NEW,UNTRACKED -j LOG --log-prefix "OK_0001_c3f1a2b4-77e0-4d2f-9 ""#;
    assert_eq!(
        vpa_lines(),
        expected(
            &logged,
            &[
                WORKED_EXAMPLE[0],
                WORKED_EXAMPLE[1],
                log_rule,
                WORKED_EXAMPLE[2]
            ]
        )
    );
    http(
        "PUT",
        debug_port,
        "/iptables-c2c-logging",
        r#"{"enabled": false}"#,
    );
    assert_eq!(http_get(force_port, "/force-policy-poll-cycle").0, 200);
    let second = vpa_chain().unwrap();
    assert_eq!(vpa_lines(), expected(&second, &WORKED_EXAMPLE[..3]));
    let (code, metrics) = http_get(debug_port, "/metrics");
    assert_eq!(code, 200);
    for name in [
        "totalPollTime",
        "iptablesEnforceTime",
        "policyServerPollTime",
        "containerMetadataTime",
    ] {
        assert!(
            metrics.contains(&format!("\n{name} ")),
            "{name} missing: {metrics}"
        );
    }

    // ASG syncing is disabled in this config: the wrapper's signal is a 405.
    assert_eq!(
        http_get(force_port, "/force-asgs-for-container?container=x").0,
        405
    );
    assert_eq!(
        http_get(force_port, "/force-orphaned-asgs-cleanup?container=x").0,
        405
    );
    assert_eq!(http_get(force_port, "/nothing-here").0, 404);

    // Policy server down: forced cycles fail with 500, ticks fail, the rules stay as they are.
    server.stop();
    let (code, body) = http_get(force_port, "/force-policy-poll-cycle");
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("get policies"), "{body}");
    thread::sleep(Duration::from_millis(2500));
    assert!(agent.running());
    assert_eq!(vpa_lines(), expected(&second, &WORKED_EXAMPLE[..3]));

    // SIGTERM: exit 0, rules left in place.
    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(vpa_lines(), expected(&second, &WORKED_EXAMPLE[..3]));
}

/// Trap 3 and drift: with `policies_last_updated` unchanged (no fetch), the logging switch,
/// new and deleted containers and chains changed by someone else take effect within one
/// poll; a malformed container stops nothing.
#[test]
#[ignore = "needs root: run via scripts/test"]
fn local_changes_and_kernel_drift_apply_within_one_poll_without_a_policy_change() {
    let Bed { certs, dir, server } = Bed::new(example_policies());
    let store = silk_dataplane::datastore::MetadataStore::new(dir.path().join("store.json"), None);
    server.state.lock().unwrap().last_updated = 1729785226123456000;
    let debug_port = free_port();
    let config = write_config(dir.path(), &certs, server.port, free_port(), debug_port);
    let mut agent = Agent::spawn(&config);
    let one_poll = Duration::from_secs(4);
    wait_for("the first vpa chain", Duration::from_secs(20), || {
        assert!(agent.running(), "agent exited");
        vpa_chain().is_some()
    });
    let chain = vpa_chain().unwrap();
    assert_eq!(vpa_lines(), expected(&chain, &WORKED_EXAMPLE));
    let fetches = || {
        server
            .requests()
            .iter()
            .filter(|r| r.starts_with("GET /networking/v1/internal/policies?id="))
            .count()
    };
    let fetched = fetches();

    // The logging switch, no forced cycle: LOG rules within one poll, and gone again.
    http(
        "PUT",
        debug_port,
        "/iptables-c2c-logging",
        r#"{"enabled": true}"#,
    );
    wait_for("LOG rules", one_poll, || {
        let l = vpa_lines();
        l.len() == 8 && l.iter().filter(|r| r.contains(" -j LOG ")).count() == 2
    });
    http(
        "PUT",
        debug_port,
        "/iptables-c2c-logging",
        r#"{"enabled": false}"#,
    );
    wait_for("LOG rules gone", one_poll, || {
        vpa_lines() == expected(&chain, &WORKED_EXAMPLE)
    });

    // Malformed containers next to a new valid one of the backend's app: the new one gets
    // its rules, the others keep theirs.
    store
        .add(
            "bad-ip",
            "10.255.7",
            None,
            json!({"policy_group_id": FRONTEND_APP}),
        )
        .unwrap();
    store
        .add(
            "bad-ports",
            "10.255.7.6",
            None,
            json!({"policy_group_id": 17, "ports": "x"}),
        )
        .unwrap();
    store
        .add(
            "second-backend",
            "10.255.7.5",
            None,
            json!({"policy_group_id": BACKEND_APP}),
        )
        .unwrap();
    wait_for("the second backend's rules", one_poll, || {
        vpa_lines()
            .iter()
            .filter(|l| l.contains("-d 10.255.7.5/32 ") || l.contains("-s 10.255.7.5/32 "))
            .count()
            == 3
    });
    assert!(agent.running());
    for rule in WORKED_EXAMPLE {
        assert!(
            vpa_lines().contains(&format!("-A {chain} {rule}")),
            "{rule}"
        );
    }

    // Both backends deleted: their jumps and the group chain are gone within one poll.
    store.delete(BACKEND).unwrap();
    store.delete("second-backend").unwrap();
    wait_for("the backend rules gone", one_poll, || {
        vpa_lines() == expected(&chain, &WORKED_EXAMPLE[..1]) && group_chains().is_empty()
    });
    assert_eq!(
        fetches(),
        fetched,
        "no policy fetch without a policy change"
    );

    // Back again, then someone else flushes the group chain, removes the jump, deletes the
    // chains: each is repaired within one poll.
    store_two_containers(dir.path());
    wait_for("the worked example", one_poll, || {
        vpa_lines() == expected(&chain, &WORKED_EXAMPLE)
    });
    let group = group_chains()[0].clone();
    run_ok(&["iptables", "-F", &group]).unwrap();
    wait_for("the flushed group chain", one_poll, || {
        vpa_lines() == expected(&chain, &WORKED_EXAMPLE)
    });
    run_ok(&["iptables", "-D", "FORWARD", "-j", &chain]).unwrap();
    wait_for("the jump", one_poll, || {
        vpa_lines() == expected(&chain, &WORKED_EXAMPLE)
    });
    // Both chains deleted at once (one restore, so no tick sits in between).
    let wipe = format!(
        "*filter\\n-D FORWARD -j {chain}\\n:{chain} - [0:0]\\n:{group} - [0:0]\\n-X {chain}\\n-X {group}\\nCOMMIT\\n"
    );
    run_ok(&[
        "sh",
        "-c",
        &format!("printf '{wipe}' | iptables-restore --noflush"),
    ])
    .unwrap();
    assert!(vpa_chain().is_none_or(|c| c != chain));
    wait_for("a new main chain", one_poll, || {
        vpa_chain().is_some_and(|c| vpa_lines() == expected(&c, &WORKED_EXAMPLE))
    });
    assert_eq!(
        fetches(),
        fetched,
        "no policy fetch without a policy change"
    );
    assert_eq!(agent.terminate(), Some(0));
}

#[test]
#[ignore = "needs root: run via scripts/test"]
fn overlay_ingress_and_disabled_policy_through_the_binary() {
    let Bed { certs, dir, server } = Bed::new(example_policies()[..1].to_vec());
    let path = write_config(dir.path(), &certs, server.port, free_port(), free_port());
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["enable_overlay_ingress_rules"] = json!(true);
    config["disable_container_network_policy"] = json!(true);
    config["overlay_network"] = json!("10.255.0.0/16");
    std::fs::write(&path, config.to_string()).unwrap();
    let mut agent = Agent::spawn(&path);
    wait_for("the vpa chain", Duration::from_secs(20), || {
        assert!(agent.running(), "agent exited");
        vpa_chain().is_some()
    });
    let chain = vpa_chain().unwrap();
    assert_eq!(
        vpa_lines(),
        expected(
            &chain,
            &[
                "-s 10.255.0.0/16 -d 10.255.0.0/16 -j ACCEPT",
                WORKED_EXAMPLE[0],
                WORKED_EXAMPLE[2],
                "-d 10.255.7.4/32 -p tcp -m tcp --dport 8080 -m mark --mark 0x6 -j ACCEPT",
            ]
        )
    );
    assert!(server
        .requests()
        .contains(&"PUT /networking/v1/internal/tags".to_string()));
    assert_eq!(
        server.state.lock().unwrap().bodies[0],
        r#"{"ID":"INGRESS_ROUTER","Type":"router"}"#
    );
    assert_eq!(agent.terminate(), Some(0));
}

#[test]
fn bad_config_exits_1_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.json");
    std::fs::write(
        &path,
        r#"{"poll_interval": 0, "vni": 0, "unknown_key": true}"#,
    )
    .unwrap();
    let err = agent_fails_to_start(&path);
    assert!(
        err.starts_with("cfnetworking: could not read config file"),
        "{err}"
    );
    for want in [
        "poll_interval",
        "vni",
        "policy_server_url",
        "overlay_network",
        "ca_cert_file",
    ] {
        assert!(err.contains(want), "{want} missing: {err}");
    }
}

#[test]
fn unreachable_policy_server_at_start_exits_1() {
    let certs = TestCerts::generate(ServerKey::Ecdsa).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on (bound, then closed).
    let closed = free_port();
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(write_config(
            dir.path(),
            &certs,
            closed,
            free_port(),
            free_port(),
        ))
        .unwrap(),
    )
    .unwrap();
    config["underlay_ips"] = json!([]);
    let path = dir.path().join("vxlan-policy-agent.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let err = agent_fails_to_start(&path);
    assert!(err.contains("policy-client-get-policies"), "{err}");
}
