//! The c2c policy cycle (policy contract §3.3): read the metadata store, ask the policy server
//! for the policies of the local groups, plan the chain, and swap it in only when the planned
//! rules differ from the last rules this process enforced.
//!
//! The periodic tick first asks `policies_last_updated` and skips the cycle when nothing changed
//! since the last successful cycle. Unlike upstream, the remote timestamp is remembered only
//! after the cycle succeeded, so a failed cycle is retried at the next tick instead of leaving
//! the cell stale until the next policy change.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use silk_client::{ClientError, PolicyClient};
use silk_core::policy::Policy;
use silk_dataplane::datastore::{MetadataStore, StoreError};
use silk_dataplane::iptables::Iptables;
use silk_ops::Metrics;

use crate::enforcer::{enforce, EnforceError};
use crate::planner::{group_ids, local_containers, plan_rules, PlanError, PlanOptions};

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
    #[error("plan c2c rules: {0}")]
    Plan(#[from] PlanError),
    #[error("enforce c2c rules: {0}")]
    Enforce(#[from] EnforceError),
    #[error("background task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What a cycle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `policies_last_updated` showed no change.
    Skipped,
    /// The planned rules equal the last enforced ones.
    Unchanged,
    /// A new chain was swapped in.
    Enforced { chain: String, rules: usize },
}

/// Static settings of the cycle.
#[derive(Debug, Clone, Default)]
pub struct CycleOptions {
    pub accepted_udp_logs_per_sec: u32,
    pub enable_overlay_ingress_rules: bool,
    /// Rules put first in every chain (`disable_container_network_policy`); not part of the
    /// change check, as upstream.
    pub head_rules: Vec<String>,
}

pub struct C2cCycle<A, I: ?Sized> {
    api: A,
    iptables: Arc<I>,
    store: MetadataStore,
    metrics: Metrics,
    opts: CycleOptions,
    /// `iptables_c2c_logging`, switched at runtime by the debug server's
    /// `/iptables-c2c-logging`; read at every full cycle.
    c2c_logging: Arc<AtomicBool>,
    /// The last `policies_last_updated` value after which a cycle succeeded (0: none).
    last_updated: AtomicI64,
    /// The rules last enforced; the lock also serialises cycles (tick and forced).
    enforced: tokio::sync::Mutex<Option<Vec<String>>>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

impl<A: PolicyApi, I: Iptables + ?Sized + 'static> C2cCycle<A, I> {
    pub fn new(
        api: A,
        iptables: Arc<I>,
        store: MetadataStore,
        metrics: Metrics,
        opts: CycleOptions,
        c2c_logging: Arc<AtomicBool>,
    ) -> Self {
        C2cCycle {
            api,
            iptables,
            store,
            metrics,
            opts,
            c2c_logging,
            last_updated: AtomicI64::new(0),
            enforced: tokio::sync::Mutex::new(None),
        }
    }

    /// The periodic tick: a full cycle unless `policies_last_updated` shows no change since
    /// the last successful cycle. An error from that call runs the full cycle anyway.
    pub async fn tick(&self) -> Result<Outcome, CycleError> {
        let remote = match self.api.policies_last_updated().await {
            Ok(v) => Some(v),
            Err(e) => {
                silk_ops::log::info(
                    "policies-last-updated",
                    json!({ "error": e.to_string(), "action": "running full cycle" }),
                );
                None
            }
        };
        let seen = self.last_updated.load(Ordering::SeqCst);
        if let Some(r) = remote {
            if seen != 0 && r <= seen {
                silk_ops::log::debug("skipping-poll-cycle", json!({ "last_updated": seen }));
                return Ok(Outcome::Skipped);
            }
        }
        let out = self.full().await?;
        if let Some(r) = remote {
            self.last_updated.fetch_max(r, Ordering::SeqCst);
        }
        Ok(out)
    }

    /// A full cycle (the forced cycle too): read, fetch, plan, enforce when changed.
    pub async fn full(&self) -> Result<Outcome, CycleError> {
        let mut enforced = self.enforced.lock().await;
        let start = Instant::now();

        let t = Instant::now();
        let store = self.store.clone();
        let entries = tokio::task::spawn_blocking(move || store.read_all()).await??;
        self.metrics.value("containerMetadataTime", ms(t), "ms");
        let containers = local_containers(&entries);

        let t = Instant::now();
        let ids = group_ids(&containers);
        let policies = if ids.is_empty() {
            Vec::new()
        } else {
            self.api
                .policies(&ids)
                .await
                .map_err(CycleError::Policies)?
        };
        let ingress_tag = if self.opts.enable_overlay_ingress_rules && !ids.is_empty() {
            Some(
                self.api
                    .ingress_router_tag()
                    .await
                    .map_err(CycleError::Tag)?,
            )
        } else {
            None
        };
        self.metrics.value("policyServerPollTime", ms(t), "ms");

        let opts = PlanOptions {
            c2c_logging: self.c2c_logging.load(Ordering::SeqCst),
            accepted_udp_logs_per_sec: self.opts.accepted_udp_logs_per_sec,
            ingress_tag,
        };
        let rules = plan_rules(&containers, &policies, &opts)?;

        let t = Instant::now();
        let outcome = if enforced.as_ref() == Some(&rules) {
            silk_ops::log::debug("c2c-rules-unchanged", json!({ "rules": rules.len() }));
            Outcome::Unchanged
        } else {
            let iptables = Arc::clone(&self.iptables);
            let head = self.opts.head_rules.clone();
            let planned = rules.clone();
            let chain = tokio::task::spawn_blocking(move || {
                enforce(iptables.as_ref(), now_us(), &head, &planned)
            })
            .await??;
            silk_ops::log::info(
                "enforced-c2c-rules",
                json!({ "chain": chain.as_str(), "rules": rules.len(), "containers": containers.len() }),
            );
            let n = rules.len();
            *enforced = Some(rules);
            Outcome::Enforced {
                chain: chain.as_str().to_string(),
                rules: n,
            }
        };
        self.metrics.value("iptablesEnforceTime", ms(t), "ms");
        self.metrics.value("totalPollTime", ms(start), "ms");
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use silk_core::policy::PoliciesResponse;
    use silk_dataplane::iptables::RecordingIptables;

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
        let cycle = C2cCycle::new(
            Arc::clone(&api),
            Arc::clone(&ipt),
            store,
            Metrics::new("vxlan-policy-agent", 0),
            CycleOptions {
                accepted_udp_logs_per_sec: 100,
                ..CycleOptions::default()
            },
            Arc::new(AtomicBool::new(false)),
        );
        (dir, api, ipt, cycle)
    }

    #[tokio::test]
    async fn enforces_once_then_only_on_change() {
        let (_dir, api, ipt, cycle) = setup();
        // front's mark rule and back's accept rule
        assert!(matches!(
            cycle.full().await.unwrap(),
            Outcome::Enforced { rules: 2, .. }
        ));
        assert_eq!(
            api.asked.lock().unwrap()[0],
            vec!["back".to_string(), "front".into(), "s".into()]
        );
        assert_eq!(cycle.full().await.unwrap(), Outcome::Unchanged);
        assert_eq!(ipt.payloads().len(), 1);
        api.policies.lock().unwrap().clear();
        assert!(matches!(
            cycle.full().await.unwrap(),
            Outcome::Enforced { rules: 0, .. }
        ));
        assert_eq!(ipt.payloads().len(), 2);
        assert!(cycle.metrics.last_value("totalPollTime").is_some());
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
    async fn ticks_are_gated_by_last_updated_and_retried_after_failure() {
        let (_dir, api, ipt, cycle) = setup();
        // No last_updated route: every tick is a full cycle.
        assert!(matches!(
            cycle.tick().await.unwrap(),
            Outcome::Enforced { .. }
        ));
        assert_eq!(cycle.tick().await.unwrap(), Outcome::Unchanged);
        *api.last_updated.lock().unwrap() = Some(10);
        // The policy server fails once: the tick fails and the next one tries again.
        api.down.store(true, Ordering::SeqCst);
        assert!(cycle.tick().await.is_err());
        api.down.store(false, Ordering::SeqCst);
        assert_eq!(cycle.tick().await.unwrap(), Outcome::Unchanged);
        assert_eq!(cycle.tick().await.unwrap(), Outcome::Skipped);
        api.policies.lock().unwrap().clear();
        assert_eq!(cycle.tick().await.unwrap(), Outcome::Skipped);
        *api.last_updated.lock().unwrap() = Some(11);
        assert!(matches!(
            cycle.tick().await.unwrap(),
            Outcome::Enforced { rules: 0, .. }
        ));
        assert_eq!(ipt.payloads().len(), 2);
    }

    #[tokio::test]
    async fn no_local_groups_means_no_request_and_an_empty_chain() {
        let (dir, api, ipt, _) = setup();
        let store = MetadataStore::new(dir.path().join("empty.json"), None);
        let cycle = C2cCycle::new(
            Arc::clone(&api),
            Arc::clone(&ipt),
            store,
            Metrics::new("vxlan-policy-agent", 0),
            CycleOptions {
                head_rules: vec!["-s 10.255.0.0/16 -d 10.255.0.0/16 -j ACCEPT".into()],
                ..CycleOptions::default()
            },
            Arc::new(AtomicBool::new(false)),
        );
        assert!(matches!(
            cycle.full().await.unwrap(),
            Outcome::Enforced { rules: 0, .. }
        ));
        assert!(api.asked.lock().unwrap().is_empty());
        let payload = &ipt.payloads()[0].1;
        assert!(
            payload.contains(" -s 10.255.0.0/16 -d 10.255.0.0/16 -j ACCEPT\n"),
            "{payload}"
        );
    }
}
