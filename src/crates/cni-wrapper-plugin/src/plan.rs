//! The whole ADD and DEL as plain data (cni.md §4.2-4.3, with the fixes of §7), planned without
//! I/O: what vxlan-policy-agent's mode means, whether the handle's chain names already belong to
//! another live container, and the steps an ADD takes once the delegate answered; the DEL's
//! families and addresses. [`crate::orchestrate`] gathers the inputs and applies the steps.
//!
//! The ADD, in order (every step after the delegate is undone when a later one fails):
//! 1. before anything changes: the store read for a chain-name clash;
//! 2. the delegate's ADD (interface, address), while the agent is asked for its ASG mode
//!    (`GET /force-asgs-for-container` without a container: 405 when ASG syncing is disabled,
//!    400 `no container specified` when enabled, both without side effects);
//! 3. the store entry, refused under the store lock when a clashing handle got there first;
//! 4. ONE `iptables-restore` per family writing every chain, `netout--…` with the static rules
//!    in static mode, closed (default tail) in dynamic mode;
//! 5. `/force-policy-poll-cycle` (c2c rules for the new IP), must answer 200;
//! 6. `/force-asgs-for-container?container=<h>`: 200 (dynamic, the agent puts its `asg-…` jump
//!    first in `netout--…`) or 405 (static) as the mode asked in 1 said; anything else, or the
//!    other mode (the agent was reconfigured meanwhile), fails the ADD.

use std::net::{IpAddr, Ipv6Addr};

use serde_json::Value;
use silk_cni_skel::{CniError, CniResult, ErrorCode};
use silk_dataplane::datastore::{Container as StoreEntry, Entries};
use silk_dataplane::iptables::{ChainName, Family};

use crate::config::PortMapping;
use crate::netrules::{self, asg, Container, FilterChains, RuleOptions};
use crate::ports::{self, AgentAnswer};

/// The agent's mode query: its ASG endpoint without a container.
pub const ASG_MODE_PROBE: &str = "/force-asgs-for-container";
pub const POLICY_POLL: &str = "/force-policy-poll-cycle";

fn err(e: impl std::fmt::Display) -> CniError {
    CniError::internal(e.to_string())
}

/// Who writes the container's ASG rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsgMode {
    /// The wrapper, from Garden's `netOutRules` (the agent answers 405).
    Static,
    /// vxlan-policy-agent, in its `asg-…` chain (the agent answers 200).
    Dynamic,
}

impl AsgMode {
    fn status(self) -> u16 {
        match self {
            AsgMode::Static => 405,
            AsgMode::Dynamic => 200,
        }
    }
}

fn asg_sync_error(a: &AgentAnswer) -> CniError {
    err(format!(
        "asg sync returned {} with message: {}",
        a.status, a.body
    ))
}

/// The mode the agent's answer to [`ASG_MODE_PROBE`] means: 405 static; 400 (`no container
/// specified`, the agent syncs ASGs) or 200 dynamic; anything else is the agent failing.
pub fn mode_from_probe(a: &AgentAnswer) -> Result<AsgMode, CniError> {
    match a.status {
        405 => Ok(AsgMode::Static),
        200 | 400 => Ok(AsgMode::Dynamic),
        _ => Err(asg_sync_error(a)),
    }
}

// === Clash ===

/// An ADD whose chain names already belong to another live container (a handle in the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    pub handle: String,
    pub other: String,
    /// The shared chain names, in [`owned_chains`] order.
    pub chains: Vec<String>,
}

impl Clash {
    pub fn message(&self) -> String {
        format!(
            "chain name clash: container {} maps to chain {} of live container {}",
            self.handle,
            self.chains.join(", "),
            self.other
        )
    }
}

/// The error of a refused ADD: nothing of either container was changed.
pub fn clash_error(message: String) -> CniError {
    CniError::new(
        ErrorCode::Internal,
        message,
        "iptables chain names keep only the first 12 to 21 characters of a handle (cni.md 4.4); \
         the other container's chains are left as they are",
    )
}

/// The chain names an ADD of `handle` writes, every table (`--rl-log` only when configured).
pub fn owned_chains(handle: &str, opts: &RuleOptions) -> Vec<String> {
    let f = FilterChains::for_handle(handle);
    let mut v = vec![
        ChainName::netin(handle),
        f.input,
        f.netout,
        f.overlay,
        f.log,
    ];
    if opts.outbound.has_rl_log_chain() {
        v.push(f.rl_log);
    }
    v.into_iter().map(|c| c.as_str().to_string()).collect()
}

/// The first live container (by handle order) of `entries`, other than `handle` itself, that
/// owns one of `handle`'s chain names. The metadata store is what says a container is live:
/// an entry is written before the chains and removed first at DEL, as upstream does; chains
/// with no entry are leftovers a new ADD may flush and reuse (silk-release PR #173).
pub fn find_clash(handle: &str, opts: &RuleOptions, entries: &Entries) -> Option<Clash> {
    let mine = owned_chains(handle, opts);
    entries
        .keys()
        .filter(|other| other.as_str() != handle)
        .find_map(|other| {
            let theirs = owned_chains(other, opts);
            let shared: Vec<String> = mine
                .iter()
                .filter(|c| theirs.contains(c))
                .cloned()
                .collect();
            (!shared.is_empty()).then(|| Clash {
                handle: handle.to_string(),
                other: other.clone(),
                chains: shared,
            })
        })
}

// === ADD ===

/// Everything an ADD needs besides the delegate's result, validated before the delegate runs.
#[derive(Debug, Clone)]
pub struct AddRequest {
    pub handle: String,
    pub opts: RuleOptions,
    pub underlay_ifs: Vec<String>,
    pub port_mappings: Vec<PortMapping>,
    pub workload: String,
    /// The `! -d` exclusion of the MASQUERADE rule.
    pub masq_exclude: Option<String>,
    pub net_out_rules: Vec<asg::NetOutRule>,
    /// The garden metadata for the store (`Value::Null` when there is none).
    pub metadata: Value,
    pub enable_ipv6: bool,
    /// The result's `dns.nameservers` (all of them, cni.md §4.2 step 13).
    pub dns_servers: Vec<String>,
}

/// What an agent answer must be for the ADD to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `/force-policy-poll-cycle`: 200.
    PolicyPoll,
    /// `/force-asgs-for-container?container=…`: the mode asked before the delegate ran.
    Mode(AsgMode),
}

#[derive(Debug, Clone, PartialEq)]
pub enum AddStep {
    /// The metadata store entry, refused when a clashing handle is live.
    StoreAdd(StoreEntry),
    /// One `iptables-restore --noflush` (or ip6tables-restore) under the lock.
    Restore {
        family: Family,
        payload: String,
    },
    Agent {
        path: String,
        expect: Expect,
    },
}

/// The ADD after the delegate: its steps in order, and what to print or return.
#[derive(Debug, Clone)]
pub struct AddPlan {
    pub steps: Vec<AddStep>,
    /// The result garden gets (the delegate's, with the configured DNS servers).
    pub result: CniResult,
    /// Static rules that cannot be expressed, printed to stderr as upstream does.
    pub dropped: Vec<String>,
}

/// Plans the ADD from the delegate's `result` and the agent's `mode`.
pub fn plan_add(req: &AddRequest, mode: AsgMode, result: &CniResult) -> Result<AddPlan, CniError> {
    let ip = result
        .first_ipv4()
        .ok_or_else(|| err("delegate call: result has no IPv4 address"))?;
    let ipv6: Option<Ipv6Addr> = result.first_ipv6().filter(|_| req.enable_ipv6);
    let c4 = Container {
        handle: req.handle.clone(),
        ip: IpAddr::V4(ip),
        underlay_ifs: req.underlay_ifs.clone(),
        port_mappings: req.port_mappings.clone(),
        workload: req.workload.clone(),
        masq_exclude: req.masq_exclude.clone(),
    };
    let logging = req.opts.asg_logging;
    let (statics4, dropped) = match mode {
        AsgMode::Static => {
            let c = asg::convert(&req.net_out_rules, asg::Family::V4, logging).map_err(err)?;
            (Some(c.rules), c.dropped)
        }
        AsgMode::Dynamic => (None, Vec::new()),
    };
    let v4 = netrules::plan_add(&req.opts, &c4, statics4.as_deref()).map_err(err)?;
    let mut steps = vec![
        AddStep::StoreAdd(ports::store_entry(
            &req.handle,
            &ip.to_string(),
            ipv6.map(|a| a.to_string()).as_deref(),
            req.metadata.clone(),
        )),
        AddStep::Restore {
            family: Family::V4,
            payload: v4.render(),
        },
    ];
    if let Some(ip6) = ipv6 {
        let c6 = Container {
            ip: IpAddr::V6(ip6),
            ..c4.clone()
        };
        let statics6 = match mode {
            AsgMode::Static => Some(
                asg::convert(&req.net_out_rules, asg::Family::V6, logging)
                    .map_err(err)?
                    .rules,
            ),
            AsgMode::Dynamic => None,
        };
        steps.push(AddStep::Restore {
            family: Family::V6,
            payload: netrules::plan_add_v6(&req.opts, &c6, statics6.as_deref()).render(),
        });
    }
    steps.push(AddStep::Agent {
        path: POLICY_POLL.into(),
        expect: Expect::PolicyPoll,
    });
    steps.push(AddStep::Agent {
        path: format!("{ASG_MODE_PROBE}?container={}", req.handle),
        expect: Expect::Mode(mode),
    });
    let mut result = result.clone();
    result.dns.nameservers = req.dns_servers.clone();
    Ok(AddPlan {
        steps,
        result,
        dropped,
    })
}

/// Whether the ADD goes on after `answer` to a call expecting `expect`.
pub fn check_answer(expect: Expect, a: &AgentAnswer) -> Result<(), CniError> {
    match expect {
        Expect::PolicyPoll if a.status == 200 => Ok(()),
        Expect::PolicyPoll => Err(err(format!(
            "vpa response code: {} with message: {}",
            a.status, a.body
        ))),
        Expect::Mode(m) if a.status == m.status() => Ok(()),
        Expect::Mode(m) if a.status == 200 || a.status == 405 => Err(err(format!(
            "asg sync returned {} with message: {}: vxlan-policy-agent changed its ASG mode \
             during the ADD (it was {})",
            a.status,
            a.body,
            match m {
                AsgMode::Static => "static",
                AsgMode::Dynamic => "dynamic",
            }
        ))),
        Expect::Mode(_) => Err(asg_sync_error(a)),
    }
}

// === DEL ===

/// What a DEL knows of the container's rules without reading the tables: the host facts its
/// ADD used, from the current config (absent when they cannot be had now).
#[derive(Debug, Clone)]
pub struct DelFacts {
    pub opts: RuleOptions,
    pub underlay_ifs: Vec<String>,
    /// The `! -d` exclusion of the MASQUERADE rule.
    pub masq_exclude: Option<String>,
}

/// One family's rule removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyDel {
    pub family: Family,
    /// The container's address when known (the MASQUERADE rule is found by it; `None` lets
    /// [`netrules::plan_del`] read it from the `INPUT` jump).
    pub ip: Option<IpAddr>,
    /// The payload removing exactly what the ADD wrote ([`netrules::plan_del_expected`]), when
    /// the address and the host facts are known. On nf_tables a read of the tables costs as
    /// much as a restore (each dumps the whole ruleset), so the DEL writes this without reading
    /// first; when the tables differ, its table commit fails and changes nothing, and only then
    /// are the tables read and the rest removed from what they show ([`netrules::plan_del`]).
    pub expected: Option<String>,
}

/// The DEL's rule removal per family and the agent's ASG cleanup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelPlan {
    pub families: Vec<FamilyDel>,
    pub cleanup_path: String,
}

/// The addresses come from the store entry, else from the cached ADD result. IPv6 chains are
/// looked for when the container had an IPv6 address or the cell has IPv6 on.
pub fn plan_del(
    handle: &str,
    entry: Option<&StoreEntry>,
    prev: Option<&CniResult>,
    enable_ipv6: bool,
    facts: Option<&DelFacts>,
) -> DelPlan {
    let ip4 = entry
        .and_then(|e| e.ip.parse().ok())
        .or_else(|| prev.and_then(|r| r.first_ipv4()).map(IpAddr::V4));
    let ip6 = entry
        .and_then(|e| e.ipv6.as_deref())
        .and_then(|s| s.parse().ok())
        .or_else(|| prev.and_then(|r| r.first_ipv6()).map(IpAddr::V6));
    let family = |family: Family, ip: Option<IpAddr>| FamilyDel {
        family,
        ip,
        expected: ip.zip(facts).map(|(ip, f)| {
            let c = Container {
                handle: handle.to_string(),
                ip,
                underlay_ifs: f.underlay_ifs.clone(),
                port_mappings: Vec::new(),
                workload: String::new(),
                masq_exclude: f.masq_exclude.clone(),
            };
            netrules::plan_del_expected(&f.opts, &c).render()
        }),
    };
    let mut families = vec![family(Family::V4, ip4)];
    if ip6.is_some() || enable_ipv6 {
        families.push(family(Family::V6, ip6));
    }
    DelPlan {
        families,
        cleanup_path: cleanup_path(handle),
    }
}

/// The agent's orphaned-ASG cleanup of `handle`.
pub fn cleanup_path(handle: &str) -> String {
    format!("/force-orphaned-asgs-cleanup?container={handle}")
}

/// Whether the agent's answer to the DEL's ASG cleanup lets the DEL succeed (200, or 405 when
/// it does not sync ASGs).
pub fn check_cleanup(a: &AgentAnswer) -> Result<(), CniError> {
    if a.status == 200 || a.status == 405 {
        Ok(())
    } else {
        Err(err(format!(
            "asg cleanup returned {} with message: {}",
            a.status, a.body
        )))
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
pub(crate) mod tests;
