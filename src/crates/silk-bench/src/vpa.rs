//! vxlan-policy-agent c2c cycle figures (scripts/bench vpa). Runs the agent's real cycle
//! (metadata store on disk, policies decoded from JSON text, planner, kernel reconciliation,
//! real `iptables-save`/`iptables-restore` under the lock file) for 100, 1,000 and 10,000
//! policies with 100 local containers, and times beside it a bare `iptables-restore` of the
//! same first payload (the kernel's floor) and of upstream's single-chain payload.
//!
//! The ASG loop is timed as the agent's real periodic ASG poll (store on disk, groups answered
//! in process, the skip decision, `iptables-save`, the ASG planner and one restore as the
//! cycle decides), for 100 ASGs of 10 rules over the same 100 containers.
//!
//! Must run as root inside a network namespace of its own (scripts/bench.d/vpa does
//! `unshare -n`): it flushes the namespace's filter table between sizes.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::resource::{getrusage, UsageWho};
use serde_json::json;
use silk_client::ClientError;
use silk_core::asg::SecurityGroup;
use silk_core::policy::{PoliciesResponse, Policy};
use silk_dataplane::datastore::{Container, Entries, MetadataStore};
use silk_dataplane::iptables::{ChainName, Family, SystemIptables};
use silk_ops::Metrics;
use vxlan_policy_agent::asg::{plan_asgs, AsgApi, AsgCycle, AsgOptions, Scope};
use vxlan_policy_agent::cycle::{C2cCycle, CycleOptions, Outcome, PolicyApi};
use vxlan_policy_agent::enforcer::{plan_kernel, Actual};
use vxlan_policy_agent::planner::{local_containers, plan_c2c, plan_rules, PlanOptions};
use vxlan_policy_agent::ports::Ports;

const CONTAINERS: usize = 100;

/// The policy server as the cycle sees it: the response body is decoded at every fetch, as
/// the HTTP client decodes it (TLS and the network are not part of these figures).
#[derive(Clone)]
struct Api {
    body: Arc<Mutex<String>>,
}

impl PolicyApi for Api {
    async fn policies(&self, _ids: &[String]) -> Result<Vec<Policy>, ClientError> {
        let body = self.body.lock().map(|b| b.clone()).unwrap_or_default();
        serde_json::from_str::<PoliciesResponse>(&body)
            .map(|r| r.policies)
            .map_err(|e| ClientError::Status {
                code: 500,
                text: e.to_string(),
            })
    }

    async fn policies_last_updated(&self) -> Result<i64, ClientError> {
        Ok(1_729_785_226_123_456_000)
    }

    async fn ingress_router_tag(&self) -> Result<String, ClientError> {
        Ok("FFFE".into())
    }
}

fn app(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-{i:012x}")
}

fn remote_app(i: usize) -> String {
    format!("{i:08x}-ffff-4000-8000-{i:012x}")
}

/// `n` policies: destination = local app `i % 100`, source = app `i / 100` (local when even,
/// remote when odd, so half the sources carry a mark rule), tcp port 1000 + source, and the
/// one-change variant moves the first policy to another port.
fn policies(n: usize, changed: bool) -> String {
    let ps: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let (dst, src) = (i % CONTAINERS, i / CONTAINERS);
            let src_id = if src % 2 == 0 {
                app(src)
            } else {
                remote_app(src)
            };
            let port = if changed && i == 0 { 2 } else { 1000 + src };
            json!({"source": {"id": src_id, "tag": format!("{:04X}", src + 1)},
                   "destination": {"id": app(dst), "tag": format!("{:04X}", dst + 1),
                                   "protocol": "tcp", "ports": {"start": port, "end": port}}})
        })
        .collect();
    json!({"total_policies": n, "policies": ps}).to_string()
}

fn sh(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| args[0].to_string())?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn clean_filter() -> Result<()> {
    sh(&["iptables", "-F"], None)?;
    sh(&["iptables", "-X"], None)?;
    Ok(())
}

fn cpu() -> Duration {
    let t = |who| {
        getrusage(who)
            .map(|u| {
                let (a, b) = (u.user_time(), u.system_time());
                Duration::from_micros(
                    u64::try_from(a.tv_sec() * 1_000_000 + a.tv_usec()).unwrap_or(0)
                        + u64::try_from(b.tv_sec() * 1_000_000 + b.tv_usec()).unwrap_or(0),
                )
            })
            .unwrap_or_default()
    };
    t(UsageWho::RUSAGE_SELF) + t(UsageWho::RUSAGE_CHILDREN)
}

/// Wall time and CPU (this process and its iptables children) of `f`.
async fn timed<T, F: std::future::Future<Output = T>>(f: F) -> (T, Duration, Duration) {
    let (w, c) = (Instant::now(), cpu());
    let out = f.await;
    (out, w.elapsed(), cpu().saturating_sub(c))
}

/// Wall time and CPU (iptables-restore included) of one bare restore on a clean table.
fn restore_time(payload: &str) -> Result<(Duration, Duration)> {
    clean_filter()?;
    let (t, c) = (Instant::now(), cpu());
    sh(&["iptables-restore", "--noflush", "-w"], Some(payload))?;
    let d = (t.elapsed(), cpu().saturating_sub(c));
    clean_filter()?;
    Ok(d)
}

/// Repetitions per figure: `SILK_BENCH_REPS`, default 3.
fn reps() -> usize {
    std::env::var("SILK_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3)
}

/// The run with the median wall time.
fn median<T>(mut runs: Vec<(T, Duration, Duration)>) -> (T, Duration, Duration) {
    runs.sort_by_key(|r| r.1);
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

fn median_of(
    reps: usize,
    mut f: impl FnMut() -> Result<(Duration, Duration)>,
) -> Result<(Duration, Duration)> {
    let mut v = (0..reps).map(|_| f()).collect::<Result<Vec<_>>>()?;
    v.sort();
    Ok(v[v.len() / 2])
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn row(n: usize, what: &str, out: &Outcome, wall: Duration, cpu: Duration) {
    for (metric, d) in [("wall_ms", wall), ("cpu_ms", cpu)] {
        let ms = d.as_secs_f64() * 1000.0;
        silk_testkit::figures::record("vpa", what, n as f64, "policies", metric, ms);
    }
    println!(
        "  {what:<34} {:>9} ms  cpu {:>9} ms  chains written {:>4}  rules written {:>6}  fetched {}  table read {}",
        ms(wall),
        ms(cpu),
        out.rewritten,
        out.written,
        out.fetched,
        out.read
    );
}

async fn size(n: usize, dir: &std::path::Path) -> Result<()> {
    clean_filter()?;
    let store = MetadataStore::new(dir.join(format!("store-{n}.json")), None);
    for c in 0..CONTAINERS {
        store.add(
            &format!("{c:04}-handle"),
            &format!("10.255.{}.{}", 7 + c / 200, 2 + c % 200),
            None,
            json!({"policy_group_id": app(c), "space_id": "space", "container_workload": "app"}),
        )?;
    }
    let api = Api {
        body: Arc::new(Mutex::new(policies(n, false))),
    };
    let new_cycle = || {
        C2cCycle::new(
            Ports {
                api: api.clone(),
                iptables: Arc::new(SystemIptables::new(dir.join("iptables.lock"))),
                store: store.clone(),
                metrics: Metrics::new("vxlan-policy-agent", 0),
            },
            CycleOptions {
                accepted_udp_logs_per_sec: 100,
                ..CycleOptions::default()
            },
            Arc::new(AtomicBool::new(false)),
        )
    };

    // The payloads of the floor: ours for an empty table, and upstream's single chain.
    let containers = local_containers(&store.read_all()?);
    let ps = serde_json::from_str::<PoliciesResponse>(&policies(n, false))?.policies;
    let plan = plan_c2c(&containers, &ps, &PlanOptions::default());
    let (_, ours) = plan_kernel(&plan, &[], &Actual::default(), 1_729_785_226_123_456)?;
    let flat = plan_rules(&containers, &ps, &PlanOptions::default())?;
    let mut upstream = String::from(
        "*filter\n:vpa--1729785226123456 - [0:0]\n-I FORWARD 1 -j vpa--1729785226123456\n",
    );
    for r in &flat {
        upstream.push_str(&format!("-A vpa--1729785226123456 {r}\n"));
    }
    upstream.push_str("COMMIT\n");
    let reps = reps();
    let floor = median_of(reps, || restore_time(&ours.render()))?;
    let floor_upstream = median_of(reps, || restore_time(&upstream))?;

    println!(
        "{n} policies, {CONTAINERS} local containers: {} rules in {} chains (upstream's layout: {} rules in 1 chain); median of {reps}",
        plan.rule_count() + 1,
        plan.groups.len() + 1,
        flat.len() + 1
    );
    let mut firsts = Vec::new();
    let mut cycle = new_cycle();
    for _ in 0..reps {
        clean_filter()?;
        cycle = new_cycle();
        let (out, w, c) = timed(cycle.full()).await;
        firsts.push((out?, w, c));
    }
    let (out, w, c) = median(firsts);
    row(n, "first cycle", &out, w, c);
    println!(
        "  {:<34} {:>9} ms  cpu {:>9} ms  first/floor {:.2} (cpu {:.2}); upstream's single chain: {} ms, cpu {} ms",
        "floor: bare iptables-restore",
        ms(floor.0),
        ms(floor.1),
        w.as_secs_f64() / floor.0.as_secs_f64(),
        c.as_secs_f64() / floor.1.as_secs_f64(),
        ms(floor_upstream.0),
        ms(floor_upstream.1),
    );
    for (metric, d) in [("wall_ms", floor.0), ("cpu_ms", floor.1)] {
        let ms = d.as_secs_f64() * 1000.0;
        silk_testkit::figures::record(
            "vpa",
            "floor: bare iptables-restore",
            n as f64,
            "policies",
            metric,
            ms,
        );
    }
    let mut runs = Vec::new();
    for _ in 0..reps {
        let (out, w, c) = timed(cycle.full()).await;
        runs.push((out?, w, c));
    }
    let (out, w, c) = median(runs);
    row(n, "no-change cycle (with fetch)", &out, w, c);
    // The first tick stores policies_last_updated (and fetches); the next ones skip the fetch.
    cycle.tick().await?;
    let mut runs = Vec::new();
    for _ in 0..reps {
        let (out, w, c) = timed(cycle.tick()).await;
        runs.push((out?, w, c));
    }
    let (out, w, c) = median(runs);
    row(n, "no-change tick (fetch skipped)", &out, w, c);
    let mut runs = Vec::new();
    for i in 0..reps {
        if let Ok(mut b) = api.body.lock() {
            *b = policies(n, i.is_multiple_of(2));
        }
        let (out, w, c) = timed(cycle.full()).await;
        runs.push((out?, w, c));
    }
    let (out, w, c) = median(runs);
    row(n, "one-change cycle", &out, w, c);
    // A change applied after someone else touched the table: the table is read again.
    if let Ok(mut b) = api.body.lock() {
        *b = policies(n, reps.is_multiple_of(2));
    }
    sh(&["iptables", "-N", "bench-touch"], None)?;
    let (out, w, c) = timed(cycle.full()).await;
    row(n, "one-change cycle, table re-read", &out?, w, c);
    clean_filter()?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>())
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![100, 1_000, 10_000]
    } else {
        sizes
    };
    let dir = tempfile::tempdir()?;
    println!(
        "vxlan-policy-agent c2c cycle (in-process policy answer decoded from JSON, real store, planner and iptables; {})",
        sh(&["iptables", "--version"], None)?.trim()
    );
    for n in sizes {
        size(n, dir.path()).await?;
    }
    asgs(dir.path()).await?;
    Ok(())
}

/// 100 ASGs of 10 rules, each bound to one of 10 spaces; the 100 containers spread over the
/// spaces, so each container's `asg-` chain holds its space's 10 groups (100 rules).
fn security_groups(changed: bool) -> Vec<SecurityGroup> {
    (0..100)
        .map(|g| {
            let rules: Vec<serde_json::Value> = (0..10)
                .map(|r| {
                    let port = if changed && g == 0 && r == 0 {
                        8443
                    } else {
                        443 + r
                    };
                    json!({"protocol": "tcp", "destination": format!("10.{}.{}.0/24", 100 + g, r),
                           "ports": port.to_string()})
                })
                .collect();
            SecurityGroup {
                guid: format!("asg-{g:04}"),
                name: format!("group {g}"),
                rules: serde_json::Value::Array(rules).to_string(),
                staging_default: false,
                running_default: false,
                staging_space_guids: vec![],
                running_space_guids: vec![format!("space-{}", g % 10)],
            }
        })
        .collect()
}

fn asg_entries() -> Entries {
    (0..CONTAINERS)
        .map(|c| {
            let handle = format!("{c:04}-handle");
            let entry = Container {
                handle: handle.clone(),
                ip: format!("10.255.{}.{}", 7 + c / 200, 2 + c % 200),
                ipv6: None,
                metadata: json!({"policy_group_id": app(c), "space_id": format!("space-{}", c % 10),
                                 "container_workload": "app"}),
            };
            (handle, entry)
        })
        .collect()
}

/// The netout chains cni-wrapper-plugin leaves for a dynamic agent.
fn netout_chains(entries: &Entries) -> Result<()> {
    let mut p = String::from("*filter\n");
    for h in entries.keys() {
        p.push_str(&format!(":{} - [0:0]\n", ChainName::netout(h)));
    }
    for h in entries.keys() {
        p.push_str(&format!(
            "-A {} -j REJECT --reject-with icmp-port-unreachable\n",
            ChainName::netout(h)
        ));
    }
    p.push_str("COMMIT\n");
    sh(&["iptables-restore", "--noflush", "-w"], Some(&p))?;
    Ok(())
}

/// The policy server's security groups as the ASG cycle sees them (in process).
#[derive(Clone)]
struct Groups(Arc<Mutex<Vec<SecurityGroup>>>);

impl AsgApi for Groups {
    async fn security_groups(&self, _spaces: &[String]) -> Result<Vec<SecurityGroup>, ClientError> {
        Ok(self.0.lock().map(|g| g.clone()).unwrap_or_default())
    }

    async fn security_groups_last_updated(&self) -> Result<i64, ClientError> {
        Err(ClientError::Status {
            code: 404,
            text: "not served: every poll fetches".into(),
        })
    }
}

/// One periodic poll of the agent's ASG cycle (store read, groups, skip decision, save,
/// planner, restore as the cycle decides).
async fn asg_cycle(
    cycle: &AsgCycle<Groups, SystemIptables>,
) -> Result<(usize, usize, bool, Duration, Duration)> {
    let (w, c) = (Instant::now(), cpu());
    let out = cycle.poll().await?;
    if !out.failed.is_empty() {
        bail!("asg plan failed: {:?}", out.failed);
    }
    Ok((
        out.updated.len(),
        out.planned,
        out.read,
        w.elapsed(),
        cpu().saturating_sub(c),
    ))
}

async fn asgs(dir: &std::path::Path) -> Result<()> {
    clean_filter()?;
    let entries = asg_entries();
    let store = MetadataStore::new(dir.join("store-asg.json"), None);
    for e in entries.values() {
        store.add(&e.handle, &e.ip, None, e.metadata.clone())?;
    }
    let api = Groups(Arc::new(Mutex::new(security_groups(false))));
    let cycle = AsgCycle::new(
        Ports {
            api: api.clone(),
            iptables: Arc::new(SystemIptables::new(dir.join("iptables.lock"))),
            store,
            metrics: Metrics::new("vxlan-policy-agent", 0),
        },
        AsgOptions::default(),
        false,
    );
    netout_chains(&entries)?;
    let groups = security_groups(false);
    let saved = sh(&["iptables-save", "-t", "filter"], None)?;
    let first_payload = plan_asgs(
        &groups,
        &entries,
        &saved,
        Family::V4,
        &AsgOptions::default(),
        Scope::All,
    )
    .payload
    .render();
    let (t, c) = (Instant::now(), cpu());
    sh(
        &["iptables-restore", "--noflush", "-w"],
        Some(&first_payload),
    )?;
    let (floor, floor_cpu) = (t.elapsed(), cpu().saturating_sub(c));
    clean_filter()?;
    netout_chains(&entries)?;
    println!(
        "ASG loop: 100 ASGs of 10 rules over 10 spaces, {CONTAINERS} containers (the agent's ASG poll: store, in-process groups, skip decision, save + planner + restore as decided)"
    );
    let asg_row =
        |what: &str, (chains, planned, read, w, c): (usize, usize, bool, Duration, Duration)| {
            println!(
            "  {what:<34} {:>9} ms  cpu {:>9} ms  chains written {chains:>4}  containers planned {planned:>4}  table read {read}",
            ms(w),
            ms(c)
        );
        };
    let first = asg_cycle(&cycle).await?;
    let (first_wall, first_cpu) = (first.3, first.4);
    asg_row("first cycle", first);
    println!(
        "  {:<34} {:>9} ms  cpu {:>9} ms  first/floor {:.2} (cpu {:.2})",
        "floor: bare iptables-restore",
        ms(floor),
        ms(floor_cpu),
        first_wall.as_secs_f64() / floor.as_secs_f64(),
        first_cpu.as_secs_f64() / floor_cpu.as_secs_f64()
    );
    asg_row("no-change cycle", asg_cycle(&cycle).await?);
    *api.0.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = security_groups(true);
    asg_row("one-change cycle (one ASG)", asg_cycle(&cycle).await?);
    // Someone else deletes one container's asg- chain: the generation moved, the table is read.
    let victim = ChainName::asg(entries.keys().next().context("no container")?);
    let netout = ChainName::netout(entries.keys().next().context("no container")?);
    sh(&["iptables", "-w", "-F", netout.as_str()], None)?;
    sh(&["iptables", "-w", "-F", victim.as_str()], None)?;
    sh(&["iptables", "-w", "-X", victim.as_str()], None)?;
    asg_row("repair cycle (chain deleted)", asg_cycle(&cycle).await?);
    asg_row("no-change cycle after repair", asg_cycle(&cycle).await?);
    clean_filter()?;
    Ok(())
}
