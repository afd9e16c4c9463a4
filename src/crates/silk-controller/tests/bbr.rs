//! BOSH Backup and Restore end to end (bosh-release.md §3, docs/bbr.md): the silk-controller and
//! bbr-silkdb jobs rendered from their ERB templates into a VM-like tree
//! (scripts/lib/render_jobs.rb), a real silk-controller started and stopped through them, a real
//! database, and cells renewing their leases throughout. The scripts run as BBR runs them: lock,
//! backup, unlock; the database is wiped; lock, restore, unlock.
//!
//! What BOSH VMs have and this machine does not is replaced by test stand-ins from
//! tests/fixtures/bbr (each documented as such): `monit` and `bpm` (they run the rendered monit
//! and bpm.yml programs as plain processes, by PID) and backup-and-restore-sdk's
//! `database-backup-restorer` (its documented CLI and config, with pg_dump/pg_restore and
//! mysqldump/mysql).

#![allow(clippy::unwrap_used)] // test code panics on failure by design

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, plain_request};
use serde_json::{json, Value};
use silk_client::{ClientTls, ControllerClient};
use silk_core::Lease;
use silk_testkit::certs::{path_str, ServerKey, TestCerts};
use silk_testkit::netns::output_with_timeout;

/// Underlay IPs of the cells that hold a lease when the backup is taken.
const CELLS: [&str; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
/// A cell that joins after the backup: the restore must forget it.
const LATE_CELL: &str = "10.0.0.99";
/// Path of the artifact directory BBR creates for the job (with its trailing slash).
const ARTIFACT_DIR: &str = "var/vcap/store/bbr-backup/bbr-silkdb/";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

// === Databases ===

/// The engine under test, reached through its command-line client on the unix socket
/// `scripts/test` provides, as an administrator.
#[derive(Debug, Clone, Copy)]
enum Engine {
    Postgres,
    Mysql,
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| {
        panic!("{key} is not set: this test needs the databases scripts/test starts")
    })
}

impl Engine {
    /// Runs one SQL batch as the administrator; panics with the client's error.
    fn admin(self, database: &str, sql: &str) {
        let cmd = match self {
            Engine::Postgres => {
                let mut c = Command::new("psql");
                c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
                    .args([
                        "-h",
                        &env("SILK_TEST_PG_HOST"),
                        "-p",
                        &env("SILK_TEST_PG_PORT"),
                    ])
                    .args(["-U", &env("SILK_TEST_PG_USER"), "-d", database, "-c", sql]);
                c
            }
            Engine::Mysql => {
                let mut c = Command::new("mysql");
                c.arg(format!("--socket={}", env("SILK_TEST_MYSQL_SOCKET")))
                    .arg(format!("--user={}", env("SILK_TEST_MYSQL_USER")))
                    .env("MYSQL_PWD", env("SILK_TEST_MYSQL_PASSWORD"))
                    .args(["-D", database, "-e", sql]);
                c
            }
        };
        let out = output_with_timeout(cmd, Duration::from_secs(60)).unwrap();
        assert!(
            out.status.success(),
            "{self:?} admin `{sql}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn admin_database(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        }
    }

    fn create(self, name: &str) {
        self.admin(self.admin_database(), &format!("CREATE DATABASE {name}"));
    }

    fn drop_database(self, name: &str) {
        let sql = match self {
            Engine::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            Engine::Mysql => format!("DROP DATABASE IF EXISTS {name}"),
        };
        self.admin(self.admin_database(), &sql);
    }

    /// Loses everything silk keeps: its table and the migration bookkeeping.
    fn wipe(self, name: &str) {
        self.admin(name, "DROP TABLE subnets; DROP TABLE gorp_migrations");
    }

    /// silk-controller's `database` properties for database `name` over TCP on 127.0.0.1, with
    /// TLS when the servers of scripts/test have it (SILK_TEST_DB_CA). PostgreSQL's test
    /// cluster trusts local connections, so its password is a marker only, which must never
    /// show up in a script's output either.
    fn properties(self, name: &str) -> Value {
        let (kind, user, password, port) = match self {
            Engine::Postgres => (
                "postgres",
                env("SILK_TEST_PG_USER"),
                "bbr-test-marker-password".to_string(),
                env("SILK_TEST_PG_PORT"),
            ),
            Engine::Mysql => (
                "mysql",
                env("SILK_TEST_MYSQL_USER"),
                env("SILK_TEST_MYSQL_PASSWORD"),
                env("SILK_TEST_MYSQL_PORT"),
            ),
        };
        let mut db = json!({
            "type": kind, "username": user, "password": password, "host": "127.0.0.1",
            "port": port.parse::<u16>().unwrap(), "name": name, "connect_timeout_seconds": 10,
        });
        if let Ok(ca) = std::env::var("SILK_TEST_DB_CA") {
            db["require_ssl"] = json!(true);
            db["ca_cert"] = json!(std::fs::read_to_string(ca).unwrap());
        }
        db
    }
}

/// The test's database; dropped on drop.
struct TestDatabase {
    engine: Engine,
    name: String,
}

impl TestDatabase {
    fn create(engine: Engine) -> Self {
        let name = format!("silk_bbr_{:016x}", rand::random::<u64>());
        engine.create(&name);
        TestDatabase { engine, name }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        self.engine.drop_database(&self.name);
    }
}

// === The VM ===

/// A VM-like tree: the rendered jobs, the stand-ins and the binary under test. On drop the
/// controller the stand-in bpm started is killed by the PID in its pid file.
struct Vm {
    dir: tempfile::TempDir,
    outputs: Mutex<Vec<String>>,
}

impl Vm {
    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn vcap(&self, rel: &str) -> PathBuf {
        self.root().join("var/vcap").join(rel)
    }

    /// Renders the jobs (`[{name, properties}]`) with scripts/lib/render_jobs.rb and installs
    /// the stand-ins, ctl_util.sh and the silk-controller binary where the jobs expect them.
    fn build(jobs: Value) -> Vm {
        let dir = tempfile::Builder::new()
            .prefix("silk-bbr.")
            .tempdir()
            .unwrap();
        let vm = Vm {
            dir,
            outputs: Mutex::new(Vec::new()),
        };
        let mut render = Command::new("ruby");
        render
            .arg(repo_root().join("scripts/lib/render_jobs.rb"))
            .arg("--root")
            .arg(vm.root());
        let out = silk_testkit::netns::output_with_stdin(
            &mut render,
            json!({ "jobs": jobs }).to_string().as_bytes(),
        )
        .unwrap();
        assert!(
            out.status.success(),
            "render_jobs.rb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bbr");
        let restorer = fixtures.join("database-backup-restorer");
        // Copies, not links: the stand-ins find the tree from their own location.
        for (from, to) in [
            (fixtures.join("monit"), "bosh/bin/monit"),
            (fixtures.join("bpm"), "jobs/bpm/bin/bpm"),
            (restorer.clone(), "jobs/database-backup-restorer/bin/backup"),
            (restorer, "jobs/database-backup-restorer/bin/restore"),
            (
                repo_root().join("src/silk-ctl-utils/ctl_util.sh"),
                "packages/silk-ctl-utils/ctl_util.sh",
            ),
            (
                PathBuf::from(env!("CARGO_BIN_EXE_silk-controller")),
                "packages/silk-controller/bin/silk-controller",
            ),
        ] {
            let to = vm.vcap(to);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap();
        }
        vm
    }

    /// Runs a rendered script as BBR does (root, a bare environment plus `env`); its exit
    /// status and output, which is kept for the secrets check.
    async fn run(&self, script: &str, env: &[(&str, String)]) -> (bool, String) {
        let mut cmd = Command::new(self.vcap(script));
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(env.iter().map(|(k, v)| (k, v)));
        let out = tokio::task::spawn_blocking(move || {
            output_with_timeout(cmd, Duration::from_secs(240)).unwrap()
        })
        .await
        .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.outputs
            .lock()
            .unwrap()
            .push(format!("== {script}\n{text}"));
        (out.status.success(), text)
    }

    /// [`Vm::run`], failing the test unless the script succeeds.
    async fn run_ok(&self, script: &str, env: &[(&str, String)]) -> String {
        let (ok, text) = self.run(script, env).await;
        assert!(
            ok,
            "{script} failed:\n{text}\ncontroller log:\n{}",
            self.controller_log()
        );
        text
    }

    fn controller_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.vcap("sys/run/bpm/silk-controller/silk-controller.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    fn controller_log(&self) -> String {
        std::fs::read_to_string(self.vcap("sys/log/silk-controller/silk-controller.stdout.log"))
            .unwrap_or_default()
    }

    fn artifact_env(&self) -> (&'static str, String) {
        (
            "BBR_ARTIFACT_DIRECTORY",
            format!("{}/{ARTIFACT_DIR}", self.root().display()),
        )
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(pid) = self.controller_pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

// === Cells ===

/// Cells renewing their leases every 100 ms, as silk-daemon does on its poll interval, through
/// the daemon's own client. Retriable failures (controller stopped, database gone) are counted
/// and retried; a non-retriable one (the lease is someone else's, which makes a daemon exit)
/// is recorded and fails the test.
struct Cells {
    renewed: Vec<Arc<AtomicU64>>,
    fatal: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Cells {
    fn start(client: &ControllerClient, leases: &[Lease]) -> Cells {
        let fatal = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut renewed = Vec::new();
        let mut tasks = Vec::new();
        for lease in leases {
            let count = Arc::new(AtomicU64::new(0));
            renewed.push(count.clone());
            let (client, lease, fatal, stop) =
                (client.clone(), lease.clone(), fatal.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.renew(&lease).await {
                        Ok(()) => {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.is_non_retriable() => {
                            fatal
                                .lock()
                                .unwrap()
                                .push(format!("{}: {e}", lease.underlay_ip));
                        }
                        Err(_) => {}
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
        }
        Cells {
            renewed,
            fatal,
            stop,
            tasks,
        }
    }

    fn counts(&self) -> Vec<u64> {
        self.renewed
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Waits (bounded) until every cell has renewed `more` times after `since`.
    async fn wait_renewed(&self, since: &[u64], more: u64) {
        for _ in 0..300 {
            if self.counts().iter().zip(since).all(|(n, s)| *n >= s + more) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "cells did not renew {more} more times: {:?} since {since:?}",
            self.counts()
        );
    }

    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let fatal = self.fatal.lock().unwrap().clone();
        fatal
    }
}

// === The scenario ===

async fn health_status(port: u16) -> Option<u16> {
    plain_request(port, "GET", "/health", "")
        .await
        .ok()
        .map(|r| r.0)
}

fn sorted(leases: Vec<Lease>) -> BTreeSet<(String, String, String)> {
    leases
        .into_iter()
        .map(|l| (l.underlay_ip, l.overlay_subnet, l.overlay_hardware_addr))
        .collect()
}

async fn backup_and_restore(engine: Engine) {
    silk_testkit::require_root();
    let db = TestDatabase::create(engine);
    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    let pem = |p: &Path| std::fs::read_to_string(p).unwrap();
    let (api_port, health_port, debug_port) = (free_port(), free_port(), free_port());
    let database = engine.properties(&db.name);
    let password = database["password"].as_str().unwrap().to_string();
    let server_key = pem(&certs.server_key);
    let vm = Vm::build(json!([
        {
            "name": "silk-controller",
            "properties": {
                "ca_cert": pem(&certs.ca_cert), "server_cert": pem(&certs.server_cert),
                "server_key": server_key, "listen_ip": "127.0.0.1", "listen_port": api_port,
                "health_check_port": health_port, "debug_port": debug_port,
                "metron_port": free_port(), "database": database, "release_level_backup": true,
            }
        },
        { "name": "bbr-silkdb", "properties": { "release_level_backup": true } },
    ]));

    // The VM boots: monit starts the controller.
    let monit = vm.vcap("bosh/bin/monit");
    let out = Command::new(&monit)
        .args(["start", "silk-controller"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for _ in 0..300 {
        if health_status(health_port).await == Some(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        health_status(health_port).await,
        Some(200),
        "controller log:\n{}",
        vm.controller_log()
    );

    let tls = ClientTls::from_files(
        path_str(&certs.ca_cert),
        path_str(&certs.client_cert),
        path_str(&certs.client_key),
    )
    .unwrap();
    let client = ControllerClient::new(
        &format!("https://127.0.0.1:{api_port}"),
        &tls,
        Duration::from_secs(10),
    )
    .unwrap();
    let mut leases = Vec::new();
    for ip in CELLS {
        leases.push(client.acquire(ip, false).await.unwrap());
    }
    let cells = Cells::start(&client, &leases);
    cells.wait_renewed(&[0; CELLS.len()], 3).await;

    // Backup: lock, backup, unlock.
    vm.run_ok("jobs/silk-controller/bin/bbr/pre-backup-lock", &[])
        .await;
    assert_eq!(
        health_status(health_port).await,
        None,
        "locked controller still answers"
    );
    let e = client.renew(&leases[0]).await.unwrap_err();
    assert!(
        !e.is_non_retriable(),
        "a stopped controller is a retriable failure: {e}"
    );
    let artifact_dir = vm.root().join(ARTIFACT_DIR);
    std::fs::create_dir_all(&artifact_dir).unwrap();
    vm.run_ok("jobs/bbr-silkdb/bin/bbr/backup", &[vm.artifact_env()])
        .await;
    let artifact = artifact_dir.join("silkdb-artifact-file");
    assert!(
        std::fs::metadata(&artifact).unwrap().len() > 0,
        "empty artifact"
    );
    let config = vm.vcap("jobs/bbr-silkdb/config/config.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let unlock_env = [("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", "true".to_string())];
    vm.run_ok(
        "jobs/silk-controller/bin/bbr/post-backup-unlock",
        &unlock_env,
    )
    .await;
    assert_eq!(health_status(health_port).await, Some(200));
    // Unlock is idempotent.
    vm.run_ok(
        "jobs/silk-controller/bin/bbr/post-backup-unlock",
        &unlock_env,
    )
    .await;
    let backed_up = sorted(client.list().await.unwrap());
    assert_eq!(backed_up, sorted(leases.clone()));

    // After the backup a cell joins, then the database is lost.
    client.acquire(LATE_CELL, false).await.unwrap();
    assert_eq!(client.list().await.unwrap().len(), CELLS.len() + 1);
    engine.wipe(&db.name);
    assert!(
        client.list().await.is_err(),
        "the controller still lists leases"
    );

    // Restore: lock, restore, unlock.
    vm.run_ok("jobs/silk-controller/bin/bbr/pre-restore-lock", &[])
        .await;
    assert_eq!(health_status(health_port).await, None);
    vm.run_ok("jobs/bbr-silkdb/bin/bbr/restore", &[vm.artifact_env()])
        .await;
    let before_unlock = cells.counts();
    vm.run_ok("jobs/silk-controller/bin/bbr/post-restore-unlock", &[])
        .await;

    // Exactly the leases of the backup, and the running cells keep renewing them.
    assert_eq!(sorted(client.list().await.unwrap()), backed_up);
    cells.wait_renewed(&before_unlock, 5).await;
    assert_eq!(sorted(client.list().await.unwrap()), backed_up);
    let fatal = cells.stop().await;
    assert!(
        fatal.is_empty(),
        "cells got non-retriable errors: {fatal:?}"
    );

    // Nothing a script printed holds a secret.
    let outputs = vm.outputs.lock().unwrap().join("\n");
    if !password.is_empty() {
        assert!(
            !outputs.contains(&password),
            "a script printed the database password:\n{outputs}"
        );
    }
    assert!(
        !outputs.contains("PRIVATE KEY"),
        "a script printed a key:\n{outputs}"
    );

    let out = Command::new(&monit)
        .args(["stop", "silk-controller"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and postgres: run via scripts/test"]
async fn bbr_lock_backup_unlock_wipe_restore_on_postgres() {
    silk_testkit::require_root_and_pg();
    backup_and_restore(Engine::Postgres).await;
}
