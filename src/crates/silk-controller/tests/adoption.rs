//! Adoption of an upstream database in place (control-plane §3.4): served as-is,
//! `gorp_migrations` and the schema unchanged afterwards; an empty database gets exactly
//! upstream's schema and bookkeeping row; unknown migration ids stop the start.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;
use silk_core::Lease;
use silk_testkit::certs::{ServerKey, TestCerts};

/// The database upstream's Go controller leaves on each engine.
fn upstream_db(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => include_str!("fixtures/upstream-db-postgres.sql"),
        Engine::Mysql => include_str!("fixtures/upstream-db-mysql.sql"),
    }
}

/// gorp_migrations rows as text, and every column, constraint or index and table of both
/// tables (with the storage engine on MySQL).
async fn snapshot(db: &TestDb) -> (Vec<String>, Vec<String>) {
    match db.engine {
        Engine::Postgres => snapshot_postgres(db).await,
        Engine::Mysql => snapshot_mysql(db).await,
    }
}

async fn snapshot_postgres(db: &TestDb) -> (Vec<String>, Vec<String>) {
    let gorp = db
        .strings("SELECT id || ' ' || coalesce(applied_at::text, 'NULL') FROM gorp_migrations ORDER BY id")
        .await;
    let mut schema = db
        .strings(
            "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || coalesce(character_maximum_length::text, '-') \
             || ' ' || is_nullable || ' ' || coalesce(column_default, '-') \
             FROM information_schema.columns WHERE table_name IN ('subnets', 'gorp_migrations')",
        )
        .await;
    schema.extend(
        db.strings(
            "SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid IN ('subnets'::regclass, 'gorp_migrations'::regclass)",
        )
        .await,
    );
    schema.extend(db.tables().await.into_iter().map(|t| format!("table {t}")));
    schema.sort();
    (gorp, schema)
}

async fn snapshot_mysql(db: &TestDb) -> (Vec<String>, Vec<String>) {
    let gorp = db
        .strings(
            "SELECT CONCAT(id, ' ', COALESCE(applied_at, 'NULL')) FROM gorp_migrations ORDER BY id",
        )
        .await;
    let mut schema = db
        .strings(
            "SELECT CONCAT(table_name, '.', column_name, ' ', column_type, ' ', is_nullable, ' ', \
             COALESCE(column_default, '-'), ' ', column_key, ' ', extra, ' ', COALESCE(character_set_name, '-')) \
             FROM information_schema.columns WHERE table_schema = DATABASE()",
        )
        .await;
    schema.extend(
        db.strings(
            "SELECT CONCAT(table_name, ' index ', index_name, ' ', column_name, ' ', non_unique) \
             FROM information_schema.statistics WHERE table_schema = DATABASE()",
        )
        .await,
    );
    schema.extend(
        db.strings(
            "SELECT CONCAT('table ', table_name, ' ', engine, ' ', table_collation) \
             FROM information_schema.tables WHERE table_schema = DATABASE()",
        )
        .await,
    );
    schema.sort();
    (gorp, schema)
}

fn lease(u: &str, s: &str, m: &str) -> Lease {
    Lease {
        underlay_ip: u.into(),
        overlay_subnet: s.into(),
        overlay_hardware_addr: m.into(),
    }
}

async fn upstream_database_is_served_as_is_and_left_unchanged(engine: Engine) {
    let db = TestDb::create(engine).await;
    db.execute(upstream_db(engine)).await;
    let before = snapshot(&db).await;
    let applied_at = match engine {
        Engine::Postgres => "1 2019-03-04 10:11:12.123456+00",
        Engine::Mysql => "1 2019-03-04 10:11:12",
    };
    assert_eq!(before.0, [applied_at]);

    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    let mut controller = Controller::start(&db, &certs, &Settings::default()).await;
    let client = controller.client(&certs);
    let mut listed = client.list().await.unwrap();
    listed.sort();
    assert_eq!(
        listed,
        [
            lease("10.0.16.12", "10.255.7.0/24", "ee:ee:0a:ff:07:00"),
            lease("10.0.16.13", "10.255.42.0/24", "ee:ee:0a:ff:2a:00"),
            lease("10.0.16.14", "10.255.200.0/24", "ee:ee:0a:ff:c8:00"),
            lease("10.0.32.5", "10.255.0.5/32", "ee:ee:0a:ff:00:05"),
        ]
    );
    // Existing hosts keep their leases; renews of Go-written rows succeed.
    let cell = lease("10.0.16.12", "10.255.7.0/24", "ee:ee:0a:ff:07:00");
    assert_eq!(client.acquire("10.0.16.12", false).await.unwrap(), cell);
    client.renew(&cell).await.unwrap();
    // The expired host comes back and gets its old row again (the row is still its own).
    assert_eq!(
        client.acquire("10.0.16.99", false).await.unwrap(),
        lease("10.0.16.99", "10.255.99.0/24", "ee:ee:0a:ff:63:00")
    );
    // New hosts never get a subnet a Go-written row holds.
    let fresh = client.acquire("10.0.16.200", false).await.unwrap();
    assert!(![
        "10.255.7.0/24",
        "10.255.42.0/24",
        "10.255.200.0/24",
        "10.255.99.0/24"
    ]
    .contains(&fresh.overlay_subnet.as_str()));
    assert_eq!(controller.terminate(), Some(0));
    assert_eq!(
        snapshot(&db).await,
        before,
        "gorp_migrations and the schema must not change"
    );
    // A second start (adoption rule 1) changes nothing either.
    let again = Controller::start(&db, &certs, &Settings::default()).await;
    drop(again);
    assert_eq!(snapshot(&db).await, before);
}

async fn empty_database_gets_exactly_the_upstream_schema(engine: Engine) {
    let upstream = TestDb::create(engine).await;
    upstream.execute(upstream_db(engine)).await;
    let (_, upstream_schema) = snapshot(&upstream).await;

    let db = TestDb::create(engine).await;
    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    // Two controllers starting at once on the empty database.
    let (sa, sb) = (Settings::default(), Settings::default());
    let (a, b) = tokio::join!(
        Controller::start(&db, &certs, &sa),
        Controller::start(&db, &certs, &sb)
    );
    drop((a, b));
    let (gorp, schema) = snapshot(&db).await;
    assert_eq!(schema, upstream_schema);
    assert_eq!(gorp.len(), 1);
    assert!(
        gorp[0].starts_with("1 ") && !gorp[0].ends_with("NULL"),
        "{gorp:?}"
    );
}

async fn unknown_migration_ids_stop_the_start(engine: Engine) {
    let db = TestDb::create(engine).await;
    db.execute(upstream_db(engine)).await;
    db.execute("INSERT INTO gorp_migrations (id, applied_at) VALUES ('2', now())")
        .await;
    let before = snapshot(&db).await;
    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    let ports = (free_port(), free_port(), free_port());
    let config = write_config(
        certs.dir(),
        "c.json",
        &config_json(&db, &certs, &Settings::default(), ports),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_silk-controller"))
        .arg(format!("-config={}", config.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cfnetworking.silk-controller error: migrating database: unknown migration in database: 2"), "{stderr}");
    assert_eq!(snapshot(&db).await, before);
}

both_engines!(
    upstream_database_is_served_as_is_and_left_unchanged,
    empty_database_gets_exactly_the_upstream_schema,
    unknown_migration_ids_stop_the_start,
);
