//! The multi-cell test bed: network namespaces wired into one underlay segment, a controller
//! backed by PostgreSQL (reached over its unix socket, which crosses namespaces), and one
//! silk-daemon per cell, all real binaries with rendered configs and generated certificates.
//!
//! Layout, all inside namespaces this module creates and removes (nothing is added to the
//! root namespace but processes):
//!
//! ```text
//!  <t>-ul:  bridge br0 ── u0 ── eth0 192.0.2.1/24   <t>-api  (silk-controller :4103,
//!                     │                                       lab policy server :4003)
//!                     ├── u1 ── eth0 192.0.2.10/24  <t>-c0   (silk-daemon, silk-vtep,
//!                     │                                       vxlan-policy-agent)
//!                     ├── uN ── eth0 192.0.2.(10+N) <t>-cN
//!                     └── xK ── eth0 <chosen>       <t>-xK   (add_underlay_host)
//! ```
//!
//! Underlay addresses come from TEST-NET-1 (RFC 5737) and exist only inside the namespaces.
//! `/etc/netns/<ns>/hosts` maps the controller's and the policy server's DNS names for
//! `ip netns exec`.

pub mod garden;
pub mod lab;
pub mod process;
pub mod relay;
pub mod render;
pub mod vcap;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use process::Proc;
use render::{
    agent_json, controller_json, daemon_json, AgentSettings, Database, Timing, AGENT_DEBUG_PORT,
    CONTROLLER_NAME, DAEMON_PORT, POLICY_SERVER_CONTROL_PORT, POLICY_SERVER_NAME,
    POLICY_SERVER_PORT,
};
use silk_testkit::certs::{ServerKey, TestCerts};
use silk_testkit::db::{DbTls, Engine, TestDb};
use silk_testkit::netns::{run_ok, unique_token, NamedNetns};

pub use render::CONTROLLER_HEALTH_PORT;

/// The overlay network the bed's controller hands out.
pub const OVERLAY: &str = "10.255.0.0/16";
/// The block size of cell leases.
pub const PREFIX: u8 = 24;
/// The controller's underlay address.
pub const API_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certificates: {0}")]
    Certs(#[from] silk_testkit::certs::CertsError),
    #[error("config: {0}")]
    Render(#[from] render::RenderError),
    #[error("{0}")]
    Timeout(String),
    #[error("{name} exited early ({status}); log:\n{log}")]
    Exited {
        name: String,
        status: String,
        log: String,
    },
}

type Result<T> = std::result::Result<T, TestbedError>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestbedError {
    let what = what.into();
    move |source| TestbedError::Io { what, source }
}

/// Paths of the binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub controller: PathBuf,
    pub daemon: PathBuf,
}

impl Binaries {
    /// The daemon binary given by the caller (`env!("CARGO_BIN_EXE_silk-daemon")`); the
    /// controller from the same target directory, built with cargo when it is not there yet.
    pub fn beside(daemon: &str) -> Result<Self> {
        let daemon = PathBuf::from(daemon);
        let dir = daemon.parent().unwrap_or(Path::new(".")).to_path_buf();
        let controller = sibling_binary(&dir, "silk-controller", "silk-controller")?;
        Ok(Binaries { controller, daemon })
    }

    /// Both binaries from the target directory `dir` (where the caller's own binaries are),
    /// each built with cargo when it is not there yet: for tests of crates that depend on
    /// neither.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        Ok(Binaries {
            controller: sibling_binary(dir, "silk-controller", "silk-controller")?,
            daemon: sibling_binary(dir, "silk-daemon", "silk-daemon")?,
        })
    }
}

/// `dir/<bin>`, built with `cargo build -p <package> --bin <bin>` when it is missing (a test
/// binary of another crate does not make cargo build it).
pub fn sibling_binary(dir: &Path, package: &str, bin: &str) -> Result<PathBuf> {
    let path = dir.join(bin);
    if path.exists() {
        return Ok(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "-p", package, "--bin", bin])
        .status()
        .map_err(io(format!("cargo build -p {package}")))?;
    if !status.success() || !path.exists() {
        return Err(TestbedError::Timeout(format!(
            "{bin} not found at {} after cargo build ({status})",
            path.display()
        )));
    }
    Ok(path)
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Options {
    pub cells: usize,
    pub timing: Timing,
    pub log_level: String,
    /// Processes in their own process group, so they outlive the caller (the lab).
    pub detach: bool,
    /// Overlay network and lease block size of the controller and the daemons.
    pub overlay: String,
    pub prefix: u8,
    /// The controller's database: PostgreSQL (reached over its unix socket) or MySQL (the
    /// MariaDB server of `SILK_TEST_MYSQL_*`, reached over TCP with TLS through [`relay`]).
    pub engine: Engine,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cells: 3,
            timing: Timing::default(),
            log_level: "info".into(),
            detach: false,
            overlay: OVERLAY.into(),
            prefix: PREFIX,
            engine: Engine::Postgres,
        }
    }
}

/// One cell: its namespace, underlay address, config and daemon, and optionally its
/// vxlan-policy-agent.
#[derive(Debug)]
pub struct Cell {
    pub index: usize,
    pub ns: NamedNetns,
    pub underlay_ip: Ipv4Addr,
    /// The cell's state directory (configs, logs, the CNI plugins' state).
    pub dir: PathBuf,
    pub config: PathBuf,
    pub datastore: PathBuf,
    pub log: PathBuf,
    pub daemon: Option<Proc>,
    /// vxlan-policy-agent and the binary it runs.
    pub agent: Option<(Proc, PathBuf)>,
    /// iptables-logger and the binary it runs.
    pub logger: Option<(Proc, PathBuf)>,
}

impl Cell {
    /// The container metadata store the cell's cni-wrapper-plugin writes and its agent reads.
    pub fn metadata_store(&self) -> PathBuf {
        self.dir.join("data/container-metadata/store.json")
    }

    /// The iptables lock file shared by the cell's plugins and agent.
    pub fn iptables_lock(&self) -> PathBuf {
        self.dir.join("data/garden-cni/iptables.lock")
    }

    pub fn agent_log(&self) -> PathBuf {
        self.dir.join("vxlan-policy-agent.log")
    }

    /// The conflist garden-external-networker loads (rendered from the silk-cni job's template).
    pub fn conflist(&self) -> PathBuf {
        job_file(&self.dir, "silk-cni", "cni/cni-wrapper-plugin.conflist")
    }

    /// The cell's garden-external-networker, running the plugins found in `plugin_dir`.
    pub fn garden(&self, plugin_dir: &Path) -> garden::Garden {
        garden::Garden {
            cell_ns: self.ns.path().to_path_buf(),
            conflist: self.conflist(),
            plugin_dir: plugin_dir.to_path_buf(),
            cache_dir: self.dir.join("data/garden-cni/results"),
        }
    }

    pub fn logger_log(&self) -> PathBuf {
        self.dir.join("iptables-logger.log")
    }
}

/// The bed. Drop stops every process, removes every namespace (and with them the bridge and
/// veths) and the `/etc/netns` entries; the database and temp dir go with their guards.
pub struct Testbed {
    pub token: String,
    pub dir: PathBuf,
    certs: Option<TestCerts>,
    db: Option<TestDb>,
    api: Option<NamedNetns>,
    pub cells: Vec<Cell>,
    pub binaries: Binaries,
    pub options: Options,
    controller: Option<Proc>,
    /// The lab policy server (in the api namespace) and the binary it runs.
    policy_server: Option<(Proc, PathBuf)>,
    controller_config: PathBuf,
    controller_log: PathBuf,
    etc_dirs: Vec<PathBuf>,
    /// Extra hosts on the underlay segment ([`Testbed::add_underlay_host`]).
    extras: Vec<NamedNetns>,
    /// Container namespaces ([`Testbed::add_container_ns`]).
    containers: Vec<NamedNetns>,
    /// Other processes ([`Testbed::spawn_other`]) and their binaries.
    others: Vec<(Proc, PathBuf)>,
    /// Whether the MySQL relay runs (it is one of `others`).
    relay_started: bool,
    // Dropped last: the bridge namespace.
    underlay: Option<NamedNetns>,
    _tmp: Option<tempfile::TempDir>,
}

impl Testbed {
    /// [`Testbed::build_blocking`] plus one host on the underlay ([`Testbed::add_underlay_host`]);
    /// the bed and the host's namespace path.
    pub fn with_underlay_host(
        binaries: Binaries,
        options: Options,
        host: Ipv4Addr,
    ) -> Result<(Testbed, PathBuf)> {
        let mut bed = Self::build_blocking(binaries, options)?;
        let path = bed.add_underlay_host(host)?.path().to_path_buf();
        Ok((bed, path))
    }

    /// Builds namespaces, underlay, database, certificates and configs; starts nothing.
    pub async fn build(binaries: Binaries, options: Options) -> Result<Testbed> {
        let tmp = tempfile::Builder::new()
            .prefix("silk-testbed.")
            .tempdir()
            .map_err(io("create temp dir"))?;
        let dir = tmp.path().to_path_buf();
        let mut bed = Self::build_in(binaries, options, dir).await?;
        bed._tmp = Some(tmp);
        Ok(bed)
    }

    /// [`Testbed::build`] for callers without an async runtime: runs it on a runtime of its own
    /// (nothing the bed keeps needs that runtime afterwards).
    pub fn build_blocking(binaries: Binaries, options: Options) -> Result<Testbed> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("tokio runtime"))?;
        rt.block_on(Self::build(binaries, options))
    }

    /// As [`Testbed::build`], with files in `dir` (kept).
    pub async fn build_in(binaries: Binaries, options: Options, dir: PathBuf) -> Result<Testbed> {
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let token = format!("s{}", unique_token(5));
        let db = match options.engine {
            Engine::Postgres => TestDb::create_with(Engine::Postgres, DbTls::off()).await,
            Engine::Mysql => TestDb::create(Engine::Mysql).await,
        };
        let certs = TestCerts::generate(ServerKey::Rsa)?;
        let underlay =
            NamedNetns::create(&format!("{token}-ul")).map_err(io("create underlay netns"))?;
        let ul = underlay.name().to_string();
        run_ok(&["ip", "-n", &ul, "link", "add", "br0", "type", "bridge"])
            .map_err(io("add bridge"))?;
        run_ok(&["ip", "-n", &ul, "link", "set", "br0", "up"]).map_err(io("bridge up"))?;
        let api = NamedNetns::create(&format!("{token}-api")).map_err(io("create api netns"))?;
        let mut etc_dirs = Vec::new();
        attach(&ul, "u0", &api, API_IP).map_err(io("wire api netns"))?;
        etc_dirs.push(write_hosts(api.name())?);

        let controller_root = dir.join("controller");
        let controller_config =
            job_file(&controller_root, "silk-controller", "silk-controller.json");
        install_certs(
            &controller_root,
            "silk-controller",
            &[
                (&certs.ca_cert, "ca.crt"),
                (&certs.server_cert, "server.crt"),
                (&certs.server_key, "server.key"),
            ],
        )?;
        let database = match (db.postgres(), db.mysql()) {
            (Some(pg), _) => Database {
                kind: "postgres",
                host: pg.cluster.socket_dir.clone(),
                port: pg.cluster.port,
                user: pg.cluster.user.clone(),
                password: String::new(),
                name: pg.name.clone(),
                require_ssl: false,
            },
            (None, Some(my)) => {
                // BOSH writes the `database.ca_cert` property where the template names it.
                install_certs(
                    &controller_root,
                    "silk-controller",
                    &[(Path::new(&db.tls.ca_cert), "database_ca.crt")],
                )?;
                Database {
                    kind: "mysql",
                    host: relay::MYSQL_LISTEN.ip().to_string(),
                    port: relay::MYSQL_LISTEN.port(),
                    user: my.server.user.clone(),
                    password: my.server.password.clone(),
                    name: my.name.clone(),
                    require_ssl: true,
                }
            }
            (None, None) => unreachable!("a test database is on one engine"),
        };
        let text = controller_json(
            &controller_root,
            &options.overlay,
            options.prefix,
            &database,
            &options.timing,
        )?;
        write_file(&controller_config, &text)?;
        let controller_log = dir.join("silk-controller.log");

        let mut bed = Testbed {
            token,
            dir,
            certs: Some(certs),
            db: Some(db),
            api: Some(api),
            cells: Vec::new(),
            binaries,
            options,
            controller: None,
            policy_server: None,
            controller_config,
            controller_log,
            etc_dirs,
            extras: Vec::new(),
            containers: Vec::new(),
            others: Vec::new(),
            relay_started: false,
            underlay: Some(underlay),
            _tmp: None,
        };
        for _ in 0..bed.options.cells {
            bed.add_cell()?;
        }
        Ok(bed)
    }

    /// The generated certificates.
    pub fn certs(&self) -> &TestCerts {
        self.certs.as_ref().expect("certs live until leak")
    }

    /// The bed's database, on either engine.
    pub fn database(&self) -> &TestDb {
        self.db.as_ref().expect("database lives until leak")
    }

    /// The bed's PostgreSQL database; panics on a MySQL bed ([`Testbed::database`] serves both).
    pub fn db(&self) -> &silk_testkit::postgres::TestDb {
        self.database()
            .postgres()
            .expect("the bed runs on PostgreSQL (Options::engine)")
    }

    /// The controller's namespace.
    pub fn api_ns(&self) -> &NamedNetns {
        self.api.as_ref().expect("api netns lives until leak")
    }

    fn underlay_ns(&self) -> &NamedNetns {
        self.underlay
            .as_ref()
            .expect("underlay netns lives until leak")
    }

    /// Adds one more cell (namespace, underlay port, config); its daemon is not started.
    pub fn add_cell(&mut self) -> Result<usize> {
        let i = self.cells.len();
        let ns =
            NamedNetns::create(&format!("{}-c{i}", self.token)).map_err(io("create cell netns"))?;
        let last =
            u8::try_from(10 + i).map_err(|_| TestbedError::Timeout("too many cells".into()))?;
        let underlay_ip = Ipv4Addr::new(192, 0, 2, last);
        attach(
            self.underlay_ns().name(),
            &format!("u{}", i + 1),
            &ns,
            underlay_ip,
        )
        .map_err(io(format!("wire cell {i}")))?;
        self.etc_dirs.push(write_hosts(ns.name())?);
        let cell_dir = self.dir.join(format!("c{i}"));
        std::fs::create_dir_all(&cell_dir).map_err(io("create cell dir"))?;
        let datastore = cell_dir.join("data/silk/store.json");
        let config = job_file(&cell_dir, "silk-daemon", "client-config.json");
        let certs = self.certs();
        install_certs(
            &cell_dir,
            "silk-daemon",
            &[
                (&certs.ca_cert, "ca.crt"),
                (&certs.client_cert, "client.crt"),
                (&certs.client_key, "client.key"),
            ],
        )?;
        let text = daemon_json(
            &cell_dir,
            underlay_ip,
            &self.options.overlay,
            self.options.prefix,
            &self.options.timing,
            &self.options.log_level,
        )?;
        write_file(&config, &text)?;
        let conflist = render::cni_conflist(&cell_dir, underlay_ip)?;
        write_file(
            &job_file(&cell_dir, "silk-cni", "cni/cni-wrapper-plugin.conflist"),
            &conflist,
        )?;
        self.cells.push(Cell {
            index: i,
            ns,
            underlay_ip,
            config,
            datastore,
            log: cell_dir.join("silk-daemon.log"),
            dir: cell_dir,
            daemon: None,
            agent: None,
            logger: None,
        });
        Ok(i)
    }

    /// Renders cell `i`'s conflist again from the silk-cni job's template, with `overrides`
    /// of the job's properties and links set over the lab's ([`render::cni_conflist_with`],
    /// e.g. `{"properties/iptables_logging": false}`); for the containers created after.
    pub fn render_conflist(&self, i: usize, overrides: &serde_json::Value) -> Result<()> {
        let cell = &self.cells[i];
        let text = render::cni_conflist_with(&cell.dir, cell.underlay_ip, overrides)?;
        write_file(&cell.conflist(), &text)
    }

    /// Adds a host that is not a cell to the underlay segment: a namespace with `eth0` carrying
    /// `ip`/24 (pick one outside the cells' range, e.g. 192.0.2.200), removed with the bed. A
    /// stand-in for anything cells reach on their underlay (an external service, a router).
    pub fn add_underlay_host(&mut self, ip: Ipv4Addr) -> Result<&NamedNetns> {
        let k = self.extras.len();
        let ns = NamedNetns::create(&format!("{}-x{k}", self.token))
            .map_err(io("create underlay host netns"))?;
        attach(self.underlay_ns().name(), &format!("x{k}"), &ns, ip)
            .map_err(io(format!("wire underlay host {ip}")))?;
        self.extras.push(ns);
        Ok(&self.extras[k])
    }

    /// A fresh namespace for a container (`<token>-k<n>`), removed with the bed; the CNI
    /// plugins wire it to a cell.
    pub fn add_container_ns(&mut self) -> Result<&NamedNetns> {
        let k = self.containers.len();
        let ns = NamedNetns::create(&format!("{}-k{k}", self.token))
            .map_err(io("create container netns"))?;
        self.containers.push(ns);
        Ok(&self.containers[k])
    }

    /// Starts `argv` (binary `argv[0]`) in namespace `ns` as one of the bed's processes, logging
    /// to `<dir>/<name>.log`; stopped with the bed, recorded by [`Testbed::leak`].
    pub fn spawn_other(&mut self, name: &str, ns: &str, argv: &[String]) -> Result<u32> {
        let log = self.dir.join(format!("{}.log", name.replace(' ', "-")));
        let p = Proc::spawn(name, ns, argv, &log, self.options.detach)
            .map_err(io(format!("spawn {name}")))?;
        let pid = p.pid();
        self.others.push((p, PathBuf::from(&argv[0])));
        Ok(pid)
    }

    /// On a MySQL bed, starts the relay that makes the MariaDB server on the root namespace's
    /// loopback reachable on the api namespace's loopback at [`relay::MYSQL_LISTEN`] (once; it
    /// runs with the bed); nothing on a PostgreSQL bed. [`Testbed::start_controller`] calls it.
    pub fn start_db_relay(&mut self) -> Result<()> {
        let Some(my) = self.database().mysql() else {
            return Ok(());
        };
        if self.relay_started {
            return Ok(());
        }
        let upstream = format!("{}:{}", my.server.host, my.server.port);
        let dir = self
            .binaries
            .controller
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let lab = sibling_binary(&dir, "silk-lab", "silk-lab")?;
        let api = self.api_ns().path().display().to_string();
        let argv = vec![
            lab.display().to_string(),
            "db-relay".into(),
            format!("--netns={api}"),
            format!("--listen={}", relay::MYSQL_LISTEN),
            format!("--upstream={upstream}"),
        ];
        // Started in this (the root) namespace, where the upstream is; it binds its listener
        // inside the api namespace.
        self.spawn_other("db-relay", "", &argv)?;
        let ns = self.api_ns().path().to_path_buf();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !relay::answers(&ns, relay::MYSQL_LISTEN) {
            if Instant::now() >= deadline {
                return Err(TestbedError::Timeout(format!(
                    "db-relay did not listen on {} within 10s; log:\n{}",
                    relay::MYSQL_LISTEN,
                    std::fs::read_to_string(self.dir.join("db-relay.log")).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.relay_started = true;
        Ok(())
    }

    /// Starts the controller in the api namespace and waits for its health endpoint.
    pub fn start_controller(&mut self) -> Result<()> {
        self.start_db_relay()?;
        let argv = vec![
            self.binaries.controller.display().to_string(),
            format!("-config={}", self.controller_config.display()),
        ];
        let mut p = Proc::spawn(
            "silk-controller",
            self.api_ns().name(),
            &argv,
            &self.controller_log,
            self.options.detach,
        )
        .map_err(io("spawn silk-controller"))?;
        let url = format!("http://127.0.0.1:{CONTROLLER_HEALTH_PORT}/health");
        wait_http(&mut p, self.api_ns().path(), &url, Duration::from_secs(30))?;
        self.controller = Some(p);
        Ok(())
    }

    /// SIGTERM to the controller (a controller outage).
    pub fn stop_controller(&mut self) -> Result<()> {
        if let Some(mut p) = self.controller.take() {
            p.stop(Duration::from_secs(10))
                .map_err(io("stop silk-controller"))?;
        }
        Ok(())
    }

    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(&self.controller_log).unwrap_or_default()
    }

    /// Starts cell `i`'s daemon and waits until its local API answers.
    pub fn start_daemon(&mut self, i: usize) -> Result<()> {
        let cell = &mut self.cells[i];
        let argv = vec![
            self.binaries.daemon.display().to_string(),
            format!("-config={}", cell.config.display()),
        ];
        let mut p = Proc::spawn(
            &format!("silk-daemon c{i}"),
            cell.ns.name(),
            &argv,
            &cell.log,
            self.options.detach,
        )
        .map_err(io("spawn silk-daemon"))?;
        let url = format!("http://127.0.0.1:{DAEMON_PORT}/");
        wait_http(&mut p, cell.ns.path(), &url, Duration::from_secs(30))?;
        cell.daemon = Some(p);
        Ok(())
    }

    /// Starts every cell's daemon.
    pub fn start_daemons(&mut self) -> Result<()> {
        for i in 0..self.cells.len() {
            self.start_daemon(i)?;
        }
        Ok(())
    }

    /// SIGTERM to cell `i`'s daemon; returns its exit code.
    pub fn stop_daemon(&mut self, i: usize) -> Result<Option<i32>> {
        match self.cells[i].daemon.take() {
            Some(mut p) => Ok(p
                .stop(Duration::from_secs(10))
                .map_err(io("stop silk-daemon"))?
                .code()),
            None => Ok(None),
        }
    }

    /// Waits up to `timeout` for cell `i`'s daemon to exit on its own; its exit code, or
    /// `None` if it is still running (or was never started).
    pub fn wait_daemon_exit(&mut self, i: usize, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.cells[i].daemon.as_mut()?;
            if let Ok(Some(status)) = p.exited() {
                self.cells[i].daemon = None;
                return status.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL to cell `i`'s daemon (it neither renews nor cleans up again).
    pub fn kill_daemon(&mut self, i: usize) -> Result<()> {
        if let Some(mut p) = self.cells[i].daemon.take() {
            p.kill().map_err(io("kill silk-daemon"))?;
        }
        Ok(())
    }

    /// The pid of cell `i`'s daemon, if started.
    pub fn daemon_pid(&self, i: usize) -> Option<u32> {
        self.cells[i].daemon.as_ref().map(Proc::pid)
    }

    /// Whether cell `i`'s daemon is still running.
    pub fn daemon_running(&mut self, i: usize) -> bool {
        match self.cells[i].daemon.as_mut() {
            Some(p) => matches!(p.exited(), Ok(None)),
            None => false,
        }
    }

    pub fn daemon_log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.cells[i].log).unwrap_or_default()
    }

    /// Runs `argv` in cell `i`'s namespace; stdout on success.
    pub fn in_cell(&self, i: usize, argv: &[&str]) -> std::io::Result<String> {
        self.cells[i].ns.run_ok(argv)
    }

    /// Runs `argv` in cell `i`'s namespace the way BOSH would run a helper: through
    /// `ip netns exec` (so the controller's name resolves). Returns the raw output.
    pub fn run_helper(&self, i: usize, argv: &[&str]) -> std::io::Result<std::process::Output> {
        let mut full = vec!["ip", "netns", "exec", self.cells[i].ns.name()];
        full.extend_from_slice(argv);
        silk_testkit::netns::run_cmd(&full, Duration::from_secs(120))
    }

    /// The unexpired leases of the `subnets` table (the controller's `GET /leases` view):
    /// (underlay_ip, overlay_subnet, overlay_hwaddr), sorted by underlay IP.
    pub async fn lease_table(&self) -> Vec<(String, String, String)> {
        let db = self.database();
        let exp = self.options.timing.lease_expiration_seconds;
        let mut rows: Vec<_> = db
            .strings(&format!(
                "SELECT CONCAT(underlay_ip, ' ', overlay_subnet, ' ', overlay_hwaddr) FROM subnets \
                 WHERE last_renewed_at + {exp} > {}",
                db.engine.now_sql()
            ))
            .await
            .into_iter()
            .map(|r| {
                let mut p = r.split(' ').map(str::to_string);
                let mut next = || p.next().unwrap_or_default();
                (next(), next(), next())
            })
            .collect();
        rows.sort();
        rows
    }

    /// Starts the lab policy server (`silk-lab policy-server`, binary `lab`) in the api
    /// namespace on `0.0.0.0:4003`, serving `file` with the bed's certificates, its control
    /// listener on the namespace's loopback; waits until the control listener answers.
    pub fn start_policy_server(&mut self, lab: &Path, file: &Path) -> Result<()> {
        let certs = self.certs();
        let argv = vec![
            lab.display().to_string(),
            "policy-server".into(),
            format!("--listen=0.0.0.0:{POLICY_SERVER_PORT}"),
            format!("--file={}", file.display()),
            format!("--ca-cert={}", certs.ca_cert.display()),
            format!("--server-cert={}", certs.server_cert.display()),
            format!("--server-key={}", certs.server_key.display()),
            format!("--control=127.0.0.1:{POLICY_SERVER_CONTROL_PORT}"),
        ];
        let log = self.dir.join("lab-policy-server.log");
        let mut p = Proc::spawn(
            "lab-policy-server",
            self.api_ns().name(),
            &argv,
            &log,
            self.options.detach,
        )
        .map_err(io("spawn lab policy server"))?;
        let url = format!("http://127.0.0.1:{POLICY_SERVER_CONTROL_PORT}/state");
        wait_http(&mut p, self.api_ns().path(), &url, Duration::from_secs(30))?;
        self.policy_server = Some((p, lab.to_path_buf()));
        Ok(())
    }

    /// The lab policy server's log so far.
    pub fn policy_server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("lab-policy-server.log")).unwrap_or_default()
    }

    /// Starts vxlan-policy-agent (binary `bin`) in cell `i` against the lab policy server,
    /// with a config rendered for the cell; waits until its debug server answers.
    pub fn start_agent(&mut self, i: usize, bin: &Path, settings: &AgentSettings) -> Result<()> {
        let text = {
            let cell = &self.cells[i];
            for d in [cell.metadata_store(), cell.iptables_lock()] {
                if let Some(parent) = d.parent() {
                    std::fs::create_dir_all(parent).map_err(io("create cell state dir"))?;
                }
            }
            let certs = self.certs();
            install_certs(
                &cell.dir,
                "vxlan-policy-agent",
                &[
                    (&certs.ca_cert, "ca.crt"),
                    (&certs.client_cert, "client.crt"),
                    (&certs.client_key, "client.key"),
                ],
            )?;
            agent_json(&cell.dir, cell.underlay_ip, &self.options.overlay, settings)?
        };
        let cell = &mut self.cells[i];
        let config = job_file(&cell.dir, "vxlan-policy-agent", "vxlan-policy-agent.json");
        write_file(&config, &text)?;
        let argv = vec![
            bin.display().to_string(),
            format!("-config-file={}", config.display()),
        ];
        let mut p = Proc::spawn(
            &format!("vxlan-policy-agent c{i}"),
            cell.ns.name(),
            &argv,
            &cell.agent_log(),
            self.options.detach,
        )
        .map_err(io("spawn vxlan-policy-agent"))?;
        let url = format!("http://127.0.0.1:{AGENT_DEBUG_PORT}/metrics");
        wait_http(&mut p, cell.ns.path(), &url, Duration::from_secs(30))?;
        cell.agent = Some((p, bin.to_path_buf()));
        Ok(())
    }

    /// Starts iptables-logger (binary `bin`) in cell `i`, tailing the fabric's shared kernel log
    /// file (`<dir>/kern.log`) and writing `<cell>/sys/log/iptables-logger/iptables.log`;
    /// waits until it has opened both (it exits when it cannot).
    pub fn start_logger(&mut self, i: usize, bin: &Path) -> Result<()> {
        let kern = self.dir.join(render::KERNEL_LOG);
        if !kern.exists() {
            write_file(&kern, "")?;
        }
        let cell = &mut self.cells[i];
        let text = render::logger_json(&self.dir, &cell.dir, cell.underlay_ip)?;
        let config = job_file(&cell.dir, "iptables-logger", "iptables-logger.json");
        write_file(&config, &text)?;
        let out = cell.dir.join("sys/log/iptables-logger");
        std::fs::create_dir_all(&out).map_err(io(format!("create {}", out.display())))?;
        let argv = vec![
            bin.display().to_string(),
            format!("-config-file={}", config.display()),
        ];
        let mut p = Proc::spawn(
            &format!("iptables-logger c{i}"),
            cell.ns.name(),
            &argv,
            &cell.logger_log(),
            self.options.detach,
        )
        .map_err(io("spawn iptables-logger"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !p.log_text().contains("started tailing file") {
            if let Ok(Some(status)) = p.exited() {
                return Err(TestbedError::Exited {
                    name: p.name.clone(),
                    status: status.to_string(),
                    log: p.log_text(),
                });
            }
            if Instant::now() >= deadline {
                return Err(TestbedError::Timeout(format!(
                    "{} did not start within 10s; log:\n{}",
                    p.name,
                    p.log_text()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        cell.logger = Some((p, bin.to_path_buf()));
        Ok(())
    }

    /// SIGTERM to cell `i`'s agent.
    pub fn stop_agent(&mut self, i: usize) -> Result<()> {
        if let Some((mut p, _)) = self.cells[i].agent.take() {
            p.stop(Duration::from_secs(10))
                .map_err(io("stop vxlan-policy-agent"))?;
        }
        Ok(())
    }

    /// Whether cell `i`'s agent is still running.
    pub fn agent_running(&mut self, i: usize) -> bool {
        match self.cells[i].agent.as_mut() {
            Some((p, _)) => matches!(p.exited(), Ok(None)),
            None => false,
        }
    }

    /// The pid of cell `i`'s agent, if started.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.cells[i].agent.as_ref().map(|(p, _)| p.pid())
    }

    pub fn agent_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.cells[i].agent_log()).unwrap_or_default()
    }

    /// Names of every namespace of the bed.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![
            self.underlay_ns().name().to_string(),
            self.api_ns().name().to_string(),
        ];
        v.extend(self.cells.iter().map(|c| c.ns.name().to_string()));
        v.extend(self.extras.iter().map(|n| n.name().to_string()));
        v.extend(self.containers.iter().map(|n| n.name().to_string()));
        v
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for c in &mut self.cells {
            if let Some((mut p, _)) = c.agent.take() {
                let _ = p.kill();
            }
            if let Some((mut p, _)) = c.logger.take() {
                let _ = p.kill();
            }
        }
        if let Some((mut p, _)) = self.policy_server.take() {
            let _ = p.kill();
        }
        for (mut p, _) in self.others.drain(..) {
            let _ = p.kill();
        }
        for c in &mut self.cells {
            if let Some(mut p) = c.daemon.take() {
                let _ = p.kill();
            }
        }
        if let Some(mut p) = self.controller.take() {
            let _ = p.kill();
        }
        for d in &self.etc_dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// `<root>/jobs/<job>/config/<name>`: where BOSH puts a job's rendered file.
pub fn job_file(root: &Path, job: &str, name: &str) -> PathBuf {
    root.join("jobs").join(job).join("config").join(name)
}

/// Writes `text` to `path`, creating its directory.
fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
    }
    std::fs::write(path, text).map_err(io(format!("write {}", path.display())))
}

/// Copies certificates to `<root>/jobs/<job>/config/certs/<name>`, where the job's rendered
/// config names them.
fn install_certs(root: &Path, job: &str, files: &[(&Path, &str)]) -> Result<()> {
    let dir = job_file(root, job, "certs");
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    for (from, name) in files {
        std::fs::copy(from, dir.join(name)).map_err(io(format!("copy {}", from.display())))?;
    }
    Ok(())
}

/// Connects `host` to the bridge: veth `port` in the underlay namespace, `eth0` inside `host`.
fn attach(ul: &str, port: &str, host: &NamedNetns, ip: Ipv4Addr) -> std::io::Result<()> {
    run_ok(&[
        "ip",
        "-n",
        ul,
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        host.name(),
    ])?;
    run_ok(&["ip", "-n", ul, "link", "set", port, "master", "br0", "up"])?;
    host.run_ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    host.run_ok(&["ip", "link", "set", "eth0", "up"])?;
    Ok(())
}

/// `/etc/netns/<ns>/hosts`, which `ip netns exec` bind-mounts over `/etc/hosts`.
fn write_hosts(ns: &str) -> Result<PathBuf> {
    let dir = PathBuf::from("/etc/netns").join(ns);
    std::fs::create_dir_all(&dir).map_err(io("create /etc/netns entry"))?;
    let text =
        format!("127.0.0.1 localhost\n{API_IP} {CONTROLLER_NAME}\n{API_IP} {POLICY_SERVER_NAME}\n");
    std::fs::write(dir.join("hosts"), text).map_err(io("write /etc/netns hosts"))?;
    Ok(dir)
}

/// Polls `url` inside namespace `ns` with curl until it answers 2xx, `p` exits, or `timeout`.
fn wait_http(p: &mut Proc, ns: &Path, url: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = p.exited() {
            return Err(TestbedError::Exited {
                name: p.name.clone(),
                status: status.to_string(),
                log: p.log_text(),
            });
        }
        let ok =
            silk_testkit::netns::run_in(ns, &["curl", "-sf", "-m", "1", "-o", "/dev/null", url])
                .map(|o| o.status.success())
                .unwrap_or(false);
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(TestbedError::Timeout(format!(
                "{} did not answer {url} within {timeout:?}; log:\n{}",
                p.name,
                p.log_text()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
