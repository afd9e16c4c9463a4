//! The ASG planner (policy contract §3.7.2, §3.7.5, §3.7.6): from the security groups, the
//! local containers and the saved filter table of one family, the one `iptables-restore
//! --noflush` payload that makes every container's `asg-<handle>` chain and its `netout--`
//! parent what they should be, and removes the chains of containers that are gone. Pure:
//! [`plan_asgs`] is what the agent and the benchmark call.
//!
//! Per container (a `policy_group_id` and a non-empty `space_id`, netout chain present):
//!
//! ```text
//! asg-<h>:    [allow-overlay rule, disable_container_network_policy, IPv4]
//!             the shared egress list (silk_dataplane::iptables::egress)
//! netout--<h>: -j asg-<h>
//!              -j REJECT --reject-with icmp(6)-port-unreachable
//! ```
//!
//! Only what differs from the saved table is written: a chain whose rules already read as
//! planned is not touched, so a cycle without changes writes nothing and a change to one
//! container's groups rewrites that container's chain only. A chain is rewritten by declaring
//! it (which flushes it) and appending its rules in the same commit, so packets see the old
//! rules or the new ones, never an empty chain. Comparing with the saved table, not with what
//! this process wrote, brings back a chain someone flushed or deleted.
//!
//! A container whose groups cannot be converted keeps its chain as it is (upstream's sweep
//! would flush it); the orphan sweep removes only chains whose handle is in no entry of the
//! metadata store.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use silk_core::asg::SecurityGroup;
use silk_dataplane::datastore::Entries;
use silk_dataplane::iptables::egress::{self, EgressOptions};
use silk_dataplane::iptables::{ChainName, Family, Payload, Rule, SavedTable, Table};

use super::convert::{convert_rules, ConvertError};

/// Targets that are not chains.
const NOT_CHAINS: &[&str] = &[
    "ACCEPT", "DROP", "REJECT", "LOG", "MARK", "RETURN", "QUEUE", "NFLOG", "CONNMARK",
];

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AsgPlanError {
    #[error("security group {guid} ({name}): rules are not a JSON list of rules: {error}")]
    Rules {
        guid: String,
        name: String,
        error: String,
    },
    #[error("iptables-restore of this container's chains: {0}")]
    Restore(String),
    #[error("security group {guid} ({name}): {source}")]
    Convert {
        guid: String,
        name: String,
        #[source]
        source: ConvertError,
    },
}

/// Settings of the plan, from the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AsgOptions {
    pub v4: EgressOptions,
    pub v6: EgressOptions,
    /// Rules first in every IPv4 `asg-` chain (`disable_container_network_policy`).
    pub head_v4: Vec<String>,
}

impl AsgOptions {
    fn egress(&self, family: Family) -> &EgressOptions {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

/// A local container that gets an `asg-` chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsgContainer {
    pub handle: String,
    pub space_id: String,
    /// `container_workload`: `app`, `task`, `staging` or anything else (no ASG rules).
    pub workload: String,
    /// The container has an IPv6 address.
    pub ipv6: bool,
}

fn meta_str<'a>(m: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    m.get(key).and_then(serde_json::Value::as_str)
}

/// The containers of the store that take part in ASG syncing: a string `policy_group_id` and
/// a non-empty string `space_id`. Sorted by handle.
pub fn asg_containers(entries: &Entries) -> Vec<AsgContainer> {
    entries
        .values()
        .filter_map(|c| {
            meta_str(&c.metadata, "policy_group_id")?;
            let space = meta_str(&c.metadata, "space_id").filter(|s| !s.is_empty())?;
            Some(AsgContainer {
                handle: c.handle.clone(),
                space_id: space.to_string(),
                workload: meta_str(&c.metadata, "container_workload")
                    .unwrap_or("")
                    .to_string(),
                ipv6: c.ipv6.as_deref().is_some_and(|v| !v.is_empty()),
            })
        })
        .collect()
}

/// The space GUIDs to ask the policy server about, each once, sorted.
pub fn space_guids(containers: &[AsgContainer]) -> Vec<String> {
    let set: BTreeSet<&str> = containers.iter().map(|c| c.space_id.as_str()).collect();
    set.into_iter().map(str::to_string).collect()
}

/// What the plan covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Every container, and the orphan sweep (the periodic cycle).
    All,
    /// One container, no sweep (`/force-asgs-for-container`).
    Container(&'a str),
    /// The orphan sweep alone.
    Sweep,
}

/// A plan: the payload and what it does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AsgPlan {
    pub payload: Payload,
    /// Handles whose chains the payload rewrites.
    pub updated: Vec<String>,
    /// Chains the payload removes.
    pub removed: Vec<String>,
    /// Containers left as they are because their groups could not be converted.
    pub failed: Vec<(String, AsgPlanError)>,
    /// Rules skipped in conversion (handle, description).
    pub skipped_rules: Vec<(String, String)>,
    /// Containers without a netout chain in this family (not wired yet, or being deleted).
    pub without_netout: Vec<String>,
    /// The planned `asg-` rules of every container planned (written or already as planned):
    /// what the kernel holds once the payload is applied.
    pub chains: BTreeMap<String, Vec<String>>,
}

/// Converted ASG rules (match text, logged) and the descriptions of skipped rules.
type RuleSet = (Vec<(String, bool)>, Vec<String>);
/// `running` or `staging` rule sets of a space, converted once per plan.
type RuleSets = HashMap<(String, bool), Result<RuleSet, AsgPlanError>>;

/// The rules of the groups that apply to a container in `space` (`staging` or running):
/// default groups first, then the groups bound to the space, each in response order.
pub(crate) fn applicable<'a>(
    groups: &'a [SecurityGroup],
    space: &str,
    staging: bool,
) -> impl Iterator<Item = &'a SecurityGroup> + 'a {
    let space = space.to_string();
    let default = move |g: &&SecurityGroup| {
        if staging {
            g.staging_default
        } else {
            g.running_default
        }
    };
    let defaults = groups.iter().filter(default);
    let bound = groups.iter().filter(move |g| {
        let spaces = if staging {
            &g.staging_space_guids
        } else {
            &g.running_space_guids
        };
        !default(g) && spaces.contains(&space)
    });
    defaults.chain(bound)
}

fn convert_set(
    groups: &[SecurityGroup],
    space: &str,
    staging: bool,
    family: Family,
    global_log: bool,
) -> Result<RuleSet, AsgPlanError> {
    let mut rules = Vec::new();
    let mut skipped = Vec::new();
    for g in applicable(groups, space, staging) {
        let parsed = g.parse_rules().map_err(|e| AsgPlanError::Rules {
            guid: g.guid.clone(),
            name: g.name.clone(),
            error: e.to_string(),
        })?;
        let c =
            convert_rules(&parsed, family, global_log).map_err(|source| AsgPlanError::Convert {
                guid: g.guid.clone(),
                name: g.name.clone(),
                source,
            })?;
        rules.extend(c.rules);
        skipped.extend(c.skipped);
    }
    // Duplicates across groups go too, the first one kept (cloudfoundry/silk-release#102).
    let mut seen = std::collections::HashSet::new();
    rules.retain(|r| seen.insert(r.clone()));
    Ok((rules, skipped))
}

/// The planned rules of one container's `asg-` chain, without `-A <chain>`.
pub fn container_rules(
    groups: &[SecurityGroup],
    c: &AsgContainer,
    family: Family,
    opts: &AsgOptions,
) -> Result<Vec<String>, AsgPlanError> {
    let mut sets = RuleSets::new();
    rules_with(&mut sets, groups, c, family, opts).map(|(r, _)| r)
}

fn rules_with(
    sets: &mut RuleSets,
    groups: &[SecurityGroup],
    c: &AsgContainer,
    family: Family,
    opts: &AsgOptions,
) -> Result<(Vec<String>, Vec<String>), AsgPlanError> {
    let eo = opts.egress(family);
    let (asgs, skipped) = match c.workload.as_str() {
        "app" | "task" | "staging" => {
            let staging = c.workload == "staging";
            sets.entry((c.space_id.clone(), staging))
                .or_insert_with(|| {
                    convert_set(groups, &c.space_id, staging, family, eo.asg_logging)
                })
                .clone()?
        }
        _ => (Vec::new(), Vec::new()),
    };
    let mut rules = if family == Family::V4 {
        opts.head_v4.clone()
    } else {
        Vec::new()
    };
    rules.extend(egress::egress_rules(
        eo,
        &c.handle,
        &c.workload,
        family,
        &asgs,
    ));
    Ok((rules, skipped))
}

/// Every saved chain, with its rules in the comparable form for the chains plans compare
/// (`asg-`, `casg-`, `netout--`); the others are listed empty.
fn chains_of(saved: &SavedTable) -> BTreeMap<&str, Vec<String>> {
    let mut out: BTreeMap<&str, Vec<String>> = saved
        .chains
        .iter()
        .map(|c| (c.as_str(), Vec::new()))
        .collect();
    for r in &saved.rules {
        if is_asg_chain(&r.chain) || r.chain.starts_with("netout--") {
            out.entry(r.chain.as_str())
                .or_default()
                .push(egress::canonical(&r.spec));
        }
    }
    out
}

fn same(saved: Option<&Vec<String>>, planned: &[String]) -> bool {
    saved.is_some_and(|s| {
        s.len() == planned.len()
            && s.iter()
                .zip(planned)
                .all(|(a, b)| *a == egress::canonical(b))
    })
}

/// The rules of a container's `netout--` chain once its `asg-` chain is wired.
pub fn parent_rules(asg: &ChainName, family: Family) -> Vec<String> {
    vec![format!("-j {asg}"), egress::reject(family).to_string()]
}

/// `^c?asg-[A-Za-z0-9]+$`: the agent's chains.
pub fn is_asg_chain(name: &str) -> bool {
    let base = name.strip_prefix('c').unwrap_or(name);
    base.strip_prefix("asg-")
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The candidate name upstream's agent uses during a swap (`casg-…`); left over only when an
/// upstream agent stopped mid-swap.
fn candidate(asg: &ChainName) -> Option<ChainName> {
    ChainName::new(&format!("c{asg}")).ok()
}

/// Plans the ASG chains of `entries` in one family's saved filter table.
pub fn plan_asgs(
    groups: &[SecurityGroup],
    entries: &Entries,
    saved_filter: &str,
    family: Family,
    opts: &AsgOptions,
    scope: Scope<'_>,
) -> AsgPlan {
    let saved = SavedTable::parse(saved_filter, Table::Filter);
    let chains = chains_of(&saved);
    let mut plan = AsgPlan::default();
    let mut sets = RuleSets::new();
    let containers = asg_containers(entries);
    let f = plan.payload.table(Table::Filter);
    let mut removing: BTreeSet<String> = BTreeSet::new();

    for c in &containers {
        match scope {
            Scope::Container(h) if h != c.handle => continue,
            Scope::Sweep => break,
            _ => {}
        }
        if family == Family::V6 && !c.ipv6 {
            continue;
        }
        let netout = ChainName::netout(&c.handle);
        if !chains.contains_key(netout.as_str()) {
            plan.without_netout.push(c.handle.clone());
            continue;
        }
        let rules = match rules_with(&mut sets, groups, c, family, opts) {
            Ok((rules, skipped)) => {
                plan.skipped_rules
                    .extend(skipped.into_iter().map(|s| (c.handle.clone(), s)));
                rules
            }
            Err(e) => {
                plan.failed.push((c.handle.clone(), e));
                continue;
            }
        };
        let asg = ChainName::asg(&c.handle);
        let parent = parent_rules(&asg, family);
        let asg_ok = same(chains.get(asg.as_str()), &rules);
        let parent_ok = same(chains.get(netout.as_str()), &parent);
        let stale_candidate = candidate(&asg).filter(|c| chains.contains_key(c.as_str()));
        if asg_ok && parent_ok && stale_candidate.is_none() {
            plan.chains.insert(c.handle.clone(), rules);
            continue;
        }
        if !asg_ok {
            f.declare.push(asg.clone());
            f.append
                .extend(rules.iter().map(|r| Rule::new(&asg, r.as_str())));
        }
        plan.chains.insert(c.handle.clone(), rules);
        if !parent_ok || stale_candidate.is_some() {
            f.declare.push(netout.clone());
            f.append
                .extend(parent.iter().map(|r| Rule::new(&netout, r.as_str())));
        }
        if let Some(cand) = stale_candidate {
            removing.insert(cand.to_string());
        }
        plan.updated.push(c.handle.clone());
    }

    // The orphan sweep (not on a forced sync).
    if !matches!(scope, Scope::Container(_)) {
        let live: BTreeSet<String> = entries
            .keys()
            .map(|h| ChainName::asg(h).to_string())
            .collect();
        for name in chains.keys().filter(|c| is_asg_chain(c)) {
            let base = name.strip_prefix('c').unwrap_or(name);
            if !live.contains(base) {
                removing.insert((*name).to_string());
            }
        }
    }
    plan.removed = plan_removal(&saved, &chains, entries, &removing, f);
    plan
}

/// Plans the explicit cleanup of one handle (`/force-orphaned-asgs-cleanup`): its `asg-` and
/// `casg-` chains, the jumps to them, the chains only they referenced and the handle's netout
/// log chains that nothing else references (cni-wrapper-plugin's DEL flushes them but cannot
/// remove them while an asg chain goes to them).
pub fn plan_cleanup(handle: &str, entries: &Entries, saved_filter: &str) -> AsgPlan {
    let saved = SavedTable::parse(saved_filter, Table::Filter);
    let chains = chains_of(&saved);
    let asg = ChainName::asg(handle);
    let mut removing = BTreeSet::new();
    for name in [Some(asg.clone()), candidate(&asg)].into_iter().flatten() {
        if chains.contains_key(name.as_str()) {
            removing.insert(name.to_string());
        }
    }
    // The handle's netout log chains, when cni-wrapper-plugin's DEL left them (flushed)
    // because an asg chain referenced them: removed when nothing else references them.
    let own: BTreeSet<String> = removing.clone();
    for name in [
        ChainName::netout_log(handle),
        ChainName::netout_rl_log(handle),
    ] {
        let n = name.as_str();
        if chains.contains_key(n)
            && !entries.contains_key(handle)
            && saved.references_to(n).all(|r| own.contains(&r.chain))
        {
            removing.insert(n.to_string());
        }
    }
    let mut plan = AsgPlan::default();
    let f = plan.payload.table(Table::Filter);
    plan.removed = plan_removal(&saved, &chains, entries, &removing, f);
    plan
}

/// Adds the removal of `removing` to `f`: jumps to them from chains that stay are deleted, the
/// chains flushed and removed, and so is every user chain they jump or go to that only they
/// reference and that no live container owns. Returns the removed chain names.
fn plan_removal(
    saved: &SavedTable,
    chains: &BTreeMap<&str, Vec<String>>,
    entries: &Entries,
    removing: &BTreeSet<String>,
    f: &mut silk_dataplane::iptables::TablePlan,
) -> Vec<String> {
    if removing.is_empty() {
        return Vec::new();
    }
    let live_owned: BTreeSet<String> = entries
        .keys()
        .flat_map(|h| {
            [
                ChainName::netout(h),
                ChainName::netout_log(h),
                ChainName::netout_rl_log(h),
            ]
        })
        .map(|c| c.to_string())
        .collect();
    let mut targets: BTreeSet<String> = BTreeSet::new();
    for r in saved.rules.iter().filter(|r| removing.contains(&r.chain)) {
        let toks: Vec<&str> = r.spec.split_whitespace().collect();
        for w in toks.windows(2) {
            if matches!(w[0], "-j" | "-g")
                && !NOT_CHAINS.contains(&w[1])
                && chains.contains_key(w[1])
                && !removing.contains(w[1])
                && !live_owned.contains(w[1])
            {
                targets.insert(w[1].to_string());
            }
        }
    }
    // A target stays when a chain that stays references it.
    targets.retain(|t| {
        saved
            .references_to(t)
            .all(|r| removing.contains(&r.chain) || r.chain == *t)
    });
    let all: BTreeSet<&String> = removing.iter().chain(&targets).collect();
    let declared: BTreeSet<String> = f.declare.iter().map(|c| c.to_string()).collect();
    for name in &all {
        for r in saved.rules.iter().filter(|r| r.targets(name)) {
            // Rules inside removed or rewritten chains go with their chain.
            if all.contains(&r.chain) || declared.contains(&r.chain) {
                continue;
            }
            if !f.delete.contains(r) {
                f.delete.push(r.clone());
            }
        }
    }
    let mut removed = Vec::new();
    for name in all {
        if let Ok(c) = ChainName::new(name) {
            if !f.declare.contains(&c) {
                f.declare.push(c.clone());
            }
            f.remove.push(c);
            removed.push(name.clone());
        }
    }
    removed
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
