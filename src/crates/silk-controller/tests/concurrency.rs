//! Races and pool limits (control-plane §2.3): two controller processes on one database,
//! exhaustion, reuse of expired leases oldest first.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use common::*;
use silk_testkit::certs::{ServerKey, TestCerts};

async fn two_controllers_200_concurrent_acquires_get_200_distinct_subnets(engine: Engine) {
    let db = TestDb::create(engine).await;
    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    // Default pool: 255 blocks, so 200 hosts fill it to 78 % and candidates collide often.
    let first = Controller::start(&db, &certs, &Settings::default()).await;
    let second = Controller::start(&db, &certs, &Settings::default()).await;
    let clients = [first.client(&certs), second.client(&certs)];
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let client = clients[i % 2].clone();
            let ip = format!("10.0.{}.{}", 100 + i / 100, i % 100 + 1);
            tokio::spawn(async move { (ip.clone(), client.acquire(&ip, false).await) })
        })
        .collect();
    let mut subnets = HashSet::new();
    let mut failures = Vec::new();
    for t in tasks {
        let (ip, result) = t.await.unwrap();
        match result {
            Ok(lease) => {
                assert_eq!(lease.underlay_ip, ip);
                subnets.insert(lease.overlay_subnet);
            }
            Err(e) => failures.push(format!("{ip}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(subnets.len(), 200);
    let stored = rows(&db).await;
    assert_eq!(stored.len(), 200);
    assert_eq!(
        stored.iter().map(|r| &r.1).collect::<HashSet<_>>().len(),
        200
    );
    assert_eq!(
        stored.iter().map(|r| &r.2).collect::<HashSet<_>>().len(),
        200
    );
}

async fn concurrent_acquires_for_one_host_agree(engine: Engine) {
    let db = TestDb::create(engine).await;
    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    let first = Controller::start(&db, &certs, &Settings::default()).await;
    let second = Controller::start(&db, &certs, &Settings::default()).await;
    let clients = [first.client(&certs), second.client(&certs)];
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let client = clients[i % 2].clone();
            tokio::spawn(async move { client.acquire("10.0.5.5", false).await })
        })
        .collect();
    let mut leases = HashSet::new();
    for t in tasks {
        leases.insert(t.await.unwrap().unwrap());
    }
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(rows(&db).await.len(), 1);
}

async fn exhaustion_then_expired_leases_are_reused_oldest_first(engine: Engine) {
    // 10.255.0.0/28 with /30 blocks: three blocks for cells, three single IPs.
    let settings = Settings {
        network: r#""10.255.0.0/28""#.into(),
        prefix: 30,
        expiration: 1000,
        ..Settings::default()
    };
    let (db, certs, controller) = setup(engine, settings).await;
    let client = controller.client(&certs);
    let mut held = Vec::new();
    for i in 1..=3 {
        held.push(client.acquire(&format!("10.0.0.{i}"), false).await.unwrap());
    }
    let mut blocks: Vec<_> = held.iter().map(|l| l.overlay_subnet.clone()).collect();
    blocks.sort();
    assert_eq!(blocks, ["10.255.0.12/30", "10.255.0.4/30", "10.255.0.8/30"]);
    let e = client.acquire("10.0.0.4", false).await.unwrap_err();
    assert_eq!(e.to_string(), "http status 409: no lease available");
    // Single IPs are a separate pool.
    for i in 1..=3 {
        client.acquire(&format!("10.0.1.{i}"), true).await.unwrap();
    }
    assert_eq!(
        client
            .acquire("10.0.1.4", true)
            .await
            .unwrap_err()
            .to_string(),
        "http status 409: no lease available"
    );

    // Age two block leases past expiry: 10.0.0.2 the oldest, then 10.0.0.1.
    let now = engine.now_sql();
    db.execute(&format!(
        "UPDATE subnets SET last_renewed_at = {now} - 5000 WHERE underlay_ip = '10.0.0.2'"
    ))
    .await;
    db.execute(&format!(
        "UPDATE subnets SET last_renewed_at = {now} - 2000 WHERE underlay_ip = '10.0.0.1'"
    ))
    .await;
    // Expired leases are hidden from the list.
    let listed = client.list().await.unwrap();
    assert_eq!(listed.len(), 4);
    assert!(!listed
        .iter()
        .any(|l| l.underlay_ip == "10.0.0.1" || l.underlay_ip == "10.0.0.2"));

    let first = client.acquire("10.0.0.4", false).await.unwrap();
    assert_eq!(
        first.overlay_subnet, held[1].overlay_subnet,
        "oldest expired first"
    );
    assert_eq!(first.overlay_hardware_addr, held[1].overlay_hardware_addr);
    let second = client.acquire("10.0.0.5", false).await.unwrap();
    assert_eq!(second.overlay_subnet, held[0].overlay_subnet);
    assert_eq!(
        client
            .acquire("10.0.0.6", false)
            .await
            .unwrap_err()
            .to_string(),
        "http status 409: no lease available"
    );
    // The previous holders' rows are gone; their renew now conflicts.
    let e = client.renew(&held[1]).await.unwrap_err();
    assert!(e.is_non_retriable(), "{e}");
    assert_eq!(rows(&db).await.len(), 6);
}

async fn network_list_and_network_change(engine: Engine) {
    let db = TestDb::create(engine).await;
    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    let old = Settings {
        network: r#""10.254.0.0/16""#.into(),
        ..Settings::default()
    };
    let old_lease = {
        let c = Controller::start(&db, &certs, &old).await;
        c.client(&certs).acquire("10.0.0.1", false).await.unwrap()
    };
    // The network becomes a list of two CIDRs: 15 + 7 blocks.
    let new = Settings {
        network: r#"["10.255.0.0/20", "10.255.96.0/21"]"#.into(),
        ..Settings::default()
    };
    let controller = Controller::start(&db, &certs, &new).await;
    let client = controller.client(&certs);
    // Old-network leases are still listed and renewable.
    assert!(client.list().await.unwrap().contains(&old_lease));
    client.renew(&old_lease).await.unwrap();
    // Acquire by its host replaces it with a lease from the new pool.
    let fresh = client.acquire("10.0.0.1", false).await.unwrap();
    assert_ne!(fresh, old_lease);
    let mut got = HashSet::new();
    got.insert(fresh.overlay_subnet.clone());
    for i in 2..=22 {
        got.insert(
            client
                .acquire(&format!("10.0.0.{i}"), false)
                .await
                .unwrap()
                .overlay_subnet,
        );
    }
    assert_eq!(got.len(), 22);
    assert!(!got.contains("10.255.0.0/24") && !got.contains("10.255.96.0/24"));
    assert!(got
        .iter()
        .all(|s| s.starts_with("10.255.") && s.ends_with("/24")));
    assert_eq!(
        client
            .acquire("10.0.0.23", false)
            .await
            .unwrap_err()
            .to_string(),
        "http status 409: no lease available"
    );
}

both_engines!(
    two_controllers_200_concurrent_acquires_get_200_distinct_subnets,
    concurrent_acquires_for_one_host_agree,
    exhaustion_then_expired_leases_are_reused_oldest_first,
    network_list_and_network_change,
);
