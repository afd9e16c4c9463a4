//! A test bed that outlives the process that built it (the lab): [`Testbed::leak`] detaches
//! the processes and keeps namespaces, database and files, recording all of them in a
//! [`LabState`] file; [`destroy`] later removes exactly what that file lists. Processes are
//! stopped by pid, and only when `/proc/<pid>/exe` is still the binary we started.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Testbed;
use mysql_async::prelude::Queryable;
use silk_testkit::mysql::MysqlServer;
use silk_testkit::netns::run_cmd;
use silk_testkit::postgres::PgCluster;

/// One detached process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabProcess {
    pub name: String,
    pub pid: u32,
    pub binary: PathBuf,
    pub log: PathBuf,
    /// Where and how it was started ([`LabProcess::restart`]).
    #[serde(default)]
    pub ns: String,
    #[serde(default)]
    pub argv: Vec<String>,
}

impl LabProcess {
    /// Records a running process and writes `<dir>/<name>.pid`.
    pub fn record(dir: &Path, p: super::process::Proc, binary: &Path) -> LabProcess {
        let name = p.name.replace(' ', "-");
        let (log, ns, argv) = (p.log.clone(), p.ns.clone(), p.argv.clone());
        let pid = p.detach();
        let _ = std::fs::write(dir.join(format!("{name}.pid")), pid.to_string());
        LabProcess {
            name,
            pid,
            binary: binary.to_path_buf(),
            log,
            ns,
            argv,
        }
    }

    /// SIGKILL (a crash), then the same command line again in the same namespace, detached;
    /// the pid changes. Only a process that is still the one we started is killed.
    pub fn restart(&mut self, dir: &Path) -> std::io::Result<()> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if self.argv.is_empty() {
            return Err(std::io::Error::other(format!(
                "{}: no command line recorded",
                self.name
            )));
        }
        if LabState::alive(self) {
            kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL).map_err(std::io::Error::from)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while LabState::alive(self) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let p = super::process::Proc::spawn(&self.name, &self.ns, &self.argv, &self.log, true)?;
        *self = LabProcess::record(dir, p, &self.binary);
        Ok(())
    }
}

/// One cell as the lab reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabCell {
    pub ns: String,
    pub underlay_ip: String,
}

/// Everything a leaked bed consists of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub dir: PathBuf,
    pub namespaces: Vec<String>,
    pub etc_dirs: Vec<PathBuf>,
    pub processes: Vec<LabProcess>,
    pub api_ns: String,
    pub cells: Vec<LabCell>,
    pub pg_socket_dir: String,
    pub pg_port: u16,
    pub pg_user: String,
    pub database: String,
    pub certs_dir: PathBuf,
    /// `postgres` (the default of older state files) or `mysql`.
    #[serde(default = "postgres")]
    pub engine: String,
    /// The MariaDB server of a MySQL lab (the database is `database`).
    #[serde(default)]
    pub mysql: Option<MysqlLogin>,
}

fn postgres() -> String {
    "postgres".into()
}

/// How the lab reaches its MariaDB server from the root namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MysqlLogin {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
}

/// A row of the `subnets` table: underlay IP, overlay subnet, MAC, last renewal (epoch seconds).
pub type SubnetRow = (String, String, String, i64);

const SUBNETS_SQL: &str = "SELECT underlay_ip, overlay_subnet, overlay_hwaddr, last_renewed_at \
     FROM subnets ORDER BY underlay_ip";

impl LabState {
    pub fn read(path: &Path) -> std::io::Result<LabState> {
        let text = std::fs::read_to_string(path)?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }

    /// The bed's database cluster.
    pub fn cluster(&self) -> PgCluster {
        PgCluster {
            socket_dir: self.pg_socket_dir.clone(),
            port: self.pg_port,
            user: self.pg_user.clone(),
        }
    }

    fn mysql_server(&self) -> Option<MysqlServer> {
        self.mysql.as_ref().map(|m| MysqlServer {
            host: m.host.clone(),
            port: m.port,
            user: m.user.clone(),
            password: m.password.clone(),
        })
    }

    /// Every row of the lab database's `subnets` table, on either engine.
    pub async fn subnets(&self) -> anyhow::Result<Vec<SubnetRow>> {
        match self.mysql_server() {
            Some(server) => {
                let mut c = server.connect(Some(&self.database)).await?;
                let rows: Vec<SubnetRow> = c.query(SUBNETS_SQL).await?;
                let _ = c.disconnect().await;
                Ok(rows)
            }
            None => {
                let client = self.cluster().connect(&self.database).await?;
                let rows = client.query(SUBNETS_SQL, &[]).await?;
                Ok(rows
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                    .collect())
            }
        }
    }

    /// Drops the lab's database (its server stays).
    async fn drop_database(&self) -> Result<(), String> {
        let name = &self.database;
        match self.mysql_server() {
            Some(server) => {
                let mut c = server
                    .connect(None)
                    .await
                    .map_err(|e| format!("connect to mysql to drop {name}: {e}"))?;
                c.query_drop(format!("DROP DATABASE IF EXISTS {name}"))
                    .await
                    .map_err(|e| format!("drop database {name}: {e}"))?;
                let _ = c.disconnect().await;
            }
            None => {
                let admin = self
                    .cluster()
                    .connect("postgres")
                    .await
                    .map_err(|e| format!("connect to postgres to drop {name}: {e}"))?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| format!("drop database {name}: {e}"))?;
            }
        }
        Ok(())
    }

    /// Whether process `p` is still the one we started.
    pub fn alive(p: &LabProcess) -> bool {
        std::fs::read_link(format!("/proc/{}/exe", p.pid)).is_ok_and(|exe| exe == p.binary)
    }
}

impl Testbed {
    /// Detaches every process and keeps every namespace, the database and the files; the
    /// returned state lists them for [`destroy`]. Pid files go to `<dir>/<name>.pid`.
    pub fn leak(mut self) -> LabState {
        let mut processes = Vec::new();
        let dir = self.dir.clone();
        let mut record = |p: super::process::Proc, binary: &Path| {
            processes.push(LabProcess::record(&dir, p, binary));
        };
        if let Some(p) = self.controller.take() {
            record(p, &self.binaries.controller);
        }
        if let Some((p, bin)) = self.policy_server.take() {
            record(p, &bin);
        }
        for c in &mut self.cells {
            if let Some(p) = c.daemon.take() {
                record(p, &self.binaries.daemon);
            }
            if let Some((p, bin)) = c.agent.take() {
                record(p, &bin);
            }
            if let Some((p, bin)) = c.logger.take() {
                record(p, &bin);
            }
        }
        for (p, bin) in std::mem::take(&mut self.others) {
            record(p, &bin);
        }
        let namespaces = self.namespaces();
        for c in self.containers.drain(..) {
            c.leak();
        }
        for x in self.extras.drain(..) {
            x.leak();
        }
        let cells = self
            .cells
            .drain(..)
            .map(|c| LabCell {
                underlay_ip: c.underlay_ip.to_string(),
                ns: c.ns.leak(),
            })
            .collect();
        let api_ns = self.api.take().map(|n| n.leak()).unwrap_or_default();
        if let Some(u) = self.underlay.take() {
            u.leak();
        }
        let db = self.db.take();
        let database = db
            .as_ref()
            .map(|d| d.name().to_string())
            .unwrap_or_default();
        let engine = db
            .as_ref()
            .map_or("postgres", |d| d.engine.name())
            .to_string();
        let cluster = db
            .as_ref()
            .and_then(|d| d.postgres())
            .map(|p| p.cluster.clone())
            .unwrap_or(PgCluster {
                socket_dir: String::new(),
                port: 0,
                user: String::new(),
            });
        let mysql = db.as_ref().and_then(|d| d.mysql()).map(|m| MysqlLogin {
            host: m.server.host.clone(),
            port: m.server.port,
            user: m.server.user.clone(),
            password: m.server.password.clone(),
        });
        std::mem::forget(db);
        let certs_dir = self.certs.take().map(|c| c.keep()).unwrap_or_default();
        LabState {
            dir: self.dir.clone(),
            namespaces,
            etc_dirs: std::mem::take(&mut self.etc_dirs),
            processes,
            api_ns,
            cells,
            pg_socket_dir: cluster.socket_dir,
            pg_port: cluster.port,
            pg_user: cluster.user,
            database,
            certs_dir,
            engine,
            mysql,
        }
    }
}

/// Removes everything `state` lists: processes (SIGTERM, then SIGKILL after 10 s), namespaces
/// (and with them every veth, bridge and VTEP), `/etc/netns` entries, the database and the
/// certificates. Goes on past failures and returns them all.
pub async fn destroy(state: &LabState) -> Vec<String> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let mut errors = Vec::new();
    for p in &state.processes {
        if LabState::alive(p) {
            let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while state.processes.iter().any(LabState::alive) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for p in state.processes.iter().filter(|p| LabState::alive(p)) {
        if let Err(e) = kill(Pid::from_raw(p.pid as i32), Signal::SIGKILL) {
            errors.push(format!("kill {} ({}): {e}", p.name, p.pid));
        }
    }
    for ns in &state.namespaces {
        let exists = Path::new("/run/netns").join(ns).exists();
        if exists {
            match run_cmd(&["ip", "netns", "delete", ns], Duration::from_secs(30)) {
                Ok(o) if o.status.success() => {}
                Ok(o) => errors.push(format!(
                    "delete netns {ns}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => errors.push(format!("delete netns {ns}: {e}")),
            }
        }
    }
    for d in &state.etc_dirs {
        if d.exists() {
            if let Err(e) = std::fs::remove_dir_all(d) {
                errors.push(format!("remove {}: {e}", d.display()));
            }
        }
    }
    if !state.database.is_empty() {
        if let Err(e) = state.drop_database().await {
            errors.push(e);
        }
    }
    if !state.certs_dir.as_os_str().is_empty() && state.certs_dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&state.certs_dir) {
            errors.push(format!("remove {}: {e}", state.certs_dir.display()));
        }
    }
    errors
}
