//! The wrapper's ADD and DEL (cni.md §4.2-4.3, with the fixes of §7): everything is validated
//! before the delegate runs, each family's rules go in one iptables-restore under the shared
//! lock, a failed ADD is rolled back, and DEL finds rules by chain name.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use silk_cni_skel::{delegate, gc, CmdArgs, CniError, CniPlugin, CniResult};
use silk_dataplane::datastore::MetadataStore;
use silk_dataplane::iptables::{Family, Iptables, SystemIptables};

use crate::config::WrapperConfig;
use crate::handover::{self, AddInput, AsgMode, HttpAgent};
use crate::host;
use crate::netrules::{self, asg, options, Container, RuleOptions};

pub const LOG_FILE: &str = "/var/vcap/sys/log/silk-cni/cni-wrapper-plugin.stdout.log";
const SOURCE: &str = "cfnetworking.cni-wrapper-plugin";
/// vxlan-policy-agent calls are bounded (upstream's had no timeout, cni.md §7).
const VPA_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Wrapper;

fn err(e: impl std::fmt::Display) -> CniError {
    CniError::internal(e.to_string())
}

/// Milliseconds since `t`, for the phase timings DEL logs.
fn millis(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e4).round() / 10.0
}

fn log(event: &str, data: Value) {
    silk_cni_skel::filelog::append(LOG_FILE, SOURCE, event, data);
}

/// Everything checked before the first side effect.
struct Prepared {
    cfg: WrapperConfig,
    opts: RuleOptions,
    ipt: SystemIptables,
    store: MetadataStore,
}

fn prepare(args: &CmdArgs) -> Result<Prepared, CniError> {
    let cfg = WrapperConfig::parse(&args.stdin).map_err(err)?;
    let owner =
        host::resolve_owner(&cfg.datastore_file_owner, &cfg.datastore_file_group).map_err(err)?;
    let opts = RuleOptions::from_config(&cfg).map_err(err)?;
    host::prepare_lock_file(&cfg.iptables_lock_file, owner).map_err(err)?;
    Ok(Prepared {
        ipt: SystemIptables::new(&cfg.iptables_lock_file),
        store: MetadataStore::new(&cfg.datastore, owner),
        cfg,
        opts,
    })
}

/// DEL's rule removal for both families: the IPs come from the store entry, else from the
/// cached ADD result (plan_del also finds the IPv4 one from the INPUT jump). Returns the
/// problems met; none of them stops the rest.
fn remove_all_rules(
    p: &Prepared,
    args: &CmdArgs,
    entry: Option<&silk_dataplane::datastore::Container>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let prev = args.prev_result.as_ref();

    let ip4 = entry
        .and_then(|e| e.ip.parse().ok())
        .or_else(|| prev.and_then(|r| r.first_ipv4()).map(IpAddr::V4));
    let expected = ip4.and_then(|ip| {
        let underlay_ifs = host::underlay_interfaces(
            &p.cfg.temporary_underlay_interface_names,
            &p.cfg.underlay_ips,
        )
        .ok()?;
        let masq_exclude = match options::no_masq_range(&p.cfg).ok()? {
            Some(r) => Some(r),
            None => Some(host::daemon_lease_once(p.cfg.daemon_port()?).ok()?),
        };
        Some(Container {
            handle: args.container_id.clone(),
            ip,
            underlay_ifs,
            port_mappings: vec![],
            workload: String::new(),
            masq_exclude,
        })
    });
    if let Err(e) = remove_container_rules(
        &p.ipt,
        Family::V4,
        &p.opts,
        expected.as_ref(),
        &args.container_id,
        ip4,
    ) {
        problems.push(e.msg);
    }
    let ip6 = entry
        .and_then(|e| e.ipv6.as_deref())
        .and_then(|s| s.parse().ok())
        .or_else(|| prev.and_then(|r| r.first_ipv6()).map(IpAddr::V6));
    if let Some(ip6) = ip6 {
        if let Err(e) = remove_rules(&p.ipt, Family::V6, &args.container_id, Some(ip6)) {
            problems.push(e.msg);
        }
    }
    problems
}

fn vpa_get(addr: &str, path: &str) -> Result<silk_cni_skel::http::Response, CniError> {
    silk_cni_skel::http::get(addr, path, VPA_TIMEOUT).map_err(err)
}

/// Removes every rule and chain of `handle` in one restore per family (save and restore under
/// one lock hold).
pub fn remove_rules(
    ipt: &dyn Iptables,
    family: Family,
    handle: &str,
    ip: Option<IpAddr>,
) -> Result<(), CniError> {
    let _lock = ipt.lock().map_err(err)?;
    let saved = ipt.save(family, None).map_err(err)?;
    let plan = netrules::plan_del(handle, ip, &saved);
    if plan.is_empty() {
        return Ok(());
    }
    ipt.restore(family, &plan.render())
        .map_err(|e| err(format!("net out cleanup: {e}")))
}

/// Removes the chains with `prefixes` that are not in `keep`, with their jumps and MASQUERADE
/// rules, in one save and one restore under one lock hold (GC, cni-teardown). Returns how many
/// chains went.
pub fn sweep_rules(
    ipt: &dyn Iptables,
    family: Family,
    prefixes: &[&str],
    keep: &[String],
) -> Result<usize, CniError> {
    let _lock = ipt.lock().map_err(err)?;
    let saved = ipt.save(family, None).map_err(err)?;
    let plan = netrules::plan_sweep(&saved, prefixes, keep);
    if plan.is_empty() {
        return Ok(0);
    }
    ipt.restore(family, &plan.render())
        .map_err(|e| err(format!("sweep: {e}")))?;
    Ok(plan.tables.iter().map(|t| t.remove.len()).sum())
}

/// DEL's rule removal: the expected plan first (no table read), the saved-table plan otherwise.
fn remove_container_rules(
    ipt: &dyn Iptables,
    family: Family,
    opts: &RuleOptions,
    expected: Option<&Container>,
    handle: &str,
    ip: Option<IpAddr>,
) -> Result<(), CniError> {
    if let Some(c) = expected {
        let plan = netrules::plan_del_expected(opts, c);
        let fast = {
            let _lock = ipt.lock().map_err(err)?;
            ipt.restore(family, &plan.render())
        };
        if fast.is_ok() {
            return Ok(());
        }
    }
    remove_rules(ipt, family, handle, ip)
}

impl Wrapper {
    /// The rules, the store entry and the agent calls; the ASG mode comes from the agent's
    /// answer for this ADD ([`handover`]).
    fn add_after_delegate(
        &self,
        p: &Prepared,
        c4: &Container,
        result: &CniResult,
    ) -> Result<(), CniError> {
        let metadata = if p.cfg.metadata.is_empty() {
            Value::Null
        } else {
            Value::Object(p.cfg.metadata.clone().into_iter().collect())
        };
        let agent = HttpAgent {
            addr: &p.cfg.policy_agent_force_poll_address,
            timeout: VPA_TIMEOUT,
        };
        let input = AddInput {
            opts: &p.opts,
            container: c4,
            ipv6: result.first_ipv6().filter(|_| p.cfg.enable_ipv6),
            net_out_rules: &p.cfg.runtime_config.net_out_rules,
            metadata,
        };
        // The cell's last answer only decides what the first restore writes (one restore in
        // the usual ADD); the answer for this ADD decides what stays.
        let mode_file = std::path::PathBuf::from(format!("{}_asg_mode", p.cfg.datastore));
        let hint = match std::fs::read_to_string(&mode_file)
            .as_deref()
            .map(str::trim)
        {
            Ok("static") => Some(AsgMode::Static),
            Ok("dynamic") => Some(AsgMode::Dynamic),
            _ => None,
        };
        let mode = handover::wire(&p.ipt, &agent, &p.store, input, hint)?;
        if hint != Some(mode) {
            let text: &[u8] = match mode {
                AsgMode::Static => b"static\n",
                AsgMode::Dynamic => b"dynamic\n",
            };
            let _ = silk_dataplane::atomicfile::write_atomic(&mode_file, text, 0o600);
        }
        Ok(())
    }
}

impl CniPlugin for Wrapper {
    fn name(&self) -> &str {
        "silk-cni-wrapper-plugin"
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let p = prepare(args)?;
        // Validate, then act: everything that can be rejected is rejected before the delegate.
        let underlay_ifs = host::underlay_interfaces(
            &p.cfg.temporary_underlay_interface_names,
            &p.cfg.underlay_ips,
        )
        .map_err(err)?;
        if let Some(bad) = p
            .cfg
            .runtime_config
            .port_mappings
            .iter()
            .find(|m| m.host_port <= 0)
        {
            return Err(err(format!("cannot allocate port {}", bad.host_port)));
        }
        asg::convert(&p.cfg.runtime_config.net_out_rules, asg::Family::V4, false).map_err(err)?;
        let masq_exclude = match options::no_masq_range(&p.cfg).map_err(err)? {
            Some(r) => Some(r),
            None => match p.cfg.daemon_port() {
                Some(port) => Some(
                    host::daemon_lease(port)
                        .map_err(|e| err(format!("error setting up default ip masq rule: {e}")))?,
                ),
                None => None,
            },
        };

        let mut result = delegate::add(p.cfg.delegate_type(), args, &p.cfg.delegate_bytes())
            .map_err(|e| {
                let details = if e.details.is_empty() {
                    String::new()
                } else {
                    format!("; {}", e.details)
                };
                err(format!("delegate call: {}{details}", e.msg))
            })?;
        let Some(ip) = result.first_ipv4() else {
            let _ = delegate::del(p.cfg.delegate_type(), args, &p.cfg.delegate_bytes());
            return Err(err("delegate call: result has no IPv4 address"));
        };
        let c4 = Container {
            handle: args.container_id.clone(),
            ip: IpAddr::V4(ip),
            underlay_ifs,
            port_mappings: p.cfg.runtime_config.port_mappings.clone(),
            workload: p.cfg.workload(),
            masq_exclude,
        };
        if let Err(e) = self.add_after_delegate(&p, &c4, &result) {
            // Roll back what this ADD created; report the original error.
            let _ = remove_rules(&p.ipt, Family::V4, &args.container_id, Some(c4.ip));
            if let Some(v6) = result.first_ipv6() {
                let _ = remove_rules(&p.ipt, Family::V6, &args.container_id, Some(IpAddr::V6(v6)));
            }
            let _ = p.store.delete(&args.container_id);
            let _ = delegate::del(p.cfg.delegate_type(), args, &p.cfg.delegate_bytes());
            log(
                "add-rolled-back",
                serde_json::json!({"container_id": args.container_id, "error": e.to_string()}),
            );
            return Err(e);
        }
        result.dns.nameservers = p.cfg.dns_servers.clone();
        log(
            "add",
            serde_json::json!({"container_id": args.container_id, "ip": ip.to_string()}),
        );
        Ok(result)
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let started = Instant::now();
        let p = prepare(args)?;
        let mut problems = Vec::new();
        let entry = match p.store.delete(&args.container_id) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("store delete: {e}"));
                None
            }
        };
        // The rules go in a thread beside the delegate's DEL: the kernel's veth teardown and
        // iptables-restore each take milliseconds and touch nothing the other reads, so the
        // DEL costs the longer of the two rather than their sum (the delete of a veth waits
        // for the kernel's netdev unregistration). Rule removal starts before the delegate
        // releases the IP, where upstream removed rules only after it.
        let ((delegate_result, delegate_ms), rules) = std::thread::scope(|s| {
            let rules = s.spawn(|| {
                let t = Instant::now();
                (remove_all_rules(&p, args, entry.as_ref()), millis(t))
            });
            let t = Instant::now();
            let d = delegate::del(p.cfg.delegate_type(), args, &p.cfg.delegate_bytes());
            ((d, millis(t)), rules.join())
        });
        if let Err(e) = delegate_result {
            problems.push(format!("delegate delete: {e}"));
        }
        let rules_ms = match rules {
            Ok((found, ms)) => {
                problems.extend(found);
                ms
            }
            Err(_) => {
                problems.push("rule removal panicked".to_string());
                0.0
            }
        };
        for msg in &problems {
            eprintln!("{msg}");
        }
        let t = Instant::now();
        let r = vpa_get(
            &p.cfg.policy_agent_force_poll_address,
            &format!(
                "/force-orphaned-asgs-cleanup?container={}",
                args.container_id
            ),
        );
        log(
            "del",
            serde_json::json!({
                "container_id": args.container_id,
                "problems": problems,
                "delegate_ms": delegate_ms,
                "rules_ms": rules_ms,
                "asg_cleanup_ms": millis(t),
                "total_ms": millis(started),
            }),
        );
        let r = r?;
        if r.status != 200 && r.status != 405 {
            return Err(err(format!(
                "asg cleanup returned {} with message: {}",
                r.status, r.body
            )));
        }
        Ok(())
    }

    /// GC: the delegate's GC first (addresses, veths, silk store), then the metadata store and
    /// the chains of every container the runtime no longer lists, then vxlan-policy-agent's
    /// orphaned ASG cleanup for each of them. Goes on after failures and reports them all.
    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        let p = prepare(args)?;
        let valid = gc::valid_attachments(args)?;
        let mut problems = Vec::new();
        let mut delegate_conf = p.cfg.delegate.clone().unwrap_or_default();
        delegate_conf.insert(
            gc::VALID_ATTACHMENTS.into(),
            args.config[gc::VALID_ATTACHMENTS].clone(),
        );
        delegate_conf.insert("cniVersion".into(), Value::String(args.cni_version.clone()));
        let bytes = serde_json::to_vec(&delegate_conf).map_err(err)?;
        if let Err(e) = delegate::exec(p.cfg.delegate_type(), "GC", args, &bytes) {
            problems.push(format!("delegate GC: {e}"));
        }
        let live: Vec<String> = valid.iter().map(|a| a.container_id.clone()).collect();
        let dropped = p
            .store
            .retain(|h| live.iter().any(|l| l == h))
            .unwrap_or_else(|e| {
                problems.push(format!("store: {e}"));
                vec![]
            });
        let keep = netrules::chains_of(&live);
        let mut families = vec![Family::V4];
        if p.cfg.enable_ipv6 {
            families.push(Family::V6);
        }
        let mut chains_removed = 0;
        for family in families {
            match sweep_rules(&p.ipt, family, netrules::CONTAINER_CHAIN_PREFIXES, &keep) {
                Ok(n) => chains_removed += n,
                Err(e) => problems.push(e.msg),
            }
        }
        for c in &dropped {
            let path = format!("/force-orphaned-asgs-cleanup?container={}", c.handle);
            match vpa_get(&p.cfg.policy_agent_force_poll_address, &path) {
                Ok(r) if r.status == 200 || r.status == 405 => {}
                Ok(r) => problems.push(format!(
                    "asg cleanup of {}: {} {}",
                    c.handle, r.status, r.body
                )),
                Err(e) => problems.push(format!("asg cleanup of {}: {}", c.handle, e.msg)),
            }
        }
        log(
            "gc",
            serde_json::json!({
                "store_entries_dropped": dropped.iter().map(|c| c.handle.clone()).collect::<Vec<_>>(),
                "chains_removed": chains_removed,
                "problems": problems,
            }),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                silk_cni_skel::ErrorCode::IoFailure,
                "GC left something behind",
                problems.join("; "),
            ))
        }
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let p = prepare(args)?;
        delegate::exec(
            p.cfg.delegate_type(),
            "CHECK",
            args,
            &p.cfg.delegate_bytes(),
        )?;
        let saved = p
            .ipt
            .save(Family::V4, Some(silk_dataplane::iptables::Table::Filter))
            .map_err(err)?;
        let chains = netrules::FilterChains::for_handle(&args.container_id);
        for c in [&chains.input, &chains.netout, &chains.overlay] {
            if !silk_dataplane::iptables::SavedTable::parse(
                &saved,
                silk_dataplane::iptables::Table::Filter,
            )
            .has_chain(c.as_str())
            {
                return Err(err(format!("CHECK: chain {c} is missing")));
            }
        }
        Ok(())
    }
}
