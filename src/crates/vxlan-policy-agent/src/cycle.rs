//! The c2c policy cycle (policy contract §3.3): read the metadata store, ask the policy server
//! for the policies of the local groups, plan the chains, and reconcile them against the
//! kernel's actual chains ([`Enforcer`]).
//!
//! The periodic tick first asks `policies_last_updated`. When nothing changed since the last
//! successful fetch, and the local groups are all covered by it, only the fetch is skipped:
//! the containers, the logging switch and the kernel's chains are reconciled at every tick, so
//! a deleted container's rules, a `/iptables-c2c-logging` toggle and a chain someone else
//! flushed or deleted take effect within one poll (upstream waits for the next policy change:
//! trap 3). Unlike upstream, the remote timestamp is remembered only after the cycle
//! succeeded, so a failed cycle is retried at the next tick.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use silk_client::{ClientError, PolicyClient};
use silk_core::policy::Policy;
use silk_dataplane::datastore::StoreError;
use silk_dataplane::iptables::Iptables;

use crate::enforcer::{EnforceError, Enforcer};
use crate::planner::{group_ids, local_containers, plan_c2c, C2cPlan, LocalContainer, PlanOptions};
use crate::ports::Ports;

/// The id and type of the router group whose tag overlay ingress rules accept.
pub const INGRESS_ROUTER_ID: &str = "INGRESS_ROUTER";
pub const INGRESS_ROUTER_TYPE: &str = "router";

/// The policy server calls a cycle makes; [`PolicyClient`] in production, fakes in tests.
pub trait PolicyApi: Send + Sync + 'static {
    fn policies(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Policy>, ClientError>> + Send;
    fn policies_last_updated(&self) -> impl Future<Output = Result<i64, ClientError>> + Send;
    fn ingress_router_tag(&self) -> impl Future<Output = Result<String, ClientError>> + Send;
}

impl PolicyApi for PolicyClient {
    async fn policies(&self, ids: &[String]) -> Result<Vec<Policy>, ClientError> {
        PolicyClient::policies(self, Some(ids)).await
    }

    async fn policies_last_updated(&self) -> Result<i64, ClientError> {
        PolicyClient::policies_last_updated(self).await
    }

    async fn ingress_router_tag(&self) -> Result<String, ClientError> {
        self.create_or_get_tag(INGRESS_ROUTER_ID, INGRESS_ROUTER_TYPE)
            .await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error("read container metadata: {0}")]
    Store(#[from] StoreError),
    #[error("get policies: {0}")]
    Policies(#[source] ClientError),
    #[error("get ingress router tag: {0}")]
    Tag(#[source] ClientError),
    #[error("enforce c2c rules: {0}")]
    Enforce(#[from] EnforceError),
    #[error("background task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What a cycle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the policies were fetched (false: `policies_last_updated` showed no change
    /// and the last fetch covers every local group).
    pub fetched: bool,
    /// The main chain.
    pub chain: String,
    /// Rules planned (all chains).
    pub rules: usize,
    /// Chains written by this cycle (0: the kernel already matched).
    pub rewritten: usize,
    /// Rules written by this cycle.
    pub written: usize,
    /// Whether the table was read from the kernel (else the generation showed no change).
    pub read: bool,
}

/// Static settings of the cycle.
#[derive(Debug, Clone, Default)]
pub struct CycleOptions {
    pub accepted_udp_logs_per_sec: u32,
    pub enable_overlay_ingress_rules: bool,
    /// Rules put first in the main chain (`disable_container_network_policy`).
    pub head_rules: Vec<String>,
}

/// The answer of the last successful fetch.
#[derive(Debug, Clone)]
struct Fetched {
    ids: Vec<String>,
    policies: Vec<Policy>,
    ingress_tag: Option<String>,
}

/// What the cycle lock guards: the last fetch and the kernel state.
#[derive(Debug, Default)]
struct State {
    fetched: Option<Fetched>,
    /// Bumped whenever a fetch answers differently from the previous one.
    epoch: u64,
    /// The last plan and what it was planned from: a cycle whose inputs are the same reuses
    /// it instead of planning ten thousand rules again.
    planned: Option<Planned>,
    enforcer: Enforcer,
}

#[derive(Debug)]
struct Planned {
    containers: Vec<LocalContainer>,
    epoch: u64,
    opts: PlanOptions,
    plan: Arc<C2cPlan>,
}

pub struct C2cCycle<A, I: ?Sized> {
    ports: Ports<A, I>,
    opts: CycleOptions,
    /// `iptables_c2c_logging`, switched at runtime by the debug server's
    /// `/iptables-c2c-logging`; read at every cycle.
    c2c_logging: Arc<AtomicBool>,
    /// The last `policies_last_updated` value after which a cycle succeeded (0: none).
    last_updated: AtomicI64,
    /// The lock also serialises cycles (tick and forced).
    state: tokio::sync::Mutex<State>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl<A: PolicyApi, I: Iptables + ?Sized + 'static> C2cCycle<A, I> {
    pub fn new(ports: Ports<A, I>, opts: CycleOptions, c2c_logging: Arc<AtomicBool>) -> Self {
        C2cCycle {
            ports,
            opts,
            c2c_logging,
            last_updated: AtomicI64::new(0),
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// The periodic tick: a cycle that fetches the policies only when
    /// `policies_last_updated` changed since the last successful cycle (or fails: an older
    /// server without the route). The local reconciliation always runs.
    pub async fn tick(&self) -> Result<Outcome, CycleError> {
        let remote = match self.ports.api.policies_last_updated().await {
            Ok(v) => Some(v),
            Err(e) => {
                silk_ops::log::info(
                    "policies-last-updated",
                    json!({ "error": e.to_string(), "action": "fetching policies" }),
                );
                None
            }
        };
        let seen = self.last_updated.load(Ordering::SeqCst);
        let fetch = match remote {
            Some(r) => seen == 0 || r > seen,
            None => true,
        };
        if !fetch {
            silk_ops::log::debug("skipping-policy-fetch", json!({ "last_updated": seen }));
        }
        let out = self.run(fetch).await?;
        if let Some(r) = remote {
            self.last_updated.fetch_max(r, Ordering::SeqCst);
        }
        Ok(out)
    }

    /// A full cycle (the forced cycle too): always fetches.
    pub async fn full(&self) -> Result<Outcome, CycleError> {
        self.run(true).await
    }

    async fn run(&self, fetch: bool) -> Result<Outcome, CycleError> {
        let mut state = self.state.lock().await;
        let start = Instant::now();

        let entries = self.ports.read_store::<CycleError>().await?;
        let containers = local_containers(&entries);
        let ids = group_ids(&containers);

        // The last fetch serves when nothing changed on the server and it covered every
        // group here (a new container's group needs its policies).
        let reuse = !fetch
            && state.fetched.as_ref().is_some_and(|f| {
                ids.iter().all(|i| f.ids.binary_search(i).is_ok())
                    && f.ingress_tag.is_some()
                        == (self.opts.enable_overlay_ingress_rules && !ids.is_empty())
            });
        if !reuse {
            let t = Instant::now();
            let policies = if ids.is_empty() {
                Vec::new()
            } else {
                self.ports
                    .api
                    .policies(&ids)
                    .await
                    .map_err(CycleError::Policies)?
            };
            let ingress_tag = if self.opts.enable_overlay_ingress_rules && !ids.is_empty() {
                Some(
                    self.ports
                        .api
                        .ingress_router_tag()
                        .await
                        .map_err(CycleError::Tag)?,
                )
            } else {
                None
            };
            self.ports.time("policyServerPollTime", t);
            let same = state
                .fetched
                .as_ref()
                .is_some_and(|f| f.policies == policies && f.ingress_tag == ingress_tag);
            if !same {
                state.epoch += 1;
            }
            state.fetched = Some(Fetched {
                ids: ids.clone(),
                policies,
                ingress_tag,
            });
        }
        let ingress_tag = state.fetched.as_ref().and_then(|f| f.ingress_tag.clone());

        let opts = PlanOptions {
            c2c_logging: self.c2c_logging.load(Ordering::SeqCst),
            accepted_udp_logs_per_sec: self.opts.accepted_udp_logs_per_sec,
            ingress_tag,
        };
        let reusable = state
            .planned
            .as_ref()
            .filter(|p| p.epoch == state.epoch && p.opts == opts && p.containers == containers);
        let plan = match reusable {
            Some(p) => Arc::clone(&p.plan),
            None => {
                let policies = state.fetched.as_ref().map_or(&[][..], |f| &f.policies);
                let plan = Arc::new(plan_c2c(&containers, policies, &opts));
                for p in &plan.problems {
                    silk_ops::log::error("c2c-plan-skipped", json!({ "error": p.to_string() }));
                }
                state.planned = Some(Planned {
                    containers: containers.clone(),
                    epoch: state.epoch,
                    opts,
                    plan: Arc::clone(&plan),
                });
                plan
            }
        };
        self.ports
            .metrics
            .value("c2cPlanProblems", plan.problems.len() as f64, "count");

        let t = Instant::now();
        let iptables = Arc::clone(&self.ports.iptables);
        let head = self.opts.head_rules.clone();
        let mut enforcer = std::mem::take(&mut state.enforcer);
        let rules = plan.rule_count();
        let (enforcer, result) = tokio::task::spawn_blocking(move || {
            let r = enforcer.enforce(iptables.as_ref(), now_us(), &head, &plan);
            (enforcer, r)
        })
        .await?;
        state.enforcer = enforcer;
        let enforced = result?;
        if enforced.rewritten > 0 {
            silk_ops::log::info(
                "enforced-c2c-rules",
                json!({ "chain": enforced.chain, "rules": rules, "chains_written": enforced.rewritten,
                        "rules_written": enforced.rules, "containers": containers.len() }),
            );
        } else {
            silk_ops::log::debug("c2c-rules-unchanged", json!({ "rules": rules }));
        }
        self.ports.time("iptablesEnforceTime", t);
        self.ports.time("totalPollTime", start);
        Ok(Outcome {
            fetched: !reuse,
            chain: enforced.chain,
            rules,
            rewritten: enforced.rewritten,
            written: enforced.rules,
            read: enforced.read,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use silk_core::policy::PoliciesResponse;
    use silk_dataplane::datastore::MetadataStore;
    use silk_dataplane::iptables::RecordingIptables;
    use silk_ops::Metrics;

    /// A policy server in memory: answers from `policies`, records the id lists.
    #[derive(Default)]
    struct FakeApi {
        policies: Mutex<Vec<Policy>>,
        last_updated: Mutex<Option<i64>>,
        down: AtomicBool,
        asked: Mutex<Vec<Vec<String>>>,
    }

    fn down() -> ClientError {
        ClientError::Status {
            code: 500,
            text: "database read failed".into(),
        }
    }

    impl PolicyApi for Arc<FakeApi> {
        async fn policies(&self, ids: &[String]) -> Result<Vec<Policy>, ClientError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(down());
            }
            self.asked.lock().unwrap().push(ids.to_vec());
            Ok(self.policies.lock().unwrap().clone())
        }

        async fn policies_last_updated(&self) -> Result<i64, ClientError> {
            (*self.last_updated.lock().unwrap()).ok_or_else(down)
        }

        async fn ingress_router_tag(&self) -> Result<String, ClientError> {
            Ok("0006".into())
        }
    }

    const POLICIES: &str = r#"{"total_policies": 1, "policies": [
        {"source": {"id": "front", "tag": "0001"},
         "destination": {"id": "back", "tag": "0002", "protocol": "tcp", "ports": {"start": 8080, "end": 8080}}}]}"#;

    fn setup() -> (
        tempfile::TempDir,
        Arc<FakeApi>,
        Arc<RecordingIptables>,
        C2cCycle<Arc<FakeApi>, RecordingIptables>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::new(dir.path().join("store.json"), None);
        store
            .add(
                "h-back",
                "10.255.7.4",
                None,
                json!({"policy_group_id": "back", "space_id": "s"}),
            )
            .unwrap();
        store
            .add(
                "h-front",
                "10.255.7.3",
                None,
                json!({"policy_group_id": "front"}),
            )
            .unwrap();
        let api = Arc::new(FakeApi::default());
        *api.policies.lock().unwrap() = serde_json::from_str::<PoliciesResponse>(POLICIES)
            .unwrap()
            .policies;
        let ipt = Arc::new(RecordingIptables::default());
        *ipt.generation.lock().unwrap() = Some(1);
        let cycle = cycle_over(
            &api,
            &ipt,
            store,
            CycleOptions {
                accepted_udp_logs_per_sec: 100,
                ..CycleOptions::default()
            },
        );
        (dir, api, ipt, cycle)
    }

    /// A cycle over the fakes and `store`, with C2C logging off.
    fn cycle_over(
        api: &Arc<FakeApi>,
        ipt: &Arc<RecordingIptables>,
        store: MetadataStore,
        opts: CycleOptions,
    ) -> C2cCycle<Arc<FakeApi>, RecordingIptables> {
        C2cCycle::new(
            Ports {
                api: Arc::clone(api),
                iptables: Arc::clone(ipt),
                store,
                metrics: Metrics::new("vxlan-policy-agent", 0),
            },
            opts,
            Arc::new(AtomicBool::new(false)),
        )
    }

    fn payload(ipt: &RecordingIptables, i: usize) -> String {
        ipt.payloads()[i].1.clone()
    }

    #[tokio::test]
    async fn enforces_once_then_only_on_change() {
        let (_dir, api, ipt, cycle) = setup();
        // front's mark rule, back's jump and back's accept rule in two chains
        let out = cycle.full().await.unwrap();
        assert_eq!((out.rules, out.rewritten, out.written), (3, 2, 3));
        assert!(out.fetched && out.read);
        assert_eq!(
            api.asked.lock().unwrap()[0],
            vec!["back".to_string(), "front".into(), "s".into()]
        );
        let p = payload(&ipt, 0);
        assert!(
            p.contains("-A vpa-d-back -p tcp -m tcp --dport 8080 -m mark --mark 0x1 "),
            "{p}"
        );
        assert!(p.contains(" -d 10.255.7.4/32 -j vpa-d-back\n"), "{p}");
        // The kernel is known from the generation: nothing read, nothing written.
        let out = cycle.full().await.unwrap();
        assert_eq!((out.rewritten, out.read), (0, false));
        assert_eq!(ipt.payloads().len(), 1);
        api.policies.lock().unwrap().clear();
        let out = cycle.full().await.unwrap();
        assert_eq!((out.rules, out.rewritten), (0, 2));
        let p = payload(&ipt, 1);
        assert!(p.contains("-X vpa-d-back\n"), "{p}");
        assert!(cycle.ports.metrics.last_value("totalPollTime").is_some());
    }

    #[tokio::test]
    async fn a_failed_poll_changes_nothing() {
        let (_dir, api, ipt, cycle) = setup();
        api.down.store(true, Ordering::SeqCst);
        let err = cycle.full().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "get policies: http status 500: database read failed"
        );
        assert!(ipt.payloads().is_empty());
    }

    #[tokio::test]
    async fn ticks_skip_only_the_fetch_and_are_retried_after_failure() {
        let (_dir, api, ipt, cycle) = setup();
        // No last_updated route: every tick fetches.
        assert!(cycle.tick().await.unwrap().fetched);
        assert!(cycle.tick().await.unwrap().fetched);
        *api.last_updated.lock().unwrap() = Some(10);
        // The policy server fails once: the tick fails and the next one tries again.
        api.down.store(true, Ordering::SeqCst);
        assert!(cycle.tick().await.is_err());
        api.down.store(false, Ordering::SeqCst);
        assert!(cycle.tick().await.unwrap().fetched);
        let out = cycle.tick().await.unwrap();
        assert_eq!((out.fetched, out.rewritten), (false, 0));
        // A server-side change not announced by last_updated is not seen...
        api.policies.lock().unwrap().clear();
        assert_eq!(cycle.tick().await.unwrap().rewritten, 0);
        // ... until it is.
        *api.last_updated.lock().unwrap() = Some(11);
        let out = cycle.tick().await.unwrap();
        assert!(out.fetched && out.rewritten > 0 && out.rules == 0);
        assert_eq!(ipt.payloads().len(), 2);
    }

    #[tokio::test]
    async fn without_a_policy_change_deleted_containers_and_logging_apply_within_one_tick() {
        let (_dir, api, ipt, cycle) = setup();
        *api.last_updated.lock().unwrap() = Some(10);
        cycle.tick().await.unwrap();
        // The logging switch: back's chain gets its LOG rule at the next tick.
        cycle.c2c_logging.store(true, Ordering::SeqCst);
        let out = cycle.tick().await.unwrap();
        assert_eq!((out.fetched, out.rewritten), (false, 1));
        let p = payload(&ipt, 1);
        assert!(p.starts_with("*filter\n:vpa-d-back - [0:0]\n"), "{p}");
        assert!(
            p.contains(" -j LOG --log-prefix \"OK_0001_back \"\n"),
            "{p}"
        );
        // back's container is deleted: its jump and chain go at the next tick.
        cycle.ports.store.delete("h-back").unwrap();
        let out = cycle.tick().await.unwrap();
        assert_eq!((out.fetched, out.rules), (false, 1));
        let p = payload(&ipt, 2);
        assert!(
            p.contains("-X vpa-d-back\n") && !p.contains("10.255.7.4"),
            "{p}"
        );
        // A new container of a group the last fetch did not cover is fetched for.
        cycle
            .ports
            .store
            .add(
                "h-new",
                "10.255.7.9",
                None,
                json!({"policy_group_id": "newgroup"}),
            )
            .unwrap();
        assert!(cycle.tick().await.unwrap().fetched);
        assert_eq!(api.asked.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn chains_changed_by_someone_else_are_rewritten_at_the_next_tick() {
        let (_dir, api, ipt, cycle) = setup();
        *api.last_updated.lock().unwrap() = Some(10);
        let first = cycle.tick().await.unwrap();
        // Someone flushed the main chain and deleted the group chain and the jump: the
        // generation moved, the table is read and everything is written again.
        *ipt.saved.lock().unwrap() = format!(
            "*filter\n:FORWARD ACCEPT [0:0]\n:{} - [0:0]\nCOMMIT\n",
            first.chain
        );
        *ipt.generation.lock().unwrap() = Some(100);
        let out = cycle.tick().await.unwrap();
        assert_eq!((out.fetched, out.read, out.rewritten), (false, true, 2));
        let p = payload(&ipt, 1);
        assert!(
            p.contains(&format!("-I FORWARD 1 -j {}\n", first.chain)),
            "{p}"
        );
        assert_eq!(out.chain, first.chain);
    }

    #[tokio::test]
    async fn a_malformed_container_does_not_stop_the_others() {
        let (_dir, _api, ipt, cycle) = setup();
        cycle
            .ports
            .store
            .add(
                "h-bad",
                "10.255.7",
                None,
                json!({"policy_group_id": "front"}),
            )
            .unwrap();
        cycle
            .ports
            .store
            .add("h-weird", "10.255.7.8", None, json!({"policy_group_id": 7}))
            .unwrap();
        let out = cycle.full().await.unwrap();
        assert_eq!(out.rules, 3);
        assert_eq!(cycle.ports.metrics.last_value("c2cPlanProblems"), Some(1.0));
        let p = payload(&ipt, 0);
        assert!(
            p.contains("-s 10.255.7.3/32 ") && !p.contains("10.255.7.8"),
            "{p}"
        );
    }

    #[tokio::test]
    async fn no_local_groups_means_no_request_and_an_empty_chain() {
        let (dir, api, ipt, _) = setup();
        let store = MetadataStore::new(dir.path().join("empty.json"), None);
        let cycle = cycle_over(
            &api,
            &ipt,
            store,
            CycleOptions {
                head_rules: vec!["-s 10.255.0.0/16 -d 10.255.0.0/16 -j ACCEPT".into()],
                ..CycleOptions::default()
            },
        );
        let out = cycle.full().await.unwrap();
        assert_eq!((out.rules, out.rewritten), (0, 1));
        assert!(api.asked.lock().unwrap().is_empty());
        let payload = &ipt.payloads()[0].1;
        assert!(
            payload.contains(" -s 10.255.0.0/16 -d 10.255.0.0/16 -j ACCEPT\n"),
            "{payload}"
        );
    }
}
