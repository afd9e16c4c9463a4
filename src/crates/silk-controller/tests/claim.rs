//! The one-round-trip acquire statement of each engine against the real server
//! (`LeaseStore::claim`): a new row with the first free candidate, the host's existing row
//! untouched, nothing when every candidate is held (by subnet or by MAC), and rows written by
//! anyone else (an upstream controller) respected.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use silk_controller::config::Config;
use silk_controller::db::{self, Claim};
use silk_core::Lease;
use silk_testkit::certs::{ServerKey, TestCerts};

fn lease(u: &str, s: &str, m: &str) -> Lease {
    Lease {
        underlay_ip: u.into(),
        overlay_subnet: s.into(),
        overlay_hardware_addr: m.into(),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// (name, host, candidate subnets, candidate MACs, want)
type Case = (&'static str, &'static str, Vec<String>, Vec<String>, Claim);

async fn claim_outcomes(engine: Engine) {
    let db = TestDb::create(engine).await;
    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    let ports = (free_port(), free_port(), free_port());
    let config = Config::parse(&config_json(&db, &certs, &Settings::default(), ports)).unwrap();
    let store = db::open(&config).await.unwrap();
    // A row as an upstream controller writes it.
    db.execute(&format!(
        "INSERT INTO subnets (underlay_ip, overlay_subnet, overlay_hwaddr, last_renewed_at) \
         VALUES ('10.0.0.9', '10.255.7.0/24', 'ee:ee:0a:ff:07:00', {})",
        engine.now_sql()
    ))
    .await;

    let cases: Vec<Case> = vec![
        (
            "a new host gets the first free candidate",
            "10.0.0.1",
            strings(&["10.255.7.0/24", "10.255.8.0/24", "10.255.9.0/24"]),
            strings(&[
                "ee:ee:0a:ff:07:00",
                "ee:ee:0a:ff:08:00",
                "ee:ee:0a:ff:09:00",
            ]),
            Claim::New(lease("10.0.0.1", "10.255.8.0/24", "ee:ee:0a:ff:08:00")),
        ),
        (
            "the host's row is returned as it is, nothing written",
            "10.0.0.1",
            strings(&["10.255.10.0/24"]),
            strings(&["ee:ee:0a:ff:0a:00"]),
            Claim::Existing(lease("10.0.0.1", "10.255.8.0/24", "ee:ee:0a:ff:08:00")),
        ),
        (
            "a row written by another controller is the host's too",
            "10.0.0.9",
            strings(&["10.255.11.0/24"]),
            strings(&["ee:ee:0a:ff:0b:00"]),
            Claim::Existing(lease("10.0.0.9", "10.255.7.0/24", "ee:ee:0a:ff:07:00")),
        ),
        (
            "every candidate held: nothing",
            "10.0.0.2",
            strings(&["10.255.7.0/24", "10.255.8.0/24"]),
            strings(&["ee:ee:0a:ff:07:00", "ee:ee:0a:ff:08:00"]),
            Claim::Taken,
        ),
        (
            "a held MAC alone makes a candidate taken",
            "10.0.0.2",
            strings(&["10.255.12.0/24", "10.255.13.0/24"]),
            strings(&["ee:ee:0a:ff:07:00", "ee:ee:0a:ff:0d:00"]),
            Claim::New(lease("10.0.0.2", "10.255.13.0/24", "ee:ee:0a:ff:0d:00")),
        ),
    ];
    for (name, host, subnets, macs, want) in cases {
        let got = store.claim(host, &subnets, &macs).await.unwrap();
        assert_eq!(got, want, "{name}");
    }
    let mut stored = rows(&db).await;
    stored.sort();
    assert_eq!(
        stored,
        vec![
            (
                "10.0.0.1".to_string(),
                "10.255.8.0/24".to_string(),
                "ee:ee:0a:ff:08:00".to_string()
            ),
            (
                "10.0.0.2".to_string(),
                "10.255.13.0/24".to_string(),
                "ee:ee:0a:ff:0d:00".to_string()
            ),
            (
                "10.0.0.9".to_string(),
                "10.255.7.0/24".to_string(),
                "ee:ee:0a:ff:07:00".to_string()
            ),
        ]
    );
}

both_engines!(claim_outcomes);
