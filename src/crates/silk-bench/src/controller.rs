//! silk-bench-controller: load on a real silk-controller over mutual TLS.
//!
//! `silk-bench-controller <silk-controller> [--db postgres|mysql]` starts the controller binary
//! on a fresh database of the PostgreSQL cluster (SILK_TEST_PG_*) or MariaDB server
//! (SILK_TEST_MYSQL_*) that scripts/bench.d/controller starts, reached over TLS
//! (SILK_TEST_DB_CA), then prints, for 1, 16 and 64 concurrent clients (one keep-alive
//! connection each), acquire and renew requests/s with p50/p99 latency and the controller's
//! CPU time per request, and the latency of `GET /leases` with 1,000, 5,000 and 10,000 leases.
//! Everything stays on 127.0.0.1.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use silk_client::{ClientTls, ControllerClient};
use silk_core::Lease;
use silk_testkit::certs::{path_str, ServerKey, TestCerts};
use silk_testkit::db::{Engine, TestDb};

const CONCURRENCY: [usize; 3] = [1, 16, 64];

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Controller {
    child: Child,
    url: String,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Controller {
    fn start(bin: &Path, db: &TestDb, certs: &TestCerts) -> anyhow::Result<Controller> {
        let (api, health, debug) = (free_port()?, free_port()?, free_port()?);
        let config = format!(
            r#"{{"debug_server_port": {debug}, "health_check_port": {health}, "listen_host": "127.0.0.1",
            "listen_port": {api}, "ca_cert_file": "{ca}", "server_cert_file": "{cert}", "server_key_file": "{key}",
            "network": "10.0.0.0/8", "subnet_prefix_length": 24, "database": {database},
            "lease_expiration_seconds": 604800, "metron_port": {metron}, "staleness_threshold_seconds": 3600,
            "metrics_emit_seconds": 30, "log_prefix": "cfnetworking", "max_idle_connections": 10,
            "max_open_connections": 64, "connections_max_lifetime_seconds": 3600}}"#,
            ca = path_str(&certs.ca_cert),
            cert = path_str(&certs.server_cert),
            key = path_str(&certs.server_key),
            database = db.controller_database_json(),
            metron = free_port()?,
        );
        let path = certs.dir().join(format!("controller-{api}.json"));
        std::fs::write(&path, config)?;
        let child = Command::new(bin)
            .arg(format!("-config={}", path.display()))
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let c = Controller {
            child,
            url: format!("https://127.0.0.1:{api}"),
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", health)).is_ok() {
                return Ok(c);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("controller did not start")
    }

    /// utime + stime of the controller process, in milliseconds.
    fn cpu_ms(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .context("stat format")?
            .1
            .split(' ')
            .collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        // USER_HZ is 100 on Linux.
        Ok(ticks * 10.0)
    }
}

fn client(url: &str, certs: &TestCerts) -> anyhow::Result<ControllerClient> {
    let tls = ClientTls::from_files(
        path_str(&certs.ca_cert),
        path_str(&certs.client_cert),
        path_str(&certs.client_key),
    )?;
    Ok(ControllerClient::new(url, &tls, Duration::from_secs(30))?)
}

fn underlay(i: usize) -> String {
    format!(
        "172.{}.{}.{}",
        16 + ((i >> 16) & 15),
        (i >> 8) & 255,
        i & 255
    )
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

struct Outcome {
    per_sec: f64,
    p50: f64,
    p99: f64,
    cpu_per_req: f64,
}

/// Runs `total` operations over `clients` tasks; `op(client, index)`.
async fn drive<F, Fut>(
    controller: &Controller,
    clients: &[ControllerClient],
    total: usize,
    op: F,
) -> anyhow::Result<Outcome>
where
    F: Fn(ControllerClient, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let cpu0 = controller.cpu_ms()?;
    let start = Instant::now();
    let per = total / clients.len();
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(c, client)| {
            let (client, op) = (client.clone(), op.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for k in 0..per {
                    let t = Instant::now();
                    op(client.clone(), c * per + k).await?;
                    lat.push(t.elapsed());
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = controller.cpu_ms()? - cpu0;
    all.sort();
    Ok(Outcome {
        per_sec: all.len() as f64 / elapsed,
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        cpu_per_req: cpu / all.len() as f64,
    })
}

fn print_row(engine: Engine, what: &str, clients: usize, o: &Outcome) {
    figures(engine, what, clients, o);
    println!(
        "{what:<8} {clients:>7} {:>10.0} {:>9.2} {:>9.2} {:>12.2}",
        o.per_sec, o.p50, o.p99, o.cpu_per_req
    );
}

/// The row's figures for the report (`SILK_BENCH_FIGURES`).
fn figures(engine: Engine, what: &str, clients: usize, o: &Outcome) {
    let bench = format!("controller-{}", engine.name());
    for (metric, v) in [
        ("per_s", o.per_sec),
        ("p50_ms", o.p50),
        ("p99_ms", o.p99),
        ("cpu_ms_per_req", o.cpu_per_req),
    ] {
        silk_testkit::figures::record(&bench, what, clients as f64, "clients", metric, v);
    }
}

/// `n` rows for hosts 0 … n-1 in one multi-row INSERT per 1,000, renewed now.
fn seed_statements(engine: Engine, n: usize) -> Vec<String> {
    let now = engine.now_sql();
    (0..n)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|chunk| {
            let values: Vec<String> = chunk
                .iter()
                .map(|&i| {
                    let (hi, lo) = ((i + 1) / 256, (i + 1) % 256);
                    format!(
                        "('{}', '10.{hi}.{lo}.0/24', 'ee:ee:0a:{hi:02x}:{lo:02x}:00', {now})",
                        underlay(i)
                    )
                })
                .collect();
            format!(
                "INSERT INTO subnets (underlay_ip, overlay_subnet, overlay_hwaddr, last_renewed_at) VALUES {}",
                values.join(", ")
            )
        })
        .collect()
}

async fn run(bin: &Path, engine: Engine) -> anyhow::Result<()> {
    let certs = TestCerts::generate(ServerKey::Rsa)?;
    let server = match engine {
        Engine::Postgres => "PostgreSQL",
        Engine::Mysql => "MySQL (MariaDB)",
    };
    println!(
        "silk-controller over mutual TLS (TLS 1.3, keep-alive), {server} over TLS on 127.0.0.1"
    );
    println!(
        "{:<8} {:>7} {:>10} {:>9} {:>9} {:>12}",
        "op", "clients", "req/s", "p50 ms", "p99 ms", "cpu ms/req"
    );
    for &n in &CONCURRENCY {
        let db = TestDb::create(engine).await;
        let controller = Controller::start(bin, &db, &certs)?;
        let clients: Vec<_> = (0..n)
            .map(|_| client(&controller.url, &certs))
            .collect::<Result<_, _>>()?;
        // Warm the connections (TLS handshakes are not what is measured).
        for c in &clients {
            c.list().await?;
        }
        let total = 3000 - 3000 % n;
        let acquired = std::sync::Arc::new(std::sync::Mutex::new(vec![None::<Lease>; total]));
        let store = acquired.clone();
        let o = drive(&controller, &clients, total, move |c, i| {
            let store = store.clone();
            async move {
                let lease = c.acquire(&underlay(i), false).await?;
                store.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[i] = Some(lease);
                Ok(())
            }
        })
        .await?;
        print_row(engine, "acquire", n, &o);
        let leases: Vec<Lease> = acquired
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .iter()
            .flatten()
            .cloned()
            .collect();
        let leases = std::sync::Arc::new(leases);
        let o = drive(&controller, &clients, total, move |c, i| {
            let leases = leases.clone();
            async move {
                c.renew(&leases[i]).await?;
                Ok(())
            }
        })
        .await?;
        print_row(engine, "renew", n, &o);
    }

    println!();
    println!("{:<22} {:>9} {:>9}", "GET /leases", "p50 ms", "p99 ms");
    for &rows in &[1_000usize, 5_000, 10_000] {
        let db = TestDb::create(engine).await;
        let controller = Controller::start(bin, &db, &certs)?;
        let c = client(&controller.url, &certs)?;
        c.list().await?; // migrated and warm
        for statement in seed_statements(engine, rows) {
            db.execute(&statement).await;
        }
        let mut lat = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            let got = c.list().await?;
            lat.push(t.elapsed());
            if got.len() != rows {
                bail!("GET /leases returned {} leases, want {rows}", got.len());
            }
        }
        lat.sort();
        let bench = format!("controller-{}", engine.name());
        for (metric, q) in [("p50_ms", 0.5), ("p99_ms", 0.99)] {
            let v = percentile(&lat, q);
            silk_testkit::figures::record(&bench, "GET /leases", rows as f64, "leases", metric, v);
        }
        println!(
            "{:<22} {:>9.2} {:>9.2}",
            format!("with {rows} leases"),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
        drop(controller);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    const USAGE: &str =
        "usage: silk-bench-controller <path to silk-controller> [--db postgres|mysql]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bin = args.first().context(USAGE)?.clone();
    let engine = match args.get(1..).unwrap_or_default() {
        [] => Engine::Postgres,
        [flag, db] if flag == "--db" && db == "postgres" => Engine::Postgres,
        [flag, db] if flag == "--db" && db == "mysql" => Engine::Mysql,
        _ => bail!(USAGE),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(Path::new(&bin), engine))
}
