//! The ASG cycle (policy contract §3.7.1): the periodic poll over every local container with
//! the orphan sweep, the forced sync of one container and the explicit cleanup of one handle.
//! All three are serialised by one mutex; each applies one restore per family while holding
//! the iptables lock file from `iptables-save` to `iptables-restore`, the lock the c2c cycle
//! and cni-wrapper-plugin hold for their changes too, so no two writers interleave on a table.
//!
//! The security groups are fetched when `security_groups_last_updated` (newer policy servers)
//! changed, when the server does not have that route, or when a container's space is not
//! among the spaces of the last fetch; otherwise the last answer is planned again, which
//! still repairs chains changed by someone else. A failed fetch changes nothing: the chains
//! stay as they are, `asgPollFailures` counts it and the next poll tries again.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use silk_client::{ClientError, PolicyClient};
use silk_core::asg::SecurityGroup;
use silk_dataplane::datastore::{Entries, StoreError};
use silk_dataplane::iptables::{Family, Iptables, IptablesError, Table};

use super::planner::{
    asg_containers, plan_asgs, plan_cleanup, space_guids, AsgOptions, AsgPlan, AsgPlanError, Scope,
};
use super::skip::{decide, remembered_table, Decision, FamilyKey, Verified};
use crate::ports::Ports;

/// Counted whenever a periodic or forced sync fails before writing (policy server, store,
/// iptables).
pub const POLL_FAILURES: &str = "asgPollFailures";
/// Counted per container left as it is because its groups could not be converted.
pub const CONTAINER_FAILURES: &str = "asgContainerFailures";

/// The policy server calls of the ASG cycle; [`PolicyClient`] in production, fakes in tests.
pub trait AsgApi: Send + Sync + 'static {
    fn security_groups(
        &self,
        space_guids: &[String],
    ) -> impl Future<Output = Result<Vec<SecurityGroup>, ClientError>> + Send;
    fn security_groups_last_updated(&self)
        -> impl Future<Output = Result<i64, ClientError>> + Send;
}

impl AsgApi for PolicyClient {
    async fn security_groups(&self, spaces: &[String]) -> Result<Vec<SecurityGroup>, ClientError> {
        PolicyClient::security_groups(self, spaces).await
    }

    async fn security_groups_last_updated(&self) -> Result<i64, ClientError> {
        PolicyClient::security_groups_last_updated(self).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AsgCycleError {
    #[error("read container metadata: {0}")]
    Store(#[from] StoreError),
    #[error("get security groups: {0}")]
    SecurityGroups(#[source] ClientError),
    #[error("iptables: {0}")]
    Iptables(#[from] IptablesError),
    #[error("container {handle}: {error}")]
    Container { handle: String, error: String },
    #[error("container {0} is still in the metadata store")]
    Live(String),
    #[error("background task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AsgOutcome {
    /// Handles whose chains were rewritten.
    pub updated: Vec<String>,
    /// Chains removed.
    pub removed: Vec<String>,
    /// Containers kept as they were (planning failed).
    pub failed: Vec<String>,
    /// Restores run (0 when nothing changed).
    pub restores: usize,
    /// Containers without an IPv4 netout chain (not wired by cni-wrapper-plugin).
    pub without_netout: Vec<String>,
    /// Whether the filter table was read (`iptables-save`); false when the kernel was known.
    pub read: bool,
    /// Containers planned (0 when the cycle was skipped).
    pub planned: usize,
}

#[derive(Default)]
struct Fetched {
    last_updated: Option<i64>,
    spaces: BTreeSet<String>,
    groups: Vec<SecurityGroup>,
}

pub struct AsgCycle<A, I: ?Sized> {
    ports: Ports<A, I>,
    opts: Arc<AsgOptions>,
    enable_ipv6: bool,
    /// The last successful periodic fetch and what the kernel is known to hold; the lock
    /// serialises every ASG operation.
    state: tokio::sync::Mutex<AsgState>,
}

#[derive(Default)]
struct AsgState {
    fetched: Option<Fetched>,
    verified: Option<Verified>,
}

impl<A: AsgApi, I: Iptables + ?Sized + 'static> AsgCycle<A, I> {
    pub fn new(ports: Ports<A, I>, opts: AsgOptions, enable_ipv6: bool) -> Self {
        AsgCycle {
            ports,
            opts: Arc::new(opts),
            enable_ipv6,
            state: tokio::sync::Mutex::new(AsgState::default()),
        }
    }

    fn families(&self) -> Vec<Family> {
        if self.enable_ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }

    async fn read_store(&self) -> Result<Entries, AsgCycleError> {
        self.ports.read_store().await
    }

    /// Counts a failed forced sync or cleanup (the periodic cycle counts its own).
    pub fn count_failure(&self) {
        self.ports.metrics.incr(POLL_FAILURES);
    }

    /// The periodic cycle: every container, then the orphan sweep.
    pub async fn poll(&self) -> Result<AsgOutcome, AsgCycleError> {
        let result = self.poll_inner().await;
        if let Err(e) = &result {
            self.ports.metrics.incr(POLL_FAILURES);
            silk_ops::log::error(
                "asg-poll-cycle",
                json!({ "error": e.to_string(), "iptables": "unchanged" }),
            );
        }
        result
    }

    async fn poll_inner(&self) -> Result<AsgOutcome, AsgCycleError> {
        let mut guard = self.state.lock().await;
        let AsgState {
            fetched: state,
            verified,
        } = &mut *guard;
        let start = Instant::now();
        let entries = self.read_store().await?;
        let spaces = space_guids(&asg_containers(&entries));

        let t = Instant::now();
        let last_updated = match self.ports.api.security_groups_last_updated().await {
            Ok(v) => Some(v),
            Err(e) => {
                silk_ops::log::debug(
                    "security-groups-last-updated",
                    json!({ "error": e.to_string(), "action": "fetching security groups" }),
                );
                None
            }
        };
        let covered = state.as_ref().is_some_and(|f| {
            last_updated.is_some()
                && f.last_updated == last_updated
                && spaces.iter().all(|s| f.spaces.contains(s))
        });
        if !covered && !spaces.is_empty() {
            let groups = self
                .ports
                .api
                .security_groups(&spaces)
                .await
                .map_err(AsgCycleError::SecurityGroups)?;
            *state = Some(Fetched {
                last_updated,
                spaces: spaces.iter().cloned().collect(),
                groups,
            });
        } else if covered {
            silk_ops::log::debug(
                "security-groups-unchanged",
                json!({ "last_updated": last_updated }),
            );
        }
        self.ports.time("policyServerASGPollTime", t);
        let groups = state.as_ref().map(|f| f.groups.clone()).unwrap_or_default();

        let t = Instant::now();
        let families = self.families();
        let generation = self.ports.iptables.generation(Family::V4);
        let outcome = match decide(verified.as_ref(), generation, &groups, &entries, &families) {
            Decision::Skip => {
                silk_ops::log::debug("asg-chains-unchanged", json!({ "read": false }));
                AsgOutcome::default()
            }
            Decision::Containers(handles) => {
                let last = verified.take();
                let (outcome, known) = self
                    .apply(
                        groups.clone(),
                        entries.clone(),
                        Plan::Known(handles, last.clone()),
                    )
                    .await?;
                *verified = match (last, known) {
                    (Some(mut v), Some((generation, chains))) => {
                        v.generation = generation;
                        for (family, planned) in chains {
                            v.chains.entry(family).or_default().extend(planned);
                        }
                        v.groups = groups;
                        v.entries = entries;
                        Some(v)
                    }
                    _ => None,
                };
                outcome
            }
            Decision::Full => {
                *verified = None;
                let (outcome, known) = self
                    .apply(groups.clone(), entries.clone(), Plan::All)
                    .await?;
                *verified = known.map(|(generation, chains)| Verified {
                    generation,
                    groups,
                    entries,
                    chains,
                });
                outcome
            }
        };
        self.ports.time("asgIptablesEnforceTime", t);
        // The sweep is part of the same restore; there is no separate cleanup step to time.
        self.ports
            .metrics
            .value("asgIptablesCleanupTime", 0.0, "ms");
        self.ports.time("asgTotalPollTime", start);
        Ok(outcome)
    }

    /// `/force-asgs-for-container`: fetches the groups of the container's space and syncs
    /// its chains only. A container whose groups cannot be converted, or whose netout chain
    /// does not exist, is an error here (upstream's agent fails on both too).
    pub async fn sync_container(&self, handle: &str) -> Result<AsgOutcome, AsgCycleError> {
        let _state = self.state.lock().await;
        let entries = self.read_store().await?;
        let containers = asg_containers(&entries);
        let spaces: Vec<String> = containers
            .iter()
            .filter(|c| c.handle == handle)
            .map(|c| c.space_id.clone())
            .collect();
        let t = Instant::now();
        let groups = if spaces.is_empty() {
            Vec::new()
        } else {
            self.ports
                .api
                .security_groups(&spaces)
                .await
                .map_err(AsgCycleError::SecurityGroups)?
        };
        self.ports.time("policyServerASGPollTime", t);
        let (outcome, _) = self
            .apply(groups, entries, Plan::One(handle.to_string()))
            .await?;
        if !outcome.failed.is_empty() {
            return Err(AsgCycleError::Container {
                handle: handle.to_string(),
                error: "its security groups cannot be converted; see asg-container-kept".into(),
            });
        }
        if outcome.without_netout.iter().any(|h| h == handle) {
            return Err(AsgCycleError::Container {
                handle: handle.to_string(),
                error: format!(
                    "chain {} does not exist",
                    silk_dataplane::iptables::ChainName::netout(handle)
                ),
            });
        }
        Ok(outcome)
    }

    /// `/force-orphaned-asgs-cleanup`: removes the chains of a handle that left the store.
    pub async fn cleanup_container(&self, handle: &str) -> Result<AsgOutcome, AsgCycleError> {
        let _state = self.state.lock().await;
        // An unreadable store must not make every CNI DEL fail: the cleanup then goes on
        // without the liveness check, as upstream's (which never reads the store).
        let entries = match self.read_store().await {
            Ok(e) => e,
            Err(e) => {
                silk_ops::log::error(
                    "force-orphaned-asgs-cleanup",
                    json!({ "container": handle, "error": e.to_string(), "action": "cleaning up without the liveness check" }),
                );
                Entries::new()
            }
        };
        if entries.contains_key(handle) {
            return Err(AsgCycleError::Live(handle.to_string()));
        }
        let iptables = Arc::clone(&self.ports.iptables);
        let families = self.families();
        let h = handle.to_string();
        let (plans, _) = tokio::task::spawn_blocking(move || {
            apply_plans(
                iptables.as_ref(),
                &families,
                Scope::Container(&h),
                |family| iptables.save(family, Some(Table::Filter)),
                |saved, _family, _scope| plan_cleanup(&h, &entries, saved),
            )
        })
        .await??;
        let outcome = summarize(&plans);
        if !outcome.removed.is_empty() {
            silk_ops::log::info(
                "asg-chains-cleaned-up",
                json!({ "container": handle, "removed": outcome.removed }),
            );
        }
        Ok(outcome)
    }

    /// Plans and applies in every family under the iptables lock; returns the outcome and,
    /// when the kernel is known afterwards (see [`apply_plans`]; no container failed), the
    /// generation and the planned chains of every family.
    async fn apply(
        &self,
        groups: Vec<SecurityGroup>,
        entries: Entries,
        what: Plan,
    ) -> Result<(AsgOutcome, Option<Known>), AsgCycleError> {
        let iptables = Arc::clone(&self.ports.iptables);
        let opts = Arc::clone(&self.opts);
        let families = self.families();
        let (plans, generation, read) = tokio::task::spawn_blocking(move || {
            let planner = |saved: &str, family: Family, scope: Scope<'_>| {
                plan_asgs(&groups, &entries, saved, family, &opts, scope)
            };
            let save = |family| iptables.save(family, Some(Table::Filter));
            match &what {
                Plan::All => apply_plans(iptables.as_ref(), &families, Scope::All, save, planner)
                    .map(|(p, g)| (p, g, true)),
                Plan::One(h) => apply_plans(
                    iptables.as_ref(),
                    &families,
                    Scope::Container(h),
                    save,
                    planner,
                )
                .map(|(p, g)| (p, g, true)),
                Plan::Known(handles, last) => {
                    // Each changed container planned alone against its remembered chains; the
                    // parts of one family go in one restore.
                    let remembered = |family: Family| {
                        let chains = last
                            .as_ref()
                            .and_then(|v| v.chains.get(&FamilyKey::from(family)));
                        Ok(chains
                            .map_or_else(String::new, |c| remembered_table(c, handles, family)))
                    };
                    let planner = |saved: &str, family: Family, _scope: Scope<'_>| {
                        let mut out = AsgPlan::default();
                        for h in handles {
                            let p = planner(saved, family, Scope::Container(h));
                            merge(&mut out, p);
                        }
                        out
                    };
                    apply_plans(
                        iptables.as_ref(),
                        &families,
                        Scope::Sweep,
                        remembered,
                        planner,
                    )
                    .map(|(p, g)| (p, g, false))
                }
            }
        })
        .await??;
        for (family, plan) in &plans {
            for (handle, e) in &plan.failed {
                self.ports.metrics.incr(CONTAINER_FAILURES);
                silk_ops::log::error(
                    "asg-container-kept",
                    json!({ "container": handle, "family": format!("{family:?}"), "error": e.to_string(), "iptables": "unchanged" }),
                );
            }
            for (handle, why) in &plan.skipped_rules {
                silk_ops::log::debug(
                    "asg-rule-skipped",
                    json!({ "container": handle, "rule": why }),
                );
            }
            if !plan.without_netout.is_empty() {
                silk_ops::log::debug(
                    "asg-containers-without-netout",
                    json!({ "family": format!("{family:?}"), "containers": plan.without_netout }),
                );
            }
        }
        let mut outcome = summarize(&plans);
        outcome.read = read;
        if outcome.restores > 0 {
            silk_ops::log::info(
                "asg-chains-synced",
                json!({ "updated": outcome.updated, "removed": outcome.removed, "read": read }),
            );
        } else {
            silk_ops::log::debug("asg-chains-unchanged", json!({ "read": read }));
        }
        let known = generation.filter(|_| outcome.failed.is_empty()).map(|g| {
            let chains = plans
                .into_iter()
                .map(|(family, p)| (FamilyKey::from(family), p.chains))
                .collect();
            (g, chains)
        });
        Ok((outcome, known))
    }
}

/// What [`AsgCycle::apply`] plans.
enum Plan {
    /// Every container and the sweep, against the saved table.
    All,
    /// One container, against the saved table.
    One(String),
    /// These containers, against the chains remembered from the last verified cycle.
    Known(Vec<String>, Option<Verified>),
}

/// The plan applied in each family.
type FamilyPlans = Vec<(Family, AsgPlan)>;

/// The generation after a cycle and the planned chains of every family.
type Known = (
    u64,
    std::collections::BTreeMap<FamilyKey, std::collections::BTreeMap<String, Vec<String>>>,
);

/// Adds the plan of one container to `out` (one table section, one commit).
fn merge(out: &mut AsgPlan, p: AsgPlan) {
    for t in p.payload.tables {
        let f = out.payload.table(t.table);
        f.declare.extend(t.declare);
        f.delete.extend(t.delete);
        f.insert_first.extend(t.insert_first);
        f.append.extend(t.append);
        f.remove.extend(t.remove);
    }
    out.updated.extend(p.updated);
    out.removed.extend(p.removed);
    out.failed.extend(p.failed);
    out.skipped_rules.extend(p.skipped_rules);
    out.without_netout.extend(p.without_netout);
    out.chains.extend(p.chains);
}

/// For each family: takes the lock, reads the filter table (`saved`), plans `scope`, restores
/// when the plan is not empty; the lock is held from read to restore. When the restore of a
/// periodic cycle fails (one rule iptables refuses fails the whole commit), each container's
/// part is applied alone, so the failure stays with the container that caused it.
///
/// Also returns the backend generation after the last family when only these restores moved
/// it (each restore is one commit: the generation moves by exactly one), i.e. when the kernel
/// holds what was planned; `None` without a generation, after a failed batch or when someone
/// else wrote in between.
fn apply_plans<I: Iptables + ?Sized>(
    iptables: &I,
    families: &[Family],
    scope: Scope<'_>,
    saved: impl Fn(Family) -> Result<String, IptablesError>,
    plan: impl Fn(&str, Family, Scope<'_>) -> AsgPlan,
) -> Result<(FamilyPlans, Option<u64>), AsgCycleError> {
    let mut out = Vec::new();
    let mut known = true;
    let mut expected: Option<u64> = None;
    for &family in families {
        let _lock = iptables.lock()?;
        let before = iptables.generation(family);
        known &= before.is_some() && expected.is_none_or(|e| Some(e) == before);
        let text = saved(family)?;
        let p = plan(&text, family, scope);
        if p.payload.is_empty() {
            expected = before;
            out.push((family, p));
            continue;
        }
        match iptables.restore(family, &p.payload.render()) {
            Ok(()) => {
                let after = iptables.generation(family);
                known &= after.is_some() && after == before.map(|b| b.wrapping_add(1));
                expected = after;
                out.push((family, p));
            }
            Err(e) if scope == Scope::All => {
                silk_ops::log::error(
                    "asg-batch-restore-failed",
                    json!({ "family": format!("{family:?}"), "error": e.to_string(), "action": "applying container by container" }),
                );
                known = false;
                out.push((family, one_by_one(iptables, family, &text, p, &plan)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((out, expected.filter(|_| known)))
}

/// Applies the containers of a failed `batch` one restore each, then the sweep.
fn one_by_one<I: Iptables + ?Sized>(
    iptables: &I,
    family: Family,
    saved: &str,
    batch: AsgPlan,
    plan: &impl Fn(&str, Family, Scope<'_>) -> AsgPlan,
) -> AsgPlan {
    let mut out = AsgPlan {
        failed: batch.failed,
        skipped_rules: batch.skipped_rules,
        without_netout: batch.without_netout,
        ..AsgPlan::default()
    };
    let parts = batch
        .updated
        .iter()
        .map(|h| (Some(h.as_str()), plan(saved, family, Scope::Container(h))))
        .chain(std::iter::once((None, plan(saved, family, Scope::Sweep))));
    for (handle, part) in parts {
        if part.payload.is_empty() {
            continue;
        }
        match (iptables.restore(family, &part.payload.render()), handle) {
            (Ok(()), _) => {
                out.updated.extend(part.updated);
                out.removed.extend(part.removed);
                out.payload.tables.extend(part.payload.tables);
            }
            (Err(e), Some(h)) => out
                .failed
                .push((h.to_string(), AsgPlanError::Restore(e.to_string()))),
            (Err(e), None) => silk_ops::log::error(
                "asg-sweep-failed",
                json!({ "family": format!("{family:?}"), "error": e.to_string() }),
            ),
        }
    }
    out
}

fn summarize(plans: &[(Family, AsgPlan)]) -> AsgOutcome {
    let mut o = AsgOutcome::default();
    for (family, p) in plans {
        if *family == Family::V4 {
            o.without_netout.extend(p.without_netout.iter().cloned());
        }
        o.updated.extend(p.updated.iter().cloned());
        o.removed.extend(p.removed.iter().cloned());
        o.failed.extend(p.failed.iter().map(|(h, _)| h.clone()));
        o.restores += usize::from(!p.payload.is_empty());
        o.planned += p.chains.len();
    }
    o.updated.sort();
    o.updated.dedup();
    o
}

#[cfg(test)]
#[path = "cycle_tests.rs"]
mod tests;
