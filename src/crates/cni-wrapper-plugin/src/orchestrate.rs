//! Gathers an ADD's or DEL's inputs through the injected [`Ports`], plans with [`crate::plan`]
//! and applies the steps: one iptables-restore per family and command, a failed ADD undone
//! (rules, store entry, delegate) before its error is returned, a DEL that goes on past
//! failures and reports them together.

use std::net::IpAddr;
use std::time::Instant;

use silk_cni_skel::{CniError, CniResult};
use silk_dataplane::iptables::{Family, Iptables};

use crate::netrules;
use crate::plan::{self, AddRequest, AddStep, AsgMode, ASG_MODE_PROBE};
use crate::ports::{ContainerStore, Delegate, PolicyAgent};

fn err(e: impl std::fmt::Display) -> CniError {
    CniError::internal(e.to_string())
}

/// Milliseconds since `t`, for the phase timings DEL logs.
fn millis(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e4).round() / 10.0
}

/// The side effects of one command.
#[derive(Clone, Copy)]
pub struct Ports<'a> {
    pub ipt: &'a dyn Iptables,
    pub delegate: &'a dyn Delegate,
    pub agent: &'a dyn PolicyAgent,
    pub store: &'a dyn ContainerStore,
}

/// A successful ADD.
#[derive(Debug)]
pub struct Added {
    pub result: CniResult,
    pub mode: AsgMode,
    /// Static rules that cannot be expressed (upstream prints them to stderr).
    pub dropped: Vec<String>,
}

/// A failed ADD: the error garden gets and whether anything had to be undone.
#[derive(Debug)]
pub struct AddFailure {
    pub error: CniError,
    /// `true` when the delegate had run, so the ADD was rolled back.
    pub rolled_back: bool,
    /// What the rollback could not undo (nothing, as a rule).
    pub rollback_problems: Vec<String>,
}

impl From<CniError> for AddFailure {
    fn from(error: CniError) -> Self {
        AddFailure {
            error,
            rolled_back: false,
            rollback_problems: Vec::new(),
        }
    }
}

/// Removes every rule and chain of `handle` in one family: save and at most one restore under
/// one lock hold, planned from what the save shows ([`netrules::plan_del`]).
pub fn remove_rules(
    ipt: &dyn Iptables,
    family: Family,
    handle: &str,
    ip: Option<IpAddr>,
) -> Result<(), CniError> {
    let _lock = ipt.lock().map_err(err)?;
    remove_saved(ipt, family, handle, ip)
}

/// [`remove_rules`] with the lock held by the caller.
fn remove_saved(
    ipt: &dyn Iptables,
    family: Family,
    handle: &str,
    ip: Option<IpAddr>,
) -> Result<(), CniError> {
    let saved = ipt.save(family, None).map_err(err)?;
    let plan = netrules::plan_del(handle, ip, &saved);
    if plan.is_empty() {
        return Ok(());
    }
    ipt.restore(family, &plan.render())
        .map_err(|e| err(format!("net out cleanup: {e}")))
}

/// The ADD. The delegate runs only when the store shows no clashing live container; the
/// agent is asked for its ASG mode while the delegate runs (the question has no side effect
/// and costs a round trip), and an agent that cannot say undoes the delegate's ADD.
pub fn add(ports: Ports<'_>, req: &AddRequest) -> Result<Added, AddFailure> {
    let entries = ports
        .store
        .read_all()
        .map_err(|e| err(format!("store add: {e}")))?;
    if let Some(c) = plan::find_clash(&req.handle, &req.opts, &entries) {
        return Err(plan::clash_error(c.message()).into());
    }
    let (probe, delegated) = std::thread::scope(|s| {
        let probe = s.spawn(|| ports.agent.get(ASG_MODE_PROBE));
        let d = ports.delegate.add();
        (probe.join(), d)
    });
    let result = delegated.map_err(|e| {
        let details = if e.details.is_empty() {
            String::new()
        } else {
            format!("; {}", e.details)
        };
        err(format!("delegate call: {}{details}", e.msg))
    })?;
    let mut done = Done::default();
    let outcome = probe
        .unwrap_or_else(|_| Err(err("asg mode query panicked")))
        .and_then(|a| plan::mode_from_probe(&a))
        .and_then(|mode| {
            let p = plan::plan_add(req, mode, &result)?;
            apply_add(ports, req, &p.steps, &mut done)?;
            Ok((mode, p))
        });
    match outcome {
        Ok((mode, p)) => Ok(Added {
            result: p.result,
            mode,
            dropped: p.dropped,
        }),
        Err(error) => Err(AddFailure {
            error,
            rolled_back: true,
            rollback_problems: rollback(ports, &req.handle, &result, &done),
        }),
    }
}

/// What an ADD changed so far, for its rollback.
#[derive(Debug, Default)]
struct Done {
    store: bool,
    families: Vec<Family>,
}

fn apply_add(
    ports: Ports<'_>,
    req: &AddRequest,
    steps: &[AddStep],
    done: &mut Done,
) -> Result<(), CniError> {
    for step in steps {
        match step {
            AddStep::StoreAdd(entry) => {
                let refuse = |e: &silk_dataplane::datastore::Entries| {
                    plan::find_clash(&req.handle, &req.opts, e).map(|c| c.message())
                };
                match ports.store.add_unless(entry, &refuse) {
                    Ok(Ok(())) => done.store = true,
                    Ok(Err(clash)) => return Err(plan::clash_error(clash)),
                    Err(e) => return Err(err(format!("store add: {e}"))),
                }
            }
            AddStep::Restore { family, payload } => {
                // Counted before the attempt: a failed restore may have committed some tables
                // (iptables-nft commits each on its own).
                done.families.push(*family);
                let _lock = ports.ipt.lock().map_err(err)?;
                ports
                    .ipt
                    .restore(*family, payload)
                    .map_err(|e| err(format!("bulk insert: {e}")))?;
            }
            AddStep::Agent { path, expect } => {
                plan::check_answer(*expect, &ports.agent.get(path)?)?;
            }
        }
    }
    Ok(())
}

/// Undoes a failed ADD after the delegate ran: the rules (read back, so whatever the agent
/// added goes too), the store entry, the delegate's ADD. Returns what failed.
fn rollback(ports: Ports<'_>, handle: &str, result: &CniResult, done: &Done) -> Vec<String> {
    let mut problems = Vec::new();
    for family in &done.families {
        let ip = match family {
            Family::V4 => result.first_ipv4().map(IpAddr::V4),
            Family::V6 => result.first_ipv6().map(IpAddr::V6),
        };
        if let Err(e) = remove_rules(ports.ipt, *family, handle, ip) {
            problems.push(e.msg);
        }
    }
    if done.store {
        if let Err(e) = ports.store.delete(handle) {
            problems.push(format!("store delete: {e}"));
        }
    }
    if let Err(e) = ports.delegate.del() {
        problems.push(format!("delegate delete: {e}"));
    }
    problems
}

/// What a DEL did, for its log line.
#[derive(Debug, Default)]
pub struct Deleted {
    /// Failures DEL went on after (printed to stderr, as upstream's).
    pub problems: Vec<String>,
    pub delegate_ms: f64,
    pub rules_ms: f64,
    pub asg_cleanup_ms: f64,
}

/// One family of a DEL under one lock hold: the expected payload when there is one; when
/// there is none, or the tables differ from it (its commit then fails and changes nothing),
/// the removal planned from what the tables show.
fn remove_family(ipt: &dyn Iptables, handle: &str, f: &plan::FamilyDel) -> Result<(), CniError> {
    let _lock = ipt.lock().map_err(err)?;
    if let Some(p) = &f.expected {
        if ipt.restore(f.family, p).is_ok() {
            return Ok(());
        }
    }
    remove_saved(ipt, f.family, handle, f.ip)
}

/// The DEL: the store entry, then the rules (one restore per family as a rule) beside the
/// delegate's DEL, then the agent's ASG cleanup. Only the cleanup's failure fails the DEL
/// (cni.md §4.3 step 9); the rest is reported in [`Deleted::problems`]. `facts` gives the host
/// facts of the current config, which let the DEL rebuild what the ADD wrote; it is asked in
/// the rules' thread, beside the delegate (it lists interfaces, maybe asks silk-daemon).
pub fn del(
    ports: Ports<'_>,
    handle: &str,
    prev: Option<&CniResult>,
    enable_ipv6: bool,
    facts: &(dyn Fn() -> Option<plan::DelFacts> + Sync),
) -> (Deleted, Result<(), CniError>) {
    let mut out = Deleted::default();
    let entry = match ports.store.delete(handle) {
        Ok(e) => e,
        Err(e) => {
            out.problems.push(format!("store delete: {e}"));
            None
        }
    };
    // The rules go in a thread beside the delegate's DEL: the kernel's veth teardown and
    // iptables-restore each take milliseconds and touch nothing the other reads, so the DEL
    // costs the longer of the two rather than their sum. Rule removal starts before the
    // delegate releases the IP, where upstream removed rules only after it.
    let ((delegate_result, delegate_ms), rules) = std::thread::scope(|s| {
        let rules = s.spawn(|| {
            let t = Instant::now();
            let facts = facts();
            let plan = plan::plan_del(handle, entry.as_ref(), prev, enable_ipv6, facts.as_ref());
            let problems: Vec<String> = plan
                .families
                .iter()
                .filter_map(|f| remove_family(ports.ipt, handle, f).err())
                .map(|e| e.msg)
                .collect();
            (problems, millis(t))
        });
        let t = Instant::now();
        let d = ports.delegate.del();
        ((d, millis(t)), rules.join())
    });
    out.delegate_ms = delegate_ms;
    if let Err(e) = delegate_result {
        out.problems.push(format!("delegate delete: {e}"));
    }
    match rules {
        Ok((found, ms)) => {
            out.problems.extend(found);
            out.rules_ms = ms;
        }
        Err(_) => out.problems.push("rule removal panicked".to_string()),
    }
    let t = Instant::now();
    let cleanup = ports
        .agent
        .get(&plan::cleanup_path(handle))
        .and_then(|a| plan::check_cleanup(&a));
    out.asg_cleanup_ms = millis(t);
    (out, cleanup)
}

#[cfg(test)]
#[path = "orchestrate_tests.rs"]
mod tests;
