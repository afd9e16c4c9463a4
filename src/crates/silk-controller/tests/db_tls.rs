//! TLS to the database (control-plane §3.1) on both engines: `require_ssl` with the right CA
//! connects over TLS; a wrong CA, a server without TLS and (hostname validation on) a
//! certificate for another name are refused at start with one clear line, exit 1, and nothing
//! is written. `skip_hostname_validation` keeps upstream's per-engine meaning: MySQL still
//! verifies the chain, PostgreSQL verifies nothing.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use silk_testkit::certs::{ServerKey, TestCerts};
use silk_testkit::dbserver::{DbServerCerts, PrivateServer};

fn assert_refused(engine: Engine, code: Option<i32>, stderr: &str, reason: &str) {
    assert_eq!(code, Some(1), "{engine:?}: {stderr}");
    assert!(
        stderr
            .starts_with("cfnetworking.silk-controller error: connecting to database: 127.0.0.1:"),
        "{engine:?}: {stderr}"
    );
    assert!(
        stderr.contains(reason),
        "{engine:?}: want {reason:?} in {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

async fn right_ca_connects_over_tls(engine: Engine) {
    let mut db = TestDb::create(engine).await;
    if engine == Engine::Mysql {
        // A user the server only lets in over TLS.
        let id = &db.name()[10..];
        db.execute(&format!(
            "CREATE USER 'tls_{id}'@'%' IDENTIFIED BY 'secret' REQUIRE SSL"
        ))
        .await;
        db.execute(&format!(
            "GRANT ALL PRIVILEGES ON `silk_test_{id}`.* TO 'tls_{id}'@'%'"
        ))
        .await;
    }
    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    let json = db.controller_database_json();
    let json = match engine {
        Engine::Mysql => {
            let user = format!("tls_{}", &db.name()[10..]);
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            let mut v = v.as_object().unwrap().clone();
            v.insert("user".into(), user.into());
            v.insert("password".into(), "secret".into());
            serde_json::Value::Object(v).to_string()
        }
        Engine::Postgres => json,
    };
    db.tls.require_ssl = true;
    let controller = Controller::start_with_database(&db, &certs, &json).await;
    controller
        .client(&certs)
        .acquire("10.0.0.1", false)
        .await
        .unwrap();
    if engine == Engine::Postgres {
        let tls = db
            .strings(&format!(
                "SELECT count(*)::text FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                 WHERE ssl AND datname = '{}' AND application_name = 'silk-controller'",
                db.name()
            ))
            .await;
        assert_ne!(tls, ["0"], "the controller's connections use TLS");
    }
    if engine == Engine::Mysql {
        db.execute(&format!("DROP USER 'tls_{}'@'%'", &db.name()[10..]))
            .await;
    }
}

async fn a_wrong_ca_is_refused(engine: Engine) {
    let mut db = TestDb::create(engine).await;
    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    db.tls.ca_cert = certs.other_ca_cert.display().to_string();
    let (code, stderr) = run_to_exit(&db, &certs);
    assert_refused(engine, code, &stderr, "UnknownIssuer");
    assert!(db.tables().await.is_empty(), "nothing written");
}

async fn a_server_without_tls_is_refused(engine: Engine) {
    let server = PrivateServer::start_new(engine, None);
    let mut db = TestDb::create_on(&server).await;
    db.tls = silk_testkit::db::DbTls::from_env();
    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    let (code, stderr) = run_to_exit(&db, &certs);
    let reason = match engine {
        Engine::Postgres => "server does not support TLS",
        Engine::Mysql => "server does not have this capability",
    };
    assert_refused(engine, code, &stderr, reason);
    assert!(db.tables().await.is_empty(), "nothing written");
}

async fn a_certificate_for_another_name(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let server_certs = DbServerCerts::generate(dir.path(), &["db.other.internal"]).unwrap();
    let server = PrivateServer::start_new(engine, Some(server_certs));
    let mut db = TestDb::create_on(&server).await;
    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    let (code, stderr) = run_to_exit(&db, &certs);
    assert_refused(engine, code, &stderr, "not valid for name");
    assert!(db.tables().await.is_empty(), "nothing written");

    // skip_hostname_validation: the chain still has to be right on MySQL; PostgreSQL's
    // sslmode=require verifies nothing at all.
    db.tls.skip_hostname_validation = true;
    let controller = Controller::start(&db, &certs, &Settings::default()).await;
    drop(controller);
    assert_eq!(db.tables().await, ["gorp_migrations", "subnets"]);
    db.tls.ca_cert = certs.other_ca_cert.display().to_string();
    match engine {
        Engine::Mysql => {
            let (code, stderr) = run_to_exit(&db, &certs);
            assert_refused(engine, code, &stderr, "UnknownIssuer");
        }
        Engine::Postgres => {
            let controller = Controller::start(&db, &certs, &Settings::default()).await;
            drop(controller);
        }
    }
}

both_engines!(
    right_ca_connects_over_tls,
    a_wrong_ca_is_refused,
    a_server_without_tls_is_refused,
    a_certificate_for_another_name,
);
