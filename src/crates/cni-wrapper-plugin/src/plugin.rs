//! The wrapper's CNI commands (cni.md §4.2-4.3, with the fixes of §7): config and host facts
//! checked before the delegate runs, then [`crate::orchestrate`] with the real ports (the
//! delegate binary, vxlan-policy-agent over HTTP, the metadata store, iptables under the shared
//! lock). GC and CHECK are here too.

use std::time::{Duration, Instant};

use serde_json::Value;
use silk_cni_skel::{delegate, gc, CmdArgs, CniError, CniPlugin, CniResult};
use silk_dataplane::datastore::MetadataStore;
use silk_dataplane::iptables::{Family, Iptables, SystemIptables};

use crate::config::WrapperConfig;
use crate::host;
use crate::netrules::{self, asg, options, RuleOptions};
use crate::orchestrate::{self, Ports};
use crate::plan::{AddRequest, DelFacts};
use crate::ports::{ExecDelegate, HttpAgent, PolicyAgent};

pub use crate::orchestrate::remove_rules;

pub const LOG_FILE: &str = "/var/vcap/sys/log/silk-cni/cni-wrapper-plugin.stdout.log";
const SOURCE: &str = "cfnetworking.cni-wrapper-plugin";
/// vxlan-policy-agent calls are bounded (upstream's had no timeout, cni.md §7).
const VPA_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Wrapper;

fn err(e: impl std::fmt::Display) -> CniError {
    CniError::internal(e.to_string())
}

/// Milliseconds since `t`.
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

impl Prepared {
    /// Runs `f` with the real ports: iptables under the shared lock, the delegate binary,
    /// vxlan-policy-agent over HTTP, the metadata store.
    fn with_ports<T>(&self, args: &CmdArgs, f: impl FnOnce(Ports<'_>) -> T) -> T {
        let agent = HttpAgent {
            addr: &self.cfg.policy_agent_force_poll_address,
            timeout: VPA_TIMEOUT,
        };
        let delegate = ExecDelegate {
            plugin_type: self.cfg.delegate_type(),
            args,
            stdin: self.cfg.delegate_bytes(),
        };
        f(Ports {
            ipt: &self.ipt,
            delegate: &delegate,
            agent: &agent,
            store: &self.store,
        })
    }

    /// The host facts a DEL needs to rebuild what the ADD wrote; `None` when one cannot be
    /// had (the DEL then reads the tables).
    fn del_facts(&self) -> Option<DelFacts> {
        let cfg = &self.cfg;
        let underlay_ifs =
            host::underlay_interfaces(&cfg.temporary_underlay_interface_names, &cfg.underlay_ips)
                .ok()?;
        let masq_exclude = match options::no_masq_range(cfg).ok()? {
            Some(r) => Some(r),
            None => match cfg.daemon_port() {
                Some(port) => Some(host::daemon_lease_once(port).ok()?),
                None => None,
            },
        };
        Some(DelFacts {
            opts: self.opts.clone(),
            underlay_ifs,
            masq_exclude,
        })
    }

    /// Validate, then act: everything that can be rejected is rejected before the delegate.
    fn add_request(&self, args: &CmdArgs) -> Result<AddRequest, CniError> {
        let cfg = &self.cfg;
        let underlay_ifs =
            host::underlay_interfaces(&cfg.temporary_underlay_interface_names, &cfg.underlay_ips)
                .map_err(err)?;
        if let Some(bad) = cfg
            .runtime_config
            .port_mappings
            .iter()
            .find(|m| m.host_port <= 0)
        {
            return Err(err(format!("cannot allocate port {}", bad.host_port)));
        }
        asg::convert(&cfg.runtime_config.net_out_rules, asg::Family::V4, false).map_err(err)?;
        let masq_exclude = match options::no_masq_range(cfg).map_err(err)? {
            Some(r) => Some(r),
            None => match cfg.daemon_port() {
                Some(port) => Some(
                    host::daemon_lease(port)
                        .map_err(|e| err(format!("error setting up default ip masq rule: {e}")))?,
                ),
                None => None,
            },
        };
        Ok(AddRequest {
            handle: args.container_id.clone(),
            opts: self.opts.clone(),
            underlay_ifs,
            port_mappings: cfg.runtime_config.port_mappings.clone(),
            workload: cfg.workload(),
            masq_exclude,
            net_out_rules: cfg.runtime_config.net_out_rules.clone(),
            metadata: if cfg.metadata.is_empty() {
                Value::Null
            } else {
                Value::Object(cfg.metadata.clone().into_iter().collect())
            },
            enable_ipv6: cfg.enable_ipv6,
            dns_servers: cfg.dns_servers.clone(),
        })
    }
}

/// One GET to vxlan-policy-agent.
fn vpa_get(addr: &str, path: &str) -> Result<crate::ports::AgentAnswer, CniError> {
    HttpAgent {
        addr,
        timeout: VPA_TIMEOUT,
    }
    .get(path)
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

impl CniPlugin for Wrapper {
    fn name(&self) -> &str {
        "silk-cni-wrapper-plugin"
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let p = prepare(args)?;
        let req = p.add_request(args)?;
        match p.with_ports(args, |ports| orchestrate::add(ports, &req)) {
            Ok(added) => {
                for d in &added.dropped {
                    eprintln!("{d}");
                }
                let ip = added.result.first_ipv4().map(|ip| ip.to_string());
                log(
                    "add",
                    serde_json::json!({"container_id": args.container_id, "ip": ip}),
                );
                Ok(added.result)
            }
            Err(f) => {
                if f.rolled_back {
                    log(
                        "add-rolled-back",
                        serde_json::json!({
                            "container_id": args.container_id,
                            "error": f.error.to_string(),
                            "rollback_problems": f.rollback_problems,
                        }),
                    );
                }
                Err(f.error)
            }
        }
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let started = Instant::now();
        let p = prepare(args)?;
        let (done, result) = p.with_ports(args, |ports| {
            orchestrate::del(
                ports,
                &args.container_id,
                args.prev_result.as_ref(),
                p.cfg.enable_ipv6,
                &|| p.del_facts(),
            )
        });
        for msg in &done.problems {
            eprintln!("{msg}");
        }
        log(
            "del",
            serde_json::json!({
                "container_id": args.container_id,
                "problems": done.problems,
                "delegate_ms": done.delegate_ms,
                "rules_ms": done.rules_ms,
                "asg_cleanup_ms": done.asg_cleanup_ms,
                "total_ms": millis(started),
            }),
        );
        result
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
