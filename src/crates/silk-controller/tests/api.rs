//! Every route and status code of control-plane §1 against the real binary, over mutual TLS,
//! on a real PostgreSQL database.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use silk_core::Lease;

const HOST_A: &str = "10.0.16.1";
const HOST_B: &str = "10.0.16.2";
const HOST_C: &str = "10.0.16.3";

async fn acquire_renew_list_release_round_trip(engine: Engine) {
    let (db, certs, controller) = setup(engine, Settings::default()).await;
    let client = controller.client(&certs);

    let lease = client.acquire(HOST_A, false).await.unwrap();
    assert_eq!(lease.underlay_ip, HOST_A);
    assert!(lease.overlay_subnet.ends_with("/24"));
    assert_ne!(
        lease.overlay_subnet, "10.255.0.0/24",
        "first block is reserved"
    );
    let ip = lease.overlay_subnet.trim_end_matches("/24");
    assert_eq!(
        lease,
        Lease::new(HOST_A.parse().unwrap(), lease.subnet().unwrap())
    );
    assert!(ip.starts_with("10.255."));

    // Acquire again: the same lease, unchanged.
    assert_eq!(client.acquire(HOST_A, false).await.unwrap(), lease);
    // A host holding a block asking for a single IP still gets its block (kind not checked).
    assert_eq!(client.acquire(HOST_A, true).await.unwrap(), lease);

    let single = client.acquire(HOST_B, true).await.unwrap();
    assert!(
        single.overlay_subnet.starts_with("10.255.0.") && single.overlay_subnet.ends_with("/32")
    );
    assert_ne!(single.overlay_subnet, "10.255.0.0/32");

    let mut listed = client.list().await.unwrap();
    listed.sort();
    let mut want = vec![lease.clone(), single.clone()];
    want.sort();
    assert_eq!(listed, want);

    client.renew(&lease).await.unwrap();
    client.release(HOST_A).await.unwrap();
    client.release(HOST_A).await.unwrap(); // idempotent
    assert_eq!(client.list().await.unwrap(), vec![single.clone()]);
    assert_eq!(rows(&db).await.len(), 1);

    // Upstream-shaped raw answers.
    let tls = default_tls(&certs);
    let (status, _, body) = tls_request(
        controller.api_port,
        tls.clone(),
        "PUT",
        "/leases/renew",
        "",
        serde_json::to_string(&single).unwrap().as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!((status, body.as_str()), (200, "{}"));
    let (status, _, body) = tls_request(
        controller.api_port,
        tls.clone(),
        "PUT",
        "/leases/release",
        "",
        br#"{"underlay_ip":"10.9.9.9"}"#,
    )
    .await
    .unwrap();
    assert_eq!((status, body.as_str()), (200, "{}"));
    let (status, _, body) = tls_request(controller.api_port, tls, "GET", "/leases", "", b"")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["leases"].as_array().unwrap().len(), 1);
    assert_eq!(
        body,
        format!(
            r#"{{"leases":[{}]}}"#,
            serde_json::to_string(&single).unwrap()
        )
    );
}

async fn renew_semantics(engine: Engine) {
    let (db, certs, controller) = setup(engine, Settings::default()).await;
    let client = controller.client(&certs);
    let lease = client.acquire(HOST_A, false).await.unwrap();

    // Mismatch: same host, other subnet.
    let other = Lease::new(HOST_A.parse().unwrap(), "10.255.200.0/24".parse().unwrap());
    let other = if other == lease {
        Lease::new(HOST_A.parse().unwrap(), "10.255.201.0/24".parse().unwrap())
    } else {
        other
    };
    let e = client.renew(&other).await.unwrap_err();
    assert!(e.is_non_retriable());
    assert_eq!(
        e.to_string(),
        "non-retriable: renew-subnet-lease: lease mismatch"
    );
    // MAC differs only in case: exact string compare says mismatch.
    let upper = Lease {
        overlay_hardware_addr: lease.overlay_hardware_addr.to_uppercase(),
        ..lease.clone()
    };
    assert_eq!(
        client.renew(&upper).await.unwrap_err().to_string(),
        "non-retriable: renew-subnet-lease: lease mismatch"
    );

    // Unknown host with an in-pool free subnet: implicit insert.
    let fresh = Lease::new(HOST_B.parse().unwrap(), "10.255.77.0/24".parse().unwrap());
    let fresh = if fresh.overlay_subnet == lease.overlay_subnet {
        Lease::new(HOST_B.parse().unwrap(), "10.255.78.0/24".parse().unwrap())
    } else {
        fresh
    };
    client.renew(&fresh).await.unwrap();
    assert!(rows(&db).await.contains(&(
        fresh.underlay_ip.clone(),
        fresh.overlay_subnet.clone(),
        fresh.overlay_hardware_addr.clone()
    )));

    // Unknown host with a subnet outside the pool: 409, nothing written.
    let outside = Lease::new(HOST_C.parse().unwrap(), "10.254.1.0/24".parse().unwrap());
    assert_eq!(
        client.renew(&outside).await.unwrap_err().to_string(),
        "non-retriable: renew-subnet-lease: overlay subnet not in pool"
    );
    let reserved = Lease::new(HOST_C.parse().unwrap(), "10.255.0.0/24".parse().unwrap());
    assert!(client
        .renew(&reserved)
        .await
        .unwrap_err()
        .is_non_retriable());
    // Unknown host claiming a subnet another host holds: insert fails, 409.
    let stolen = Lease {
        underlay_ip: HOST_C.into(),
        ..lease.clone()
    };
    let e = client.renew(&stolen).await.unwrap_err().to_string();
    assert!(
        e.starts_with("non-retriable: renew-subnet-lease: adding entry: "),
        "{e}"
    );
    assert_eq!(rows(&db).await.len(), 2);

    // Syntactic validation, 409 with upstream's reasons.
    let tls = default_tls(&certs);
    for (body, want) in [
        (
            r#"{"underlay_ip":"nope","overlay_subnet":"10.255.9.0/24","overlay_hardware_addr":"ee:ee:0a:ff:09:00"}"#,
            "renew-subnet-lease: invalid underlay ip: nope",
        ),
        (
            r#"{"underlay_ip":"10.0.0.9","overlay_subnet":"10.255.9.0","overlay_hardware_addr":"ee:ee:0a:ff:09:00"}"#,
            "renew-subnet-lease: invalid CIDR address: 10.255.9.0",
        ),
        (
            r#"{"underlay_ip":"10.0.0.9","overlay_subnet":"10.255.9.0/24","overlay_hardware_addr":"zz"}"#,
            "renew-subnet-lease: address zz: invalid MAC address",
        ),
    ] {
        let (status, _, got) = tls_request(
            controller.api_port,
            tls.clone(),
            "PUT",
            "/leases/renew",
            "",
            body.as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(status, 409, "{body}");
        let v: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["error"], want);
    }
    assert_eq!(rows(&db).await.len(), 2);
}

async fn routing_answers_like_go(engine: Engine) {
    let (_db, certs, controller) = setup(engine, Settings::default()).await;
    let tls = default_tls(&certs);
    let port = controller.api_port;
    let (status, _, body) = tls_request(port, tls.clone(), "GET", "/nope", "", b"")
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (404, "404 page not found\n"));
    let (status, _, body) = tls_request(port, tls.clone(), "GET", "/leases/", "", b"")
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (404, "404 page not found\n"));
    for (method, path, allow) in [
        ("POST", "/leases", "GET"),
        ("HEAD", "/leases", "GET"),
        ("GET", "/leases/acquire", "PUT"),
        ("POST", "/leases/renew", "PUT"),
        ("DELETE", "/leases/release", "PUT"),
    ] {
        let (status, head, body) = tls_request(port, tls.clone(), method, path, "", b"")
            .await
            .unwrap();
        assert_eq!(status, 405, "{method} {path}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("allow: {}", allow.to_ascii_lowercase())),
            "{head}"
        );
        if method != "HEAD" {
            assert_eq!(body, "Method Not Allowed\n");
        }
    }
}

async fn lenient_json_without_content_type(engine: Engine) {
    let (db, certs, controller) = setup(engine, Settings::default()).await;
    let tls = default_tls(&certs);
    let port = controller.api_port;
    // Upper-case keys, unknown keys, no Content-Type.
    let (status, _, body) = tls_request(
        port,
        tls.clone(),
        "PUT",
        "/leases/acquire",
        "",
        br#"{"UNDERLAY_IP":"10.0.16.1","Single_Overlay_IP":true,"color":"blue"}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let lease: Lease = serde_json::from_str(&body).unwrap();
    assert!(lease.is_single_ip());
    // With a JSON Content-Type too.
    let (status, _, _) = tls_request(
        port,
        tls.clone(),
        "PUT",
        "/leases/acquire",
        "Content-Type: application/json\r\n",
        br#"{"underlay_ip":"10.0.16.2"}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    // Missing single_overlay_ip means false: a block.
    assert!(rows(&db)
        .await
        .iter()
        .any(|r| r.0 == "10.0.16.2" && r.1.ends_with("/24")));
}

async fn bad_input_is_a_clear_4xx_and_writes_nothing(engine: Engine) {
    let (db, certs, controller) = setup(engine, Settings::default()).await;
    let tls = default_tls(&certs);
    let port = controller.api_port;
    let huge = format!(
        r#"{{"underlay_ip":"10.0.0.1","pad":"{}"}}"#,
        "x".repeat(200_000)
    );
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/leases/acquire", b"{".to_vec(), 400, "unmarshal-request: "),
        ("/leases/acquire", b"".to_vec(), 400, "unmarshal-request: "),
        ("/leases/acquire", b"[1,2]".to_vec(), 400, "unmarshal-request: json: cannot unmarshal array"),
        ("/leases/acquire", br#"{"underlay_ip":12}"#.to_vec(), 400, "unmarshal-request: json: cannot unmarshal number into Go struct field AcquireRequest.underlay_ip of type string"),
        ("/leases/acquire", br#"{"underlay_ip":"10.0.0.1","single_overlay_ip":"yes"}"#.to_vec(), 400, "unmarshal-request: json: cannot unmarshal string"),
        ("/leases/acquire", br#"{"underlay_ip":"10.0.0.256"}"#.to_vec(), 400, "invalid ipv4 address: 10.0.0.256"),
        ("/leases/acquire", br#"{"underlay_ip":"fe80::1"}"#.to_vec(), 400, "invalid ipv4 address: fe80::1"),
        ("/leases/acquire", br#"{}"#.to_vec(), 400, "invalid ipv4 address: "),
        ("/leases/acquire", huge.clone().into_bytes(), 413, "read-body: request body larger than 65536 bytes"),
        ("/leases/renew", b"not json".to_vec(), 400, "unmarshal-request: "),
        ("/leases/renew", br#"{"underlay_ip":["x"]}"#.to_vec(), 400, "unmarshal-request: json: cannot unmarshal array into Go struct field Lease.underlay_ip"),
        ("/leases/renew", huge.clone().into_bytes(), 413, "read-body: "),
        ("/leases/release", b"{\"underlay_ip\":".to_vec(), 400, "unmarshal-request: "),
        ("/leases/release", br#"{"underlay_ip":false}"#.to_vec(), 400, "unmarshal-request: "),
        ("/leases/release", huge.into_bytes(), 413, "read-body: "),
    ];
    for (path, body, want_status, want_prefix) in cases {
        let (status, _, got) = tls_request(port, tls.clone(), "PUT", path, "", &body)
            .await
            .unwrap();
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        assert_eq!(status, want_status, "{path} {shown}: {got}");
        let v: serde_json::Value =
            serde_json::from_str(&got).unwrap_or_else(|_| panic!("error body is JSON: {got}"));
        let text = v["error"].as_str().unwrap();
        assert!(text.starts_with(want_prefix), "{path} {shown}: {text}");
        assert!(got.starts_with("{\"error\": "), "{got}");
    }
    assert!(rows(&db).await.is_empty());
}

async fn health_debug_metrics_and_logs(engine: Engine) {
    let agent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    agent
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let settings = Settings {
        metron_port: agent.local_addr().unwrap().port(),
        ..Settings::default()
    };
    let (_db, certs, controller) = setup(engine, settings).await;
    let client = controller.client(&certs);
    client.acquire(HOST_A, false).await.unwrap();

    let (status, _, body) = plain_request(controller.health_port, "GET", "/health", "")
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, _, _) = plain_request(controller.health_port, "POST", "/health", "")
        .await
        .unwrap();
    assert_eq!(status, 405);
    let (status, _, _) = plain_request(controller.health_port, "GET", "/nope", "")
        .await
        .unwrap();
    assert_eq!(status, 404);

    let (status, head, body) = plain_request(controller.debug_port, "POST", "/log-level", "debug")
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "/log-level was invoked with Level: debug\n")
    );
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: text/plain"));
    let (status, _, body) = plain_request(controller.debug_port, "GET", "/log-level", "")
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (400, "❌ method not allowed, use POST")
    );
    let (status, _, body) = plain_request(controller.debug_port, "POST", "/log-level", "")
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (400, "❌ log level cannot be empty")
    );
    let (status, _, body) = plain_request(controller.debug_port, "POST", "/log-level", "chatty")
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (400, "❌ invalid log level: chatty")
    );

    // Debug level now on: a renew logs lease-renewed at debug.
    let lease = client.acquire(HOST_A, false).await.unwrap();
    client.renew(&lease).await.unwrap();
    let mut metrics = String::new();
    for _ in 0..50 {
        let (status, _, body) = plain_request(controller.debug_port, "GET", "/metrics", "")
            .await
            .unwrap();
        assert_eq!(status, 200);
        metrics = body;
        if metrics.contains("totalLeases 1") && metrics.contains("freeLeases 254") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(metrics.contains("LeasesAcquireRequestCount 2"), "{metrics}");
    assert!(metrics.contains("LeasesRenewRequestCount 1"), "{metrics}");
    assert!(
        metrics.contains("# TYPE LeasesAcquireRequestTime gauge"),
        "{metrics}"
    );
    assert!(metrics.contains("HealthRequestCount"), "{metrics}");
    assert!(metrics.contains("totalLeases 1"), "{metrics}");
    assert!(metrics.contains("freeLeases 254"), "{metrics}");

    // Dropsonde: the emitter's values and per-request counters reached the agent.
    let mut names = std::collections::HashSet::new();
    let mut buf = [0u8; 2048];
    let wanted = [
        "uptime",
        "totalLeases",
        "LeasesAcquireRequestCount",
        "LeasesAcquireRequestTime",
        "LeasesRenewRequestCount",
    ];
    while let Ok(n) = agent.recv(&mut buf) {
        use prost::Message;
        let env = silk_ops::dropsonde::Envelope::decode(&buf[..n]).unwrap();
        assert_eq!(env.origin, "silk-controller");
        if let Some(c) = env.counter_event {
            assert_eq!(c.delta, 1);
            names.insert(c.name);
        }
        if let Some(v) = env.value_metric {
            names.insert(v.name);
        }
        // Stop once all arrived (the emitter's values may come after the request counters).
        if wanted.iter().all(|w| names.contains(*w)) {
            break;
        }
    }
    for want in wanted {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }

    // Logs are lager lines.
    let log = controller.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["source"] == "cfnetworking.silk-controller"));
    assert!(lines.iter().any(
        |l| l["message"] == "cfnetworking.silk-controller.lease-acquired"
            && l["level"] == "info"
            && l["data"]["lease"]["underlay_ip"] == HOST_A
    ));
    assert!(lines.iter().any(
        |l| l["message"] == "cfnetworking.silk-controller.lease-renewed" && l["level"] == "debug"
    ));
}

async fn sigterm_stops_cleanly_without_5xx(engine: Engine) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let (_db, certs, mut controller) = setup(engine, Settings::default()).await;
    let client = controller.client(&certs);
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (c, done) = (client.clone(), done.clone());
            tokio::spawn(async move {
                for i in 0..30 {
                    match c
                        .acquire(&format!("10.0.{}.{}", 20 + w, i + 1), false)
                        .await
                    {
                        Ok(_) => {
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => return Some(e.to_string()),
                    }
                }
                None
            })
        })
        .collect();
    while done.load(Ordering::SeqCst) < 8 {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let stopped = tokio::task::spawn_blocking(move || (controller.terminate(), controller));
    for w in workers {
        // Once the listener closes, requests fail to connect; none may get a server error.
        if let Some(e) = w.await.unwrap() {
            assert!(!e.starts_with("http status"), "{e}");
        }
    }
    let (code, controller) = stopped.await.unwrap();
    assert_eq!(code, Some(0));
    assert!(controller
        .log()
        .contains("cfnetworking.silk-controller.exited"));
}

async fn client_survives_a_controller_restart(engine: Engine) {
    let (_db, certs, mut controller) = setup(engine, Settings::default()).await;
    let client = controller.client(&certs);
    let lease = client.acquire(HOST_A, false).await.unwrap();
    // The client keeps its connection; the restarted controller never saw it.
    controller.restart().await;
    client.renew(&lease).await.unwrap();
    assert_eq!(client.list().await.unwrap(), vec![lease]);
}

/// `n` rows for hosts 0 … n-1, renewed `renewed` (SQL), in one INSERT per 1,000.
async fn seed(db: &TestDb, from: usize, n: usize, renewed: &str) -> Vec<Lease> {
    let leases: Vec<Lease> = (from..from + n)
        .map(|i| {
            let (hi, lo) = ((i + 1) / 256, (i + 1) % 256);
            Lease {
                underlay_ip: format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256),
                overlay_subnet: format!("10.{hi}.{lo}.0/24"),
                overlay_hardware_addr: format!("ee:ee:0a:{hi:02x}:{lo:02x}:00"),
            }
        })
        .collect();
    for chunk in leases.chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|l| {
                format!(
                    "('{}', '{}', '{}', {renewed})",
                    l.underlay_ip, l.overlay_subnet, l.overlay_hardware_addr
                )
            })
            .collect();
        db.execute(&format!(
            "INSERT INTO subnets (underlay_ip, overlay_subnet, overlay_hwaddr, last_renewed_at) VALUES {}",
            values.join(", ")
        ))
        .await;
    }
    leases
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = raw.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        raw = rest[size..]
            .strip_prefix("\r\n")
            .expect("CRLF after a chunk");
    }
}

/// Lists of several thousand leases go out in batches as the database sends them (chunked);
/// a list of one batch whole, with a Content-Length. Both are exactly the JSON of the rows,
/// expired rows left out, whatever the batch boundaries (empty last batch included).
async fn large_lists_stream_whole_and_exact(engine: Engine) {
    let (db, certs, controller) = setup(engine, Settings::default()).await;
    let client = controller.client(&certs);
    let tls = default_tls(&certs);
    seed(&db, 50_000, 3, "0").await; // expired long ago: never listed
    let mut want = Vec::new();
    for (added, chunked) in [(0, false), (1023, false), (1, true), (1476, true)] {
        want.extend(seed(&db, want.len(), added, engine.now_sql()).await);
        let (status, head, body) =
            tls_request(controller.api_port, tls.clone(), "GET", "/leases", "", b"")
                .await
                .unwrap();
        assert_eq!(status, 200, "{head}");
        let head = head.to_ascii_lowercase();
        assert_eq!(
            head.contains("transfer-encoding: chunked"),
            chunked,
            "{} leases: {head}",
            want.len()
        );
        assert_eq!(head.contains("content-length:"), !chunked, "{head}");
        let body = if chunked { dechunk(&body) } else { body };
        #[derive(serde::Deserialize, serde::Serialize)]
        struct List {
            leases: Vec<Lease>,
        }
        let mut got = serde_json::from_str::<List>(&body).unwrap().leases;
        got.sort();
        let mut sorted = want.clone();
        sorted.sort();
        assert_eq!(got, sorted, "{} leases", want.len());
        // The same bytes serde_json writes for the leases in the order listed.
        let leases = client.list().await.unwrap();
        assert_eq!(body, serde_json::to_string(&List { leases }).unwrap());
    }
}

both_engines!(
    large_lists_stream_whole_and_exact,
    acquire_renew_list_release_round_trip,
    renew_semantics,
    routing_answers_like_go,
    lenient_json_without_content_type,
    bad_input_is_a_clear_4xx_and_writes_nothing,
    health_debug_metrics_and_logs,
    sigterm_stops_cleanly_without_5xx,
    client_survives_a_controller_restart,
);
