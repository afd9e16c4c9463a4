//! Private throwaway database servers for tests that must stop a server or give it another
//! TLS setup without disturbing the shared ones scripts/test starts: a PostgreSQL cluster or a
//! MariaDB server in a temp dir on a free 127.0.0.1 port, with TLS from [`DbServerCerts`] or
//! none. [`PrivateServer::stop`] and [`PrivateServer::start`] take it away and bring it back
//! on the same port; drop stops it (by its PID) and removes the directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::db::{DbTls, Engine};
use crate::mysql::MysqlServer;
use crate::postgres::PgCluster;

/// A CA and a server certificate for `names`, as PEM files in `dir`.
pub struct DbServerCerts {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl DbServerCerts {
    pub fn generate(dir: &Path, names: &[&str]) -> Result<DbServerCerts, rcgen::Error> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "private test database CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let mut leaf =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        leaf.distinguished_name.push(DnType::CommonName, names[0]);
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = leaf.signed_by(&key, &ca)?;
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("write certificate");
            p
        };
        Ok(DbServerCerts {
            ca_cert: write("db-ca.crt", &ca.pem()),
            server_cert: write("db-server.crt", &cert.pem()),
            server_key: write("db-server.key", &key.serialize_pem()),
        })
    }
}

/// A database server of our own.
pub struct PrivateServer {
    engine: Engine,
    dir: tempfile::TempDir,
    port: u16,
    tls: Option<DbServerCerts>,
    password: String,
    /// mariadbd, while it runs (PostgreSQL runs under pg_ctl).
    mysqld: Option<Child>,
    running: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chown_to(path: &Path, user: &str) {
    run(Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:"))
        .arg(path));
}

fn pg_bindir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries in /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("initdb")
}

impl PrivateServer {
    /// Initialises and starts a server; `tls` names the certificate it presents (none: plain).
    pub fn start_new(engine: Engine, tls: Option<DbServerCerts>) -> PrivateServer {
        crate::require_root();
        let dir = tempfile::Builder::new()
            .prefix(&format!("silk-private-{}.", engine.name()))
            .tempdir()
            .expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let mut s = PrivateServer {
            engine,
            dir,
            port: free_port(),
            tls,
            password: format!("pw{:016x}", rand::random::<u64>()),
            mysqld: None,
            running: false,
        };
        s.init();
        s.start();
        s
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn owner(&self) -> &'static str {
        match self.engine {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        }
    }

    fn init(&mut self) {
        let data = self.path("data");
        std::fs::create_dir(&data).expect("data dir");
        if let Some(tls) = &self.tls {
            std::fs::copy(&tls.server_cert, self.path("server.crt")).expect("copy cert");
            std::fs::copy(&tls.server_key, self.path("server.key")).expect("copy key");
            std::fs::set_permissions(
                self.path("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod key");
        }
        chown_to(self.dir.path(), self.owner());
        match self.engine {
            Engine::Postgres => run(Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(pg_bindir().join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8"])),
            Engine::Mysql => run(Command::new("mariadb-install-db")
                .args(["--no-defaults", "--user=mysql", "--skip-test-db"])
                .arg(format!("--datadir={}", data.display()))
                .arg("--auth-root-authentication-method=socket")),
        }
    }

    /// Starts the (stopped) server on its port and waits until it answers.
    pub fn start(&mut self) {
        assert!(!self.running, "already running");
        match self.engine {
            Engine::Postgres => {
                let mut opts = format!(
                    "-k {dir} -p {port} -h 127.0.0.1 -c fsync=off -c max_connections=300",
                    dir = self.dir.path().display(),
                    port = self.port
                );
                if self.tls.is_some() {
                    opts.push_str(&format!(
                        " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                        self.path("server.crt").display(),
                        self.path("server.key").display()
                    ));
                }
                run(Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(pg_bindir().join("pg_ctl"))
                    .arg("-D")
                    .arg(self.path("data"))
                    .arg("-l")
                    .arg(self.path("server.log"))
                    .args(["-w", "-t", "60", "-o", &opts, "start"]));
            }
            Engine::Mysql => {
                let mut cmd = Command::new("mariadbd");
                cmd.args([
                    "--no-defaults",
                    "--user=mysql",
                    "--skip-log-bin",
                    "--skip-name-resolve",
                ])
                .arg(format!("--datadir={}", self.path("data").display()))
                .arg(format!("--socket={}", self.path("mysqld.sock").display()))
                .arg(format!("--pid-file={}", self.path("mysqld.pid").display()))
                .arg(format!("--log-error={}", self.path("server.log").display()))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--port={}", self.port))
                .arg("--innodb-flush-log-at-trx-commit=0")
                .arg("--innodb-buffer-pool-size=32M");
                if self.tls.is_some() {
                    cmd.arg(format!("--ssl-cert={}", self.path("server.crt").display()))
                        .arg(format!("--ssl-key={}", self.path("server.key").display()));
                } else {
                    cmd.arg("--skip-ssl");
                }
                let child = cmd
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn mariadbd");
                self.mysqld = Some(child);
                self.wait_mysql();
            }
        }
        self.running = true;
    }

    fn mysql_root(&self, sql: &str) -> bool {
        Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.path("mysqld.sock").display()))
            .args(["-uroot", "-e", sql])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn wait_mysql(&mut self) {
        for _ in 0..240 {
            if self.mysql_root("SELECT 1") {
                // Idempotent: the user survives a restart.
                let sql = format!(
                    "CREATE USER IF NOT EXISTS 'silk'@'%' IDENTIFIED BY '{}'; GRANT ALL PRIVILEGES ON *.* TO 'silk'@'%';",
                    self.password
                );
                assert!(self.mysql_root(&sql), "create the test user");
                return;
            }
            if let Some(Ok(Some(status))) = self.mysqld.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "mariadbd exited with {status}: {}",
                    std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("mariadbd did not start");
    }

    /// Stops the server (fast shutdown; clients see their connections close).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        match self.engine {
            Engine::Postgres => run(Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(pg_bindir().join("pg_ctl"))
                .arg("-D")
                .arg(self.path("data"))
                .args(["-m", "fast", "-w", "stop"])),
            Engine::Mysql => {
                if let Some(mut child) = self.mysqld.take() {
                    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                    let _ = child.wait();
                }
            }
        }
        self.running = false;
    }

    /// Connection settings of the PostgreSQL cluster.
    pub fn pg_cluster(&self) -> PgCluster {
        assert_eq!(self.engine, Engine::Postgres);
        PgCluster {
            socket_dir: self.dir.path().display().to_string(),
            port: self.port,
            user: "postgres".into(),
        }
    }

    /// Connection settings of the MariaDB server (the `silk` user, over TCP).
    pub fn mysql_server(&self) -> MysqlServer {
        assert_eq!(self.engine, Engine::Mysql);
        MysqlServer {
            host: "127.0.0.1".into(),
            port: self.port,
            user: "silk".into(),
            password: self.password.clone(),
        }
    }

    /// TLS verified against this server's CA, or off for a server without TLS.
    pub fn client_tls(&self) -> DbTls {
        match &self.tls {
            Some(c) => DbTls {
                require_ssl: true,
                ca_cert: c.ca_cert.display().to_string(),
                skip_hostname_validation: false,
            },
            None => DbTls::off(),
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
    }
}
