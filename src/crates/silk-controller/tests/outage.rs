//! A database outage under load (control-plane §1.8, §1.9) on both engines, on a private
//! server so stopping it disturbs no other test: while the server is down for 30 s every
//! request answers 500 with upstream's texts and the health check fails, the process never
//! exits; when the server is back, service resumes without a restart.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use silk_testkit::certs::{ServerKey, TestCerts};
use silk_testkit::dbserver::{DbServerCerts, PrivateServer};

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    server_errors: AtomicUsize,
    /// Anything that is not an HTTP answer (connection refused or reset: a crash).
    other: Mutex<Vec<String>>,
}

async fn database_stopped_for_30s_under_load(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let server_certs = DbServerCerts::generate(dir.path(), &["127.0.0.1", "localhost"]).unwrap();
    let mut server = PrivateServer::start_new(engine, Some(server_certs));
    let db = TestDb::create_on(&server).await;
    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    let mut controller = Controller::start(&db, &certs, &Settings::default()).await;
    let client = controller.client(&certs);
    let held = client.acquire("10.0.0.1", false).await.unwrap();

    // Load: 8 clients acquiring, renewing and listing in a loop.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (client, stop, tally) = (client.clone(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let ip = format!("10.1.{w}.{}", i % 200 + 1);
                    let result = match i % 3 {
                        0 => client.list().await.map(|_| ()),
                        1 => client.acquire(&ip, false).await.map(|_| ()),
                        _ => client.release(&ip).await,
                    };
                    match result {
                        Ok(()) => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        // The pool fills up under load: a 409 is an answer too.
                        Err(e) if e.to_string().starts_with("http status 409: ") => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.to_string().starts_with("http status 500: ") => {
                            tally.server_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tally.other.lock().unwrap().push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(tally.ok.load(Ordering::Relaxed) > 0, "load runs");

    server.stop();
    let outage = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _, body) = plain_request(controller.health_port, "GET", "/health", "")
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (500, r#"{"error": "check database failed"}"#)
    );
    let e = client.list().await.unwrap_err().to_string();
    assert!(e.starts_with("http status 500: all-routable-leases: getting all leases: selecting all active subnets: "), "{e}");
    let e = client
        .acquire("10.0.0.2", false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("http status 500: getting lease for underlay ip: "),
        "{e}"
    );
    let e = client.renew(&held).await.unwrap_err();
    assert!(
        !e.is_non_retriable(),
        "an outage on renew is retriable: {e}"
    );
    assert!(
        e.to_string()
            .starts_with("http status 500: renew-subnet-lease: renewing lease for underlay ip: "),
        "{e}"
    );
    let e = client.release("10.0.0.1").await.unwrap_err().to_string();
    assert!(
        e.starts_with("http status 500: release lease: deleting entry: "),
        "{e}"
    );
    let errors_before = tally.server_errors.load(Ordering::Relaxed);
    while outage.elapsed() < Duration::from_secs(30) {
        assert!(
            controller.child.try_wait().unwrap().is_none(),
            "the controller must not exit during the outage"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(tally.server_errors.load(Ordering::Relaxed) > errors_before);
    let (status, _, _) = plain_request(controller.health_port, "GET", "/health", "")
        .await
        .unwrap();
    assert_eq!(status, 500);

    server.start();
    let mut healthy = false;
    for _ in 0..120 {
        if let Ok((200, _, _)) = plain_request(controller.health_port, "GET", "/health", "").await {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(healthy, "health recovers without a restart");
    // Every request kind works again (pooled connections that died are replaced).
    let mut recovered = false;
    for _ in 0..20 {
        let renewed = client.renew(&held).await;
        let acquired = client.acquire("10.0.0.3", false).await;
        let listed = client.list().await;
        if renewed.is_ok() && acquired.is_ok() && listed.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(recovered, "service resumes by itself");
    let ok_before = tally.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(
        tally.ok.load(Ordering::Relaxed) > ok_before,
        "load succeeds again"
    );
    let other = tally.other.lock().unwrap().clone();
    assert!(other.is_empty(), "only 200, 409 or 500 answers: {other:?}");
    assert!(controller.child.try_wait().unwrap().is_none());
    assert_eq!(controller.terminate(), Some(0));
}

both_engines!(database_stopped_for_30s_under_load);
