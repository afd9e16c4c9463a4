//! `silk-lab up|status|policy|asg|restart`: the whole fabric with apps and policies, shown live.
//!
//! `up` builds the [`crate::fabric`] (configs rendered from the release's templates), starts
//! the controller, the lab policy server (serving [`demo::demo_file`]) and per cell silk-daemon,
//! vxlan-policy-agent (dynamic ASGs on) and iptables-logger; creates one container per demo app
//! through the cell's rendered conflist as garden-external-networker does
//! ([`crate::fabric::garden`]), each running `silk-lab responder`; an "outside" host on the
//! underlay runs one too. Then it tests the connectivity matrix live until it equals what the
//! policies and ASGs say (or a bound passes) and prints it. Everything it made is listed in
//! `lab.json` (for `down`) and `demo.json` (apps, containers, the policy file).

pub mod demo;
pub mod matrix;
pub mod probe;
pub mod status;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::fabric::lab::LabState;
use crate::fabric::render::{AgentSettings, Timing};
use crate::fabric::{garden, Binaries, Options, Testbed};
use crate::policy_server::data::{AsgRule, FileRules, FileSecurityGroup, PolicyFile};
use crate::policy_server::write_file;
use demo::{App, Demo, ORG_GUID, OUTSIDE};
use matrix::{Probe, Row};

/// One app's container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    pub app: App,
    pub handle: String,
    /// Its network namespace (named, under /run/netns).
    pub ns: String,
    pub ip: Ipv4Addr,
    pub cell_ns: String,
    pub host_port: u16,
}

/// What `up` made beyond the fabric.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabDemo {
    pub demo: Demo,
    pub containers: Vec<Container>,
    pub outside_ns: String,
    pub policy_file: PathBuf,
    pub poll_interval: u64,
    pub asg_poll_interval: u64,
}

pub fn state_file(dir: &Path) -> PathBuf {
    dir.join("lab.json")
}

pub fn demo_file(dir: &Path) -> PathBuf {
    dir.join("demo.json")
}

impl LabDemo {
    pub fn read(dir: &Path) -> anyhow::Result<LabDemo> {
        let path = demo_file(dir);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::write(demo_file(dir), serde_json::to_string_pretty(self)?)?;
        Ok(())
    }

    pub fn policies(&self) -> anyhow::Result<PolicyFile> {
        let text = std::fs::read_to_string(&self.policy_file)
            .with_context(|| format!("read {}", self.policy_file.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parse {}", self.policy_file.display()))
    }
}

/// Progress: one line per step with its duration, and the time since `up` began.
struct Progress {
    start: Instant,
}

impl Progress {
    fn step<T>(&self, what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        let t = Instant::now();
        let r = f();
        let mark = if r.is_ok() { "ok" } else { "FAILED" };
        println!(
            "[{:>6.1}s] {what}: {mark} ({:.1}s)",
            self.start.elapsed().as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
        r
    }
}

/// What `up` needs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub cells: usize,
    pub apps: usize,
    pub state_dir: PathBuf,
    pub bin_dir: PathBuf,
    /// The controller's database engine.
    pub engine: silk_testkit::db::Engine,
}

/// `silk-lab up`.
pub async fn up(o: UpOptions) -> anyhow::Result<()> {
    if state_file(&o.state_dir).exists() {
        bail!(
            "{} exists: run `silk-lab down --state-dir {}` first",
            state_file(&o.state_dir).display(),
            o.state_dir.display()
        );
    }
    if o.cells == 0 || o.cells > 200 {
        bail!("--cells must be between 1 and 200");
    }
    for bin in [
        "silk-controller",
        "silk-daemon",
        "vxlan-policy-agent",
        "iptables-logger",
        "cni-wrapper-plugin",
        "silk-cni",
        "bandwidth",
        "silk-lab",
    ] {
        if !o.bin_dir.join(bin).exists() {
            bail!("{bin} not found in {}: build it first", o.bin_dir.display());
        }
    }
    let progress = Progress {
        start: Instant::now(),
    };
    let settings = AgentSettings::lab();
    let options = Options {
        cells: o.cells,
        timing: Timing {
            poll_interval_seconds: 5,
            lease_expiration_seconds: 3600,
            partition_tolerance_seconds: 3600,
        },
        detach: true,
        log_level: "info".into(),
        engine: o.engine,
        ..Options::default()
    };
    let t = Instant::now();
    let mut bed =
        Testbed::build_in(Binaries::in_dir(&o.bin_dir)?, options, o.state_dir.clone()).await?;
    println!(
        "[{:>6.1}s] database, certificates, underlay bridge, api + {} cell namespaces, every config rendered from templates/ with manifests/lab/: ok ({:.1}s)",
        progress.start.elapsed().as_secs_f64(),
        o.cells,
        t.elapsed().as_secs_f64()
    );
    let demo = demo::demo(o.cells, o.apps);
    let mut lab = LabDemo {
        demo: demo.clone(),
        containers: Vec::new(),
        outside_ns: String::new(),
        policy_file: o.state_dir.join("policies.json"),
        poll_interval: settings.poll_interval_seconds,
        asg_poll_interval: settings.asg_poll_interval_seconds,
    };
    let started = start_all(&mut bed, &mut lab, &o, &settings, &progress);
    // Record everything before reporting, so `down` cleans up even after a failure.
    let state = bed.leak();
    state.write(&state_file(&o.state_dir))?;
    lab.write(&o.state_dir)?;
    started?;
    let bound = Duration::from_secs(180);
    let (rows, took) = progress.step("connectivity matrix equal to policies and ASGs", || {
        let (rows, took, equal) = converge(&lab, bound)?;
        if !equal {
            println!("{}", show(&lab, &rows)?);
            bail!("not equal within {bound:?}");
        }
        Ok((rows, took))
    })?;
    println!();
    print_fabric(&state, &lab).await?;
    println!("{}", show(&lab, &rows)?);
    let total = progress.start.elapsed();
    println!(
        "up in {:.1}s (matrix converged {:.1}s after the containers started)",
        total.as_secs_f64(),
        took.as_secs_f64()
    );
    let case = format!("up on {}", o.engine.name());
    for (case, d) in [
        (case.as_str(), total),
        ("matrix converged after the containers", took),
    ] {
        let ms = d.as_secs_f64() * 1000.0;
        silk_testkit::figures::record("lab", case, o.apps as f64, "apps", "wall_ms", ms);
    }
    Ok(())
}

fn start_all(
    bed: &mut Testbed,
    lab: &mut LabDemo,
    o: &UpOptions,
    settings: &AgentSettings,
    progress: &Progress,
) -> anyhow::Result<()> {
    let lab_bin = o.bin_dir.join("silk-lab");
    progress.step("outside host 192.0.2.200 on the underlay", || {
        let ns = bed.add_underlay_host(*OUTSIDE.ip())?.name().to_string();
        lab.outside_ns = ns.clone();
        let argv = responder_argv(&lab_bin, OUTSIDE.port(), "outside");
        bed.spawn_other("responder outside", &ns, &argv)?;
        Ok(())
    })?;
    let db = match o.engine {
        silk_testkit::db::Engine::Postgres => "PostgreSQL",
        silk_testkit::db::Engine::Mysql => "MySQL over TLS, through the db-relay",
    };
    progress.step(&format!("silk-controller (api namespace, {db})"), || {
        Ok(bed.start_controller()?)
    })?;
    progress.step("lab policy server with the demo policies and ASGs", || {
        write_file(&lab.policy_file, &demo::demo_file(&lab.demo))?;
        let file = lab.policy_file.clone();
        Ok(bed.start_policy_server(&lab_bin, &file)?)
    })?;
    let agent = o.bin_dir.join("vxlan-policy-agent");
    let logger = o.bin_dir.join("iptables-logger");
    for i in 0..bed.cells.len() {
        progress.step(
            &format!(
                "cell {i} ({}): silk-daemon, vxlan-policy-agent, iptables-logger",
                bed.cells[i].underlay_ip
            ),
            || {
                bed.start_daemon(i)?;
                bed.start_agent(i, &agent, settings)?;
                bed.start_logger(i, &logger)?;
                Ok(())
            },
        )?;
    }
    let demo = lab.demo.clone();
    for (k, app) in demo.apps.iter().enumerate() {
        let c = progress.step(
            &format!(
                "container for {} ({}) on cell {}: CNI ADD, responder on :{}",
                app.name, app.space.name, app.cell, app.port
            ),
            || create_container(bed, app, k, &lab_bin, &o.bin_dir),
        )?;
        lab.containers.push(c);
    }
    Ok(())
}

fn responder_argv(lab_bin: &Path, port: u16, name: &str) -> Vec<String> {
    vec![
        lab_bin.display().to_string(),
        "responder".into(),
        format!("--port={port}"),
        format!("--name={name}"),
    ]
}

/// One container for `app`: a namespace, the cell's conflist through garden's ADD (metadata as
/// Diego sets it, a port mapping), the responder inside.
fn create_container(
    bed: &mut Testbed,
    app: &App,
    k: usize,
    lab_bin: &Path,
    plugin_dir: &Path,
) -> anyhow::Result<Container> {
    let handle = format!(
        "{:08x}-1ab0-4000-8000-{:012x}",
        0xc0de_0000_u32 + k as u32,
        k
    );
    let ns = bed.add_container_ns()?;
    let (ns_name, ns_path) = (ns.name().to_string(), ns.path().to_path_buf());
    let cell = &bed.cells[app.cell];
    let host_port = 61000 + u16::try_from(k / bed.cells.len()).unwrap_or(0);
    let g = cell.garden(plugin_dir);
    let result = g.up(&garden::Container {
        handle: handle.clone(),
        netns: ns_path,
        metadata: json!({
            "app_id": app.guid, "container_workload": "app", "org_id": ORG_GUID,
            "policy_group_id": app.guid, "ports": app.port.to_string(),
            "space_id": app.space.guid,
        }),
        port_mappings: json!([{"container_port": app.port, "host_port": host_port}]),
        net_out_rules: serde_json::Value::Null,
    })?;
    let ip = garden::result_ipv4(&result)
        .ok_or_else(|| anyhow!("expected an IPv4 address in the CNI result: {result}"))?;
    let cell_ns = cell.ns.name().to_string();
    let argv = responder_argv(lab_bin, app.port, &app.name);
    bed.spawn_other(&format!("responder {}", app.name), &ns_name, &argv)?;
    Ok(Container {
        app: app.clone(),
        handle,
        ns: ns_name,
        ip,
        cell_ns,
        host_port,
    })
}

/// Tests every connection once, a thread per source container.
pub fn test_matrix(lab: &LabDemo) -> Vec<Row> {
    let outside_name = "outside".to_string();
    std::thread::scope(|s| {
        let handles: Vec<_> = lab
            .containers
            .iter()
            .enumerate()
            .map(|(i, src)| {
                let mut targets: Vec<(SocketAddrV4, String)> = lab
                    .containers
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, d)| (SocketAddrV4::new(d.ip, d.app.port), d.app.name.clone()))
                    .collect();
                targets.push((OUTSIDE, outside_name.clone()));
                let ns = PathBuf::from("/run/netns").join(&src.ns);
                s.spawn(move || probe::probe_all(&ns, targets))
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                let mut probes = h
                    .join()
                    .unwrap_or_else(|_| vec![Probe::Error("probe thread panicked".into())]);
                let to_outside = probes.pop().unwrap_or(Probe::Error("no probe".into()));
                let mut to_apps: Vec<Option<Probe>> = probes.into_iter().map(Some).collect();
                to_apps.insert(i.min(to_apps.len()), None);
                Row {
                    to_apps,
                    to_outside,
                }
            })
            .collect()
    })
}

/// Re-tests until the matrix equals the policy file or `bound` passes: the last rows, the
/// time it took, and whether they are equal.
pub fn converge(lab: &LabDemo, bound: Duration) -> anyhow::Result<(Vec<Row>, Duration, bool)> {
    let start = Instant::now();
    loop {
        let file = lab.policies()?;
        let rows = test_matrix(lab);
        let equal = matrix::differences(&lab.demo, &file, &rows).is_empty();
        if equal || start.elapsed() >= bound {
            return Ok((rows, start.elapsed(), equal));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The matrix text for `rows` against the current file.
pub fn show(lab: &LabDemo, rows: &[Row]) -> anyhow::Result<String> {
    Ok(matrix::render(&lab.demo, &lab.policies()?, rows))
}

/// Cells with leases, processes, then the containers with IPs and apps.
pub async fn print_fabric(state: &LabState, lab: &LabDemo) -> anyhow::Result<()> {
    status::print(state).await?;
    println!("containers ({}):", lab.containers.len());
    println!(
        "  {:<12} {:<8} {:<15} {:<12} {:<14} handle",
        "app", "space", "ip", "cell", "port mapping"
    );
    for c in &lab.containers {
        println!(
            "  {:<12} {:<8} {:<15} {:<12} {:<14} {}",
            c.app.name,
            c.app.space.name,
            c.ip,
            c.cell_ns,
            format!("{}->{}", c.host_port, c.app.port),
            c.handle
        );
    }
    println!(
        "outside host: {} in {} (reachable only through ASGs)",
        OUTSIDE, lab.outside_ns
    );
    Ok(())
}

/// `status`: the fabric, then the matrix, re-tested until equal or `wait` passes; an error when
/// it still differs.
pub async fn status(dir: &Path, wait: Duration) -> anyhow::Result<()> {
    let state = LabState::read(&state_file(dir)).context("read lab state")?;
    let lab = LabDemo::read(dir)?;
    print_fabric(&state, &lab).await?;
    let (rows, took, equal) = converge(&lab, wait)?;
    println!("{}", show(&lab, &rows)?);
    if !equal {
        bail!("the matrix differs from the policies and ASGs");
    }
    if took > Duration::from_secs(1) {
        println!("(equal after {:.1}s of re-testing)", took.as_secs_f64());
    }
    Ok(())
}

/// After a change to the file: waits for the next polls and shows the matrix.
fn after_change(lab: &LabDemo, interval: u64) -> anyhow::Result<()> {
    let bound = Duration::from_secs(3 * interval + 15);
    let (rows, took, equal) = converge(lab, bound)?;
    println!("{}", show(lab, &rows)?);
    if !equal {
        bail!("the matrix still differs {bound:?} after the change");
    }
    println!("took effect after {:.1}s", took.as_secs_f64());
    Ok(())
}

fn app<'a>(lab: &'a LabDemo, name: &str) -> anyhow::Result<&'a App> {
    demo::app(&lab.demo, name).ok_or_else(|| {
        let names: Vec<_> = lab.demo.apps.iter().map(|a| a.name.as_str()).collect();
        anyhow!("no app {name:?} (apps: {})", names.join(", "))
    })
}

/// `policy add|remove SRC DST PORT`.
pub fn policy(dir: &Path, add: bool, src: &str, dst: &str, port: u16) -> anyhow::Result<()> {
    let lab = LabDemo::read(dir)?;
    let (s, d) = (app(&lab, src)?, app(&lab, dst)?);
    let mut file = lab.policies()?;
    let p = crate::policy_server::data::FilePolicy::new(
        &s.guid,
        &d.guid,
        "tcp",
        port.into(),
        port.into(),
    );
    let had = file.policies.contains(&p);
    if add {
        if had {
            bail!("{src} -> {dst} tcp {port} is already there");
        }
        file.policies.push(p);
    } else {
        if !had {
            bail!("no policy {src} -> {dst} tcp {port}");
        }
        file.policies.retain(|x| *x != p);
    }
    write_file(&lab.policy_file, &file)?;
    println!(
        "{} policy {src} -> {dst} tcp {port} in {}",
        if add { "added" } else { "removed" },
        lab.policy_file.display()
    );
    after_change(&lab, lab.poll_interval)
}

/// `asg add|remove SPACE PROTOCOL DESTINATION PORTS`: a rule of the space's running group
/// `lab-<space>`.
pub fn asg(
    dir: &Path,
    add: bool,
    space: &str,
    protocol: &str,
    destination: &str,
    ports: &str,
) -> anyhow::Result<()> {
    let lab = LabDemo::read(dir)?;
    let sp = lab
        .demo
        .spaces
        .iter()
        .find(|s| s.name == space)
        .ok_or_else(|| anyhow!("no space {space:?} (spaces: prod, dev)"))?
        .clone();
    let mut file = lab.policies()?;
    let name = format!("lab-{space}");
    let rule = AsgRule::new(protocol, destination, ports);
    let at = file.security_groups.iter().position(|g| g.name == name);
    match (add, at) {
        (true, None) => file.security_groups.push(FileSecurityGroup {
            guid: format!("6a4c0000-1ab0-4000-8000-{:012x}", 0x100 + sp.guid.len()),
            name: name.clone(),
            rules: FileRules::Rules(vec![rule.clone()]),
            staging_default: false,
            running_default: false,
            staging_space_guids: vec![],
            running_space_guids: vec![sp.guid.clone()],
        }),
        (true, Some(i)) => match &mut file.security_groups[i].rules {
            FileRules::Rules(r) if !r.contains(&rule) => r.push(rule.clone()),
            _ => bail!("{name} already has that rule"),
        },
        (false, Some(i)) => {
            let g = &mut file.security_groups[i];
            match &mut g.rules {
                FileRules::Rules(r) if r.contains(&rule) => r.retain(|x| *x != rule),
                _ => bail!("{name} has no such rule"),
            }
            if matches!(&g.rules, FileRules::Rules(r) if r.is_empty()) {
                file.security_groups.remove(i);
            }
        }
        (false, None) => bail!("no group {name}"),
    }
    write_file(&lab.policy_file, &file)?;
    println!(
        "{} rule {protocol} {destination} {ports} in group {name} (running, space {space})",
        if add { "added" } else { "removed" }
    );
    after_change(&lab, lab.asg_poll_interval)
}

/// `restart NAME`: SIGKILL to the lab process called `NAME` (e.g. `silk-daemon-c1`), then
/// starts it again as before.
pub fn restart(dir: &Path, name: &str) -> anyhow::Result<()> {
    let path = state_file(dir);
    let mut state = LabState::read(&path).context("read lab state")?;
    let names: Vec<String> = state.processes.iter().map(|p| p.name.clone()).collect();
    let p = state
        .processes
        .iter_mut()
        .find(|p| p.name == name)
        .ok_or_else(|| anyhow!("no process {name:?} (processes: {})", names.join(", ")))?;
    let old = p.pid;
    p.restart(&state.dir)?;
    println!("{name}: killed pid {old}, started pid {}", p.pid);
    let (pid, binary) = (p.pid, p.binary.clone());
    state.write(&path)?;
    std::thread::sleep(Duration::from_secs(1));
    let alive = std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == binary);
    if !alive {
        bail!("{name} (pid {pid}) exited after the restart: see its log");
    }
    Ok(())
}
