//! Test harness: the real silk-controller binary started on a per-test database with
//! generated certificates, plus raw mutual-TLS HTTP/1.1 requests for exact status/body checks.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use silk_client::{ClientTls, ControllerClient};
use silk_testkit::certs::{path_str, ServerKey, TestCerts};
pub use silk_testkit::db::{Engine, TestDb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const NETWORK: &str = "10.255.0.0/16";
pub const EXPIRATION: i64 = 604_800;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Settings a test may change before starting the controller.
#[derive(Clone)]
pub struct Settings {
    pub network: String,
    pub prefix: u32,
    pub expiration: i64,
    pub metron_port: u16,
    /// The config's `loggregator` block, when set.
    pub loggregator: Option<serde_json::Value>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            network: format!("\"{NETWORK}\""),
            prefix: 24,
            expiration: EXPIRATION,
            metron_port: free_port(),
            loggregator: None,
        }
    }
}

pub fn config_json(db: &TestDb, certs: &TestCerts, s: &Settings, ports: (u16, u16, u16)) -> String {
    config_json_with(&db.controller_database_json(), certs, s, ports)
}

/// The config with `database` as the database object.
pub fn config_json_with(
    database: &str,
    certs: &TestCerts,
    s: &Settings,
    ports: (u16, u16, u16),
) -> String {
    let text = format!(
        r#"{{
  "debug_server_port": {debug}, "health_check_port": {health},
  "listen_host": "127.0.0.1", "listen_port": {api},
  "ca_cert_file": "{ca}", "server_cert_file": "{cert}", "server_key_file": "{key}",
  "network": {network}, "subnet_prefix_length": {prefix},
  "database": {database},
  "lease_expiration_seconds": {exp}, "metron_port": {metron}, "staleness_threshold_seconds": 3600,
  "metrics_emit_seconds": 1, "log_prefix": "cfnetworking", "max_idle_connections": 10,
  "max_open_connections": 20, "connections_max_lifetime_seconds": 3600
}}"#,
        api = ports.0,
        health = ports.1,
        debug = ports.2,
        ca = path_str(&certs.ca_cert),
        cert = path_str(&certs.server_cert),
        key = path_str(&certs.server_key),
        network = s.network,
        prefix = s.prefix,
        database = database,
        exp = s.expiration,
        metron = s.metron_port,
    );
    match &s.loggregator {
        None => text,
        Some(block) => {
            let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
            v["loggregator"] = block.clone();
            v.to_string()
        }
    }
}

/// A running controller process, killed (by its PID) on drop.
pub struct Controller {
    pub child: Child,
    pub api_port: u16,
    pub health_port: u16,
    pub debug_port: u16,
    pub stdout: PathBuf,
    pub config: PathBuf,
}

pub fn write_config(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// silk-controller with `config`, stdout to `stdout`, stderr beside it (`.stderr`).
fn spawn_controller(config: &Path, stdout: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_silk-controller"))
        .arg(format!("-config={}", config.display()))
        .stdout(std::fs::File::create(stdout).unwrap())
        .stderr(std::fs::File::create(stdout.with_extension("stderr")).unwrap())
        .spawn()
        .expect("spawn silk-controller")
}

impl Controller {
    pub async fn start(db: &TestDb, certs: &TestCerts, s: &Settings) -> Controller {
        Controller::start_on(&db.controller_database_json(), certs, s).await
    }

    /// With `database` as the config's database object.
    pub async fn start_with_database(
        _db: &TestDb,
        certs: &TestCerts,
        database: &str,
    ) -> Controller {
        Controller::start_on(database, certs, &Settings::default()).await
    }

    /// Starts a controller on free ports. A port picked free can be taken by a parallel test
    /// before the controller binds it: then it starts again on other ports (a few times).
    async fn start_on(database: &str, certs: &TestCerts, s: &Settings) -> Controller {
        for _ in 0..5 {
            let ports = (free_port(), free_port(), free_port());
            let config = write_config(
                certs.dir(),
                &format!("controller-{}.json", ports.0),
                &config_json_with(database, certs, s, ports),
            );
            let stdout = certs.dir().join(format!("controller-{}.log", ports.0));
            let mut c = Controller {
                child: spawn_controller(&config, &stdout),
                api_port: ports.0,
                health_port: ports.1,
                debug_port: ports.2,
                stdout,
                config,
            };
            match c.wait_healthy().await {
                Ok(()) => return c,
                Err(e) if e.contains("Address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("silk-controller found no free ports in 5 starts");
    }

    /// Stops the process and starts a new one with the same config (same ports).
    pub async fn restart(&mut self) {
        assert_eq!(self.terminate(), Some(0));
        self.child = spawn_controller(&self.config, &self.stdout);
        if let Err(e) = self.wait_healthy().await {
            panic!("{e}");
        }
    }

    /// Waits for /health; an early exit is an error with the process's output.
    async fn wait_healthy(&mut self) -> Result<(), String> {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
                return Err(format!(
                    "silk-controller exited early with {status}; log:\n{}\nstderr:\n{}",
                    log(&self.stdout),
                    log(&self.stdout.with_extension("stderr")),
                ));
            }
            if let Ok((200, _, _)) = plain_request(self.health_port, "GET", "/health", "").await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("silk-controller did not become healthy");
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    pub fn client(&self, certs: &TestCerts) -> ControllerClient {
        let tls = ClientTls::from_files(
            path_str(&certs.ca_cert),
            path_str(&certs.client_cert),
            path_str(&certs.client_key),
        )
        .unwrap();
        ControllerClient::new(&self.url(), &tls, Duration::from_secs(30)).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// SIGTERM by PID and the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("silk-controller did not exit after SIGTERM");
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Database on `engine`, certificates and one controller.
pub async fn setup(engine: Engine, s: Settings) -> (TestDb, TestCerts, Controller) {
    let db = TestDb::create(engine).await;
    let certs = TestCerts::generate(ServerKey::Rsa).unwrap();
    let controller = Controller::start(&db, &certs, &s).await;
    (db, certs, controller)
}

/// A plain HTTP/1.1 request to 127.0.0.1:`port`: (status, raw head, body).
pub async fn plain_request(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String, String)> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::task::spawn_blocking(move || {
        let mut s = StdTcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(request.as_bytes())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(split_response(&out))
    })
    .await
    .unwrap()
}

fn split_response(raw: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// rustls client config presenting `cert`/`key` (or no certificate) and trusting `ca`.
pub fn tls_client(
    certs: &TestCerts,
    client: Option<(&PathBuf, &PathBuf)>,
    provider: rustls::crypto::CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let ca = std::fs::read(&certs.ca_cert).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &ca[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let cert_pem = std::fs::read(cert).unwrap();
            let key_pem = std::fs::read(key).unwrap();
            let chain = rustls_pemfile::certs(&mut &cert_pem[..])
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls_pemfile::private_key(&mut &key_pem[..])
                .unwrap()
                .unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    Arc::new(config)
}

pub fn default_tls(certs: &TestCerts) -> Arc<rustls::ClientConfig> {
    tls_client(
        certs,
        Some((&certs.client_cert, &certs.client_key)),
        rustls::crypto::ring::default_provider(),
        rustls::DEFAULT_VERSIONS,
    )
}

/// One request over mutual TLS with `Connection: close`; extra header lines may be given.
pub async fn tls_request(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    extra_headers: &str,
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name =
        rustls::pki_types::ServerName::try_from("silk-controller.service.cf.internal").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: silk-controller.service.cf.internal\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 16384];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                // A close without close_notify after a complete response is fine here.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {
                    return Ok(())
                }
                Err(e) => return Err(e),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .map_err(|_| std::io::Error::other("response timed out"))??;
    if out.is_empty() {
        return Err(std::io::Error::other(
            "connection closed without a response",
        ));
    }
    Ok(split_response(&out))
}

/// Rows of `subnets` as (underlay_ip, overlay_subnet, overlay_hwaddr), sorted.
pub async fn rows(db: &TestDb) -> Vec<(String, String, String)> {
    db.subnets().await
}

/// Turns `async fn name(engine: Engine)` test bodies into one test per engine:
/// `name::postgres` and `name::mysql`, both gated behind the servers scripts/test starts.
#[macro_export]
macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            #[ignore = "needs the database servers: run via scripts/test"]
            async fn postgres() {
                super::$name(silk_testkit::db::Engine::Postgres).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            #[ignore = "needs the database servers: run via scripts/test"]
            async fn mysql() {
                super::$name(silk_testkit::db::Engine::Mysql).await
            }
        }
    )*};
}

/// Runs the binary on a config for `db` until it exits: (exit code, stderr).
pub fn run_to_exit(db: &TestDb, certs: &TestCerts) -> (Option<i32>, String) {
    let ports = (free_port(), free_port(), free_port());
    let config = write_config(
        certs.dir(),
        &format!("controller-{}.json", ports.0),
        &config_json(db, certs, &Settings::default(), ports),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_silk-controller"))
        .arg(format!("-config={}", config.display()))
        .output()
        .expect("run silk-controller");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
