//! The ASG cycle with a fake policy server and recorded iptables.
use super::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde_json::json;
use silk_core::asg::SecurityGroupsResponse;
use silk_dataplane::datastore::MetadataStore;
use silk_dataplane::iptables::RecordingIptables;
use silk_ops::Metrics;

const SPACE: &str = "7d2c0e5a-9b1f-4a3c-8e6d-2f1a0b9c8d7e";
const H: &str = "6f1e4f5a-1b2c-4d3e-8f9a-0b1c2d3e4f5a";

#[derive(Default)]
struct FakeApi {
    groups: Mutex<Vec<SecurityGroup>>,
    last_updated: Mutex<Option<i64>>,
    down: AtomicBool,
    asked: Mutex<Vec<Vec<String>>>,
}

impl AsgApi for Arc<FakeApi> {
    async fn security_groups(&self, spaces: &[String]) -> Result<Vec<SecurityGroup>, ClientError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ClientError::Status {
                code: 500,
                text: "database read failed".into(),
            });
        }
        self.asked.lock().unwrap().push(spaces.to_vec());
        Ok(self.groups.lock().unwrap().clone())
    }

    async fn security_groups_last_updated(&self) -> Result<i64, ClientError> {
        (*self.last_updated.lock().unwrap()).ok_or(ClientError::Status {
            code: 404,
            text: "404 page not found".into(),
        })
    }
}

fn cycle_of<I: Iptables + 'static>(
    api: &Arc<FakeApi>,
    ipt: &Arc<I>,
    store: MetadataStore,
) -> AsgCycle<Arc<FakeApi>, I> {
    let metrics = Metrics::new("vxlan-policy-agent", 0);
    let opts = AsgOptions::default();
    AsgCycle::new(
        Ports {
            api: Arc::clone(api),
            iptables: Arc::clone(ipt),
            store,
            metrics,
        },
        opts,
        false,
    )
}

fn setup() -> (
    tempfile::TempDir,
    Arc<FakeApi>,
    Arc<RecordingIptables>,
    AsgCycle<Arc<FakeApi>, RecordingIptables>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = MetadataStore::new(dir.path().join("store.json"), None);
    store
        .add(
            H,
            "10.255.7.4",
            None,
            json!({"policy_group_id": "app", "space_id": SPACE, "container_workload": "app"}),
        )
        .unwrap();
    let api = Arc::new(FakeApi::default());
    let body = include_str!("../../tests/fixtures/asg/security-groups.json");
    *api.groups.lock().unwrap() = serde_json::from_str::<SecurityGroupsResponse>(body)
        .unwrap()
        .security_groups;
    let ipt = Arc::new(RecordingIptables::default());
    *ipt.saved.lock().unwrap() = format!(
        "*filter\n:FORWARD ACCEPT [0:0]\n:{0} - [0:0]\n-A {0} -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n",
        silk_dataplane::iptables::ChainName::netout(H)
    );
    let cycle = cycle_of(&api, &ipt, store);
    (dir, api, ipt, cycle)
}

#[tokio::test]
async fn polls_fetch_for_local_spaces_and_write_one_restore() {
    let (_dir, api, ipt, cycle) = setup();
    let out = cycle.poll().await.unwrap();
    assert_eq!(out.updated, vec![H]);
    assert_eq!(out.restores, 1);
    assert_eq!(api.asked.lock().unwrap()[0], vec![SPACE]);
    assert_eq!(ipt.payloads().len(), 1);
    assert!(cycle.ports.metrics.last_value("asgTotalPollTime").is_some());
    assert!(cycle
        .ports
        .metrics
        .last_value("policyServerASGPollTime")
        .is_some());
}

#[tokio::test]
async fn an_unchanged_last_updated_skips_the_fetch_but_not_the_reconcile() {
    let (_dir, api, ipt, cycle) = setup();
    *api.last_updated.lock().unwrap() = Some(7);
    cycle.poll().await.unwrap();
    cycle.poll().await.unwrap();
    assert_eq!(
        api.asked.lock().unwrap().len(),
        1,
        "second poll used the last answer"
    );
    // The recorded table never changes, so the second poll found the chain missing again.
    assert_eq!(ipt.payloads().len(), 2);
    *api.last_updated.lock().unwrap() = Some(8);
    cycle.poll().await.unwrap();
    assert_eq!(api.asked.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_failed_fetch_changes_nothing_and_is_counted() {
    let (_dir, api, ipt, cycle) = setup();
    api.down.store(true, Ordering::SeqCst);
    let err = cycle.poll().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "get security groups: http status 500: database read failed"
    );
    assert!(ipt.payloads().is_empty());
    assert_eq!(cycle.ports.metrics.counter_total(POLL_FAILURES), 1);
    api.down.store(false, Ordering::SeqCst);
    assert_eq!(cycle.poll().await.unwrap().restores, 1);
}

#[tokio::test]
async fn forced_sync_and_cleanup() {
    let (dir, api, ipt, cycle) = setup();
    let out = cycle.sync_container(H).await.unwrap();
    assert_eq!(out.updated, vec![H]);
    assert!(
        cycle.ports.metrics.last_value("asgTotalPollTime").is_none(),
        "periodic only"
    );
    // Unknown handles: nothing to fetch or write.
    let out = cycle.sync_container("nope").await.unwrap();
    assert_eq!(
        out,
        AsgOutcome {
            read: true,
            ..AsgOutcome::default()
        }
    );
    // A container the wrapper has not wired (no netout chain) is an error.
    *ipt.saved.lock().unwrap() = "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n".into();
    let err = cycle.sync_container(H).await.unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(api.asked.lock().unwrap().len(), 2);
    assert!(matches!(
        cycle.cleanup_container(H).await,
        Err(AsgCycleError::Live(_))
    ));
    MetadataStore::new(dir.path().join("store.json"), None)
        .delete(H)
        .unwrap();
    let out = cycle.cleanup_container(H).await.unwrap();
    assert!(
        out.removed.is_empty(),
        "the recorded table has no asg chain"
    );
    assert_eq!(ipt.payloads().len(), 1);
}

/// Refuses every restore that mentions `refuse`, as iptables refuses a rule it cannot load.
struct PickyIptables {
    inner: RecordingIptables,
    refuse: String,
}

impl Iptables for PickyIptables {
    fn lock(&self) -> Result<silk_dataplane::iptables::LockGuard, IptablesError> {
        self.inner.lock()
    }

    fn save(&self, family: Family, table: Option<Table>) -> Result<String, IptablesError> {
        self.inner.save(family, table)
    }

    fn restore(&self, family: Family, payload: &str) -> Result<(), IptablesError> {
        if payload.contains(&self.refuse) {
            return Err(IptablesError::Failed {
                bin: "iptables-restore",
                stderr: "line 3 failed".into(),
            });
        }
        self.inner.restore(family, payload)
    }
}

#[tokio::test]
async fn a_restore_iptables_refuses_fails_only_its_container() {
    let (dir, api, _, _) = setup();
    let other = "1d2e3f4a-5b6c-4d7e-8f90-a1b2c3d4e5f6";
    let store = MetadataStore::new(dir.path().join("store.json"), None);
    store
        .add(
            other,
            "10.255.7.3",
            None,
            json!({"policy_group_id": "b", "space_id": "s2", "container_workload": "app"}),
        )
        .unwrap();
    let netout = |h: &str| silk_dataplane::iptables::ChainName::netout(h);
    let ipt = Arc::new(PickyIptables {
        inner: RecordingIptables::default(),
        refuse: silk_dataplane::iptables::ChainName::asg(H).to_string(),
    });
    *ipt.inner.saved.lock().unwrap() = format!(
        "*filter\n:{} - [0:0]\n:{} - [0:0]\nCOMMIT\n",
        netout(H),
        netout(other)
    );
    let cycle = cycle_of(&api, &ipt, store);
    let out = cycle.poll().await.unwrap();
    assert_eq!(out.updated, vec![other]);
    assert_eq!(out.failed, vec![H]);
    assert_eq!(cycle.ports.metrics.counter_total(CONTAINER_FAILURES), 1);
    let written = ipt.inner.payloads();
    assert_eq!(written.len(), 1, "the other container's part alone");
    assert!(written[0]
        .1
        .contains(&format!(":{} - [0:0]", netout(other))));
}

#[tokio::test]
async fn with_a_generation_unchanged_polls_skip_the_read_and_a_change_plans_only_its_containers() {
    let (_dir, api, ipt, cycle) = setup();
    *ipt.generation.lock().unwrap() = Some(40);
    let out = cycle.poll().await.unwrap();
    assert_eq!((out.read, out.restores, out.planned), (true, 1, 1));
    assert_eq!(ipt.saves.load(Ordering::SeqCst), 1);
    // The agent's own restore moved the generation by one: the kernel is known.
    let out = cycle.poll().await.unwrap();
    assert_eq!((out.read, out.restores, out.planned), (false, 0, 0));
    assert_eq!(ipt.saves.load(Ordering::SeqCst), 1);
    // A change of the container's groups: planned alone against the remembered chains, no read.
    let first = ipt.payloads()[0].1.clone();
    api.groups.lock().unwrap().truncate(1);
    let out = cycle.poll().await.unwrap();
    assert_eq!((out.read, out.restores, out.planned), (false, 1, 1));
    assert_eq!(out.updated, vec![H]);
    assert_eq!(ipt.saves.load(Ordering::SeqCst), 1);
    let p = ipt.payloads()[1].1.clone();
    assert!(p.starts_with("*filter\n:asg-"), "{p}");
    assert!(
        !p.contains(":netout--"),
        "the parent is known as planned: {p}"
    );
    assert_ne!(p, first);
    // The same groups again: nothing to do.
    let out = cycle.poll().await.unwrap();
    assert_eq!((out.read, out.restores), (false, 0));
    // Someone else changed a table (the generation moved): read, reconcile, known again.
    *ipt.generation.lock().unwrap() = Some(100);
    let out = cycle.poll().await.unwrap();
    assert!(out.read);
    assert_eq!(ipt.saves.load(Ordering::SeqCst), 2);
    // (The recorded table never changes, so the read found the chain missing and wrote it.)
    assert_eq!(out.restores, 1);
    assert!(!cycle.poll().await.unwrap().read);
    // A forced sync writes: the next poll reads.
    cycle.sync_container(H).await.unwrap();
    assert!(cycle.poll().await.unwrap().read);
}

#[tokio::test]
async fn without_a_generation_every_poll_reads() {
    let (_dir, _api, ipt, cycle) = setup();
    cycle.poll().await.unwrap();
    cycle.poll().await.unwrap();
    assert!(cycle.poll().await.unwrap().read);
    assert_eq!(ipt.saves.load(Ordering::SeqCst), 3);
}
