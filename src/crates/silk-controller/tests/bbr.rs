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
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, plain_request, Engine, TestDb};
use serde_json::{json, Value};
use silk_client::{ClientTls, ControllerClient};
use silk_core::Lease;
use silk_testkit::certs::{path_str, ServerKey, TestCerts};
use silk_testkit::netns::output_with_timeout;

/// Underlay IPs of the cells that hold a lease when the backup is taken.
const CELLS: [&str; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
/// A cell that joins after the backup: the restore must forget it.
const LATE_CELL: &str = "10.0.0.99";
/// A cell that starts on the wiped database, before the restore: the restore must forget it.
const NEW_CELL: &str = "10.0.0.77";
/// Path of the artifact directory BBR creates for the job (with its trailing slash).
const ARTIFACT_DIR: &str = "var/vcap/store/bbr-backup/bbr-silkdb/";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

// === Databases ===

/// What silk loses in a disaster: its table and the migration bookkeeping.
const WIPE: &str = "DROP TABLE subnets; DROP TABLE gorp_migrations";

/// silk-controller's `database` job properties for `db`, from the controller config object the
/// test kit renders for it (TCP on 127.0.0.1, TLS with the servers' CA): the same settings in
/// the job's property names, the CA as PEM text instead of a path. PostgreSQL's test cluster
/// trusts local connections, so there the password is a marker, which must never show up in a
/// script's output either.
fn database_properties(db: &TestDb) -> Value {
    let c: Value = serde_json::from_str(&db.controller_database_json()).unwrap();
    let password = match c["password"].as_str().unwrap() {
        "" => "bbr-test-marker-password",
        p => p,
    };
    let mut props = json!({
        "type": c["type"], "username": c["user"], "password": password, "host": c["host"],
        "port": c["port"], "name": c["database_name"], "connect_timeout_seconds": 10,
        "require_ssl": c["require_ssl"],
        "skip_hostname_validation": c["skip_hostname_validation"],
    });
    if c["require_ssl"] == json!(true) {
        props["ca_cert"] = json!(std::fs::read_to_string(c["ca_cert"].as_str().unwrap()).unwrap());
    }
    props
}

// === The VM ===

/// A VM-like tree: the rendered jobs, the stand-ins and the binary under test; with `netns`,
/// everything in it runs inside that network namespace (the controller's VM of a test bed).
/// On drop the controller the stand-in bpm started is killed by the PID in its pid file.
struct Vm {
    dir: tempfile::TempDir,
    netns: Option<String>,
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
    fn build(jobs: Value, netns: Option<String>) -> Vm {
        let dir = tempfile::Builder::new()
            .prefix("silk-bbr.")
            .tempdir()
            .unwrap();
        let vm = Vm {
            dir,
            netns,
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

    /// Runs `argv` (its program relative to /var/vcap of the tree) as BBR runs a script: as
    /// root, with a bare environment plus `env`. Its exit status and output, which is kept for
    /// the secrets check.
    async fn run(&self, argv: &[&str], env: &[(&str, String)]) -> (bool, String) {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(self.vcap(argv[0]));
                c
            }
            None => Command::new(self.vcap(argv[0])),
        };
        cmd.args(&argv[1..])
            .env_clear()
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
            .push(format!("== {}\n{text}", argv.join(" ")));
        (out.status.success(), text)
    }

    /// [`Vm::run`], failing the test unless the program succeeds.
    async fn run_ok(&self, argv: &[&str], env: &[(&str, String)]) -> String {
        let (ok, text) = self.run(argv, env).await;
        assert!(
            ok,
            "{argv:?} failed:\n{text}\ncontroller log:\n{}",
            self.controller_log()
        );
        text
    }

    /// The VM boots: monit starts silk-controller, post-start waits until it serves.
    async fn boot(&self) {
        self.run_ok(&["bosh/bin/monit", "start", "silk-controller"], &[])
            .await;
        self.run_ok(&["jobs/silk-controller/bin/post-start"], &[])
            .await;
    }

    async fn shutdown(&self) {
        self.run_ok(&["bosh/bin/monit", "stop", "silk-controller"], &[])
            .await;
    }

    /// BBR backup: pre-backup-lock, backup, post-backup-unlock (twice: it is idempotent).
    /// `while_locked` runs between lock and backup.
    async fn backup(&self, while_locked: impl std::future::Future<Output = ()>) {
        self.run_ok(&["jobs/silk-controller/bin/bbr/pre-backup-lock"], &[])
            .await;
        while_locked.await;
        let artifact_dir = self.root().join(ARTIFACT_DIR);
        std::fs::create_dir_all(&artifact_dir).unwrap();
        self.run_ok(&["jobs/bbr-silkdb/bin/bbr/backup"], &[self.artifact_env()])
            .await;
        let artifact = artifact_dir.join("silkdb-artifact-file");
        assert!(
            std::fs::metadata(&artifact).unwrap().len() > 0,
            "empty artifact"
        );
        let config = self.vcap("jobs/bbr-silkdb/config/config.json");
        assert_eq!(
            std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
            0o600,
            "the config with the password is not 0600"
        );
        let unlock_env = [("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", "true".to_string())];
        for _ in 0..2 {
            self.run_ok(
                &["jobs/silk-controller/bin/bbr/post-backup-unlock"],
                &unlock_env,
            )
            .await;
        }
    }

    /// BBR restore: pre-restore-lock, restore, post-restore-unlock. `while_locked` runs between
    /// lock and restore.
    async fn restore(&self, while_locked: impl std::future::Future<Output = ()>) {
        self.run_ok(&["jobs/silk-controller/bin/bbr/pre-restore-lock"], &[])
            .await;
        while_locked.await;
        self.run_ok(&["jobs/bbr-silkdb/bin/bbr/restore"], &[self.artifact_env()])
            .await;
        self.run_ok(&["jobs/silk-controller/bin/bbr/post-restore-unlock"], &[])
            .await;
    }

    /// Nothing any script printed holds the password or a private key.
    fn assert_no_secrets(&self, password: &str) {
        let outputs = self.outputs.lock().unwrap().join("\n");
        if !password.is_empty() {
            assert!(
                !outputs.contains(password),
                "a script printed the database password:\n{outputs}"
            );
        }
        assert!(
            !outputs.contains("PRIVATE KEY"),
            "a script printed a key:\n{outputs}"
        );
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

/// silk-controller's properties: the test certificates, `database`, and the rest.
fn controller_properties(certs: &TestCerts, database: &Value, extra: Value) -> Value {
    let pem = |p: &Path| std::fs::read_to_string(p).unwrap();
    let mut props = json!({
        "ca_cert": pem(&certs.ca_cert), "server_cert": pem(&certs.server_cert),
        "server_key": pem(&certs.server_key), "database": database, "release_level_backup": true,
    });
    for (k, v) in extra.as_object().unwrap() {
        props[k] = v.clone();
    }
    props
}

fn bbr_silkdb() -> Value {
    json!({ "name": "bbr-silkdb", "properties": { "release_level_backup": true } })
}

/// Lock, backup, unlock; a cell joins; the database is wiped; lock, restore, unlock: the
/// controller serves exactly the leases of the backup and renewing cells never notice more
/// than retriable failures.
async fn bbr_lock_backup_unlock_wipe_restore(engine: Engine) {
    silk_testkit::require_root();
    let db = TestDb::create(engine).await;
    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    let (api_port, health_port) = (free_port(), free_port());
    let database = database_properties(&db);
    let extra = json!({
        "listen_ip": "127.0.0.1", "listen_port": api_port, "health_check_port": health_port,
        "debug_port": free_port(), "metron_port": free_port(),
    });
    let vm = Vm::build(
        json!([
            { "name": "silk-controller", "properties": controller_properties(&certs, &database, extra) },
            bbr_silkdb(),
        ]),
        None,
    );
    vm.boot().await;
    assert_eq!(health_status(health_port).await, Some(200));

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

    vm.backup(async {
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
    })
    .await;
    assert_eq!(health_status(health_port).await, Some(200));
    let backed_up = sorted(client.list().await.unwrap());
    assert_eq!(backed_up, sorted(leases.clone()));

    // After the backup a cell joins, then the database is lost.
    client.acquire(LATE_CELL, false).await.unwrap();
    assert_eq!(client.list().await.unwrap().len(), CELLS.len() + 1);
    db.execute(WIPE).await;
    assert!(
        client.list().await.is_err(),
        "the controller still lists leases"
    );
    // The controller restarts on the empty database and creates its tables again; the renewing
    // cells re-register there and a new cell takes a lease. The restore replaces all of it.
    vm.shutdown().await;
    vm.boot().await;
    // Re-registered first, so the new cell cannot take a restored cell's subnet.
    cells.wait_renewed(&cells.counts(), 2).await;
    client.acquire(NEW_CELL, false).await.unwrap();
    assert_eq!(client.list().await.unwrap().len(), CELLS.len() + 1);

    let mut before_unlock = Vec::new();
    vm.restore(async {
        assert_eq!(health_status(health_port).await, None);
        before_unlock = cells.counts();
    })
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
    vm.assert_no_secrets(database["password"].as_str().unwrap());
    vm.shutdown().await;
}

// One test per engine: `bbr_lock_backup_unlock_wipe_restore::postgres` and `::mysql`.
both_engines!(bbr_lock_backup_unlock_wipe_restore);

/// Rows of `subnets`, expired or not: (underlay_ip, overlay_subnet, overlay_hwaddr) and the
/// `last_renewed_at` of each underlay IP.
async fn subnet_rows(db: &TestDb) -> Rows {
    let mut leases = BTreeSet::new();
    let mut renewed = Vec::new();
    for row in db
        .strings(
            "SELECT CONCAT(underlay_ip, ' ', overlay_subnet, ' ', overlay_hwaddr, ' ', \
             last_renewed_at) FROM subnets",
        )
        .await
    {
        let f: Vec<&str> = row.split(' ').collect();
        leases.insert((f[0].to_string(), f[1].to_string(), f[2].to_string()));
        renewed.push((f[0].to_string(), f[3].parse().unwrap()));
    }
    (leases, renewed)
}

type Rows = (BTreeSet<(String, String, String)>, Vec<(String, i64)>);

/// Polls [`subnet_rows`] every 100 ms until `done` holds (at most 30 s); the last rows.
async fn wait_rows(db: &TestDb, what: &str, done: impl Fn(&Rows) -> bool) -> Rows {
    for _ in 0..300 {
        let rows = subnet_rows(db).await;
        if done(&rows) {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = subnet_rows(db).await;
    assert!(done(&rows), "timed out waiting for {what}: {rows:?}");
    rows
}

fn epoch_now() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(now.as_secs()).unwrap()
}

/// The same cycle with real silk-daemons in the multi-cell test bed, on either engine: the
/// controller runs inside the bed's api namespace (as on diego-api), its scripts too, with the
/// database the bed's controller uses (PostgreSQL over its unix socket; MySQL over TLS
/// through the bed's relay on the namespace's 127.0.0.1:3306); the daemons renew every second
/// and must keep doing so, without exiting, through the backup, the loss of the database and
/// the restore.
async fn bbr_with_running_silk_daemons(engine: Engine) {
    use silk_lab::fabric::{relay::MYSQL_LISTEN, Binaries, Options, Testbed};
    silk_testkit::require_root();
    let dir = Path::new(env!("CARGO_BIN_EXE_silk-controller"))
        .parent()
        .unwrap();
    let mut bed = Testbed::build(
        Binaries::in_dir(dir).unwrap(),
        Options {
            cells: 2,
            engine,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let database = match engine {
        Engine::Postgres => {
            let pg = bed.db().cluster.clone();
            json!({
                "type": "postgres", "username": pg.user, "password": "bbr-test-marker-password",
                "host": pg.socket_dir, "port": pg.port, "name": bed.db().name,
                "connect_timeout_seconds": 10,
            })
        }
        Engine::Mysql => {
            let mut props = database_properties(bed.database());
            props["port"] = json!(MYSQL_LISTEN.port());
            props
        }
    };
    let password = database["password"].as_str().unwrap().to_string();
    let controller = controller_properties(bed.certs(), &database, json!({}));
    let vm = Vm::build(
        json!([{ "name": "silk-controller", "properties": controller }, bbr_silkdb()]),
        Some(bed.api_ns().name().to_string()),
    );
    // The controller is the rendered job's, not the bed's: start the bed's way to MySQL alone.
    bed.start_db_relay().unwrap();
    vm.boot().await;
    bed.start_daemons().unwrap();
    let backed_up = wait_rows(bed.database(), "leases of both cells", |r| r.0.len() == 2)
        .await
        .0;

    vm.backup(async {}).await;
    // A cell joins after the backup and is gone again (its VM deleted without a drain).
    let late = bed.add_cell().unwrap();
    bed.start_daemon(late).unwrap();
    wait_rows(bed.database(), "the late cell's lease", |r| r.0.len() == 3).await;
    bed.kill_daemon(late).unwrap();

    bed.database().execute(WIPE).await;
    vm.restore(async {}).await;
    let restored_at = epoch_now();
    assert_eq!(subnet_rows(bed.database()).await.0, backed_up);

    // Both daemons renew the restored leases and never exit.
    wait_rows(bed.database(), "renewals after the restore", |r| {
        r.1.len() == 2 && r.1.iter().all(|(_, at)| *at > restored_at)
    })
    .await;
    assert_eq!(subnet_rows(bed.database()).await.0, backed_up);
    for i in 0..2 {
        assert!(
            bed.daemon_running(i),
            "daemon {i} exited:\n{}",
            bed.daemon_log(i)
        );
    }
    vm.assert_no_secrets(&password);
    vm.shutdown().await;
}

// `bbr_with_running_silk_daemons::postgres` and `::mysql`.
both_engines!(bbr_with_running_silk_daemons);
