//! The poll loop (control-plane contract §5.6): renew, list, then converge the VTEP as
//! plan-then-apply: read the actual state once (one dump per object kind), plan against the
//! list, apply nothing when nothing changed. Removals follow the rule in [`crate::retention`].
//!
//! The dumps are skipped when they cannot find anything: the lease list is the one the last
//! dump found fully converged (nothing to add, remove or hold back), and the kernel has sent
//! no notification about the VTEP since
//! ([`silk_dataplane::netlink::monitor::ChangeMonitor`]). Our own writes notify too, so
//! every apply is followed by a verifying dump; and a dump runs at least every
//! [`FULL_CHECK_INTERVAL`] whatever the notifications say.
//!
//! The kernel is reached through the [`VtepBackend`] port ([`NetlinkVtep`] in the daemon), so
//! these decisions are table-tested against a recording backend (`cycle_tests.rs`).

use std::time::{Duration, Instant};

use serde_json::json;
use silk_client::{ClientError, ControllerClient};
use silk_core::Lease;
use silk_dataplane::netlink::NetlinkError;
use silk_dataplane::vtep::plan::{plan_desired, DesiredVtep};
use silk_dataplane::vtep::{desired_from_leases, LocalVtep, NetlinkVtep, VtepBackend};
use silk_ops::{log, Metrics};

use crate::retention::Retention;

/// Ends the daemon: exit 1 with
/// `This cell must be restarted (run "bosh restart <job>"): fatal: renew lease: <err>`.
#[derive(Debug, thiserror::Error)]
#[error("renew lease: {0}")]
pub struct FatalRenew(#[source] pub ClientError);

#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    #[error("vtep {0} not found")]
    VtepMissing(String),
    #[error("converge leases: {0}")]
    Netlink(#[from] NetlinkError),
}

/// What one cycle did, for logs and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleReport {
    pub renewed: bool,
    pub listed: Option<usize>,
    pub applied: usize,
    pub trusted: bool,
}

/// The longest a steady daemon goes without reading the kernel's state.
pub const FULL_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// What the last dump found converged.
struct Verified {
    index: u32,
    desired: DesiredVtep,
    trusted: bool,
    at: Instant,
}

/// Converges the VTEP for a lease list through a [`VtepBackend`], skipping the dumps when
/// they cannot find anything.
pub struct Converger<B> {
    backend: B,
    vtep_name: String,
    local: LocalVtep,
    retention: Retention,
    verified: Option<Verified>,
}

/// The poll loop: renew, list, converge.
pub struct Poller<B = NetlinkVtep> {
    client: ControllerClient,
    converger: Converger<B>,
    lease: Lease,
    metrics: Metrics,
    partition_tolerance: Duration,
    last_renew: Instant,
}

impl<B: VtepBackend> Poller<B> {
    pub fn new(
        client: ControllerClient,
        backend: B,
        vtep_name: String,
        lease: Lease,
        local: LocalVtep,
        metrics: Metrics,
        partition_tolerance: Duration,
    ) -> Self {
        Poller {
            client,
            converger: Converger::new(backend, vtep_name, local),
            lease,
            metrics,
            partition_tolerance,
            last_renew: Instant::now(),
        }
    }

    /// Runs cycles every `interval` (end of one to start of the next; the first at once)
    /// until a renew failure becomes fatal.
    pub async fn run(mut self, interval: Duration) -> FatalRenew {
        loop {
            let started = Instant::now();
            match self.cycle().await {
                Err(fatal) => return fatal,
                Ok(r) => log::debug(
                    "poll-cycle-done",
                    json!({
                        "elapsed_us": started.elapsed().as_micros() as u64,
                        "leases": r.listed,
                        "applied": r.applied,
                        "trusted": r.trusted,
                    }),
                ),
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// One cycle. Only a fatal renew failure is an error; everything else is logged here.
    pub async fn cycle(&mut self) -> Result<CycleReport, FatalRenew> {
        let mut report = CycleReport::default();
        if let Err(e) = self.client.renew(&self.lease).await {
            self.metrics.incr("renewFailure");
            if e.is_non_retriable() || self.last_renew.elapsed() >= self.partition_tolerance {
                return Err(FatalRenew(e));
            }
            log::error("poll-cycle", json!({"error": format!("renew lease: {e}")}));
            return Ok(report);
        }
        self.last_renew = Instant::now();
        self.metrics.incr("renewSuccess");
        log::debug("renew-lease", json!({"lease": self.lease}));
        report.renewed = true;

        let leases = match self.client.list().await {
            Ok(l) => l,
            Err(e) => {
                log::error(
                    "poll-cycle",
                    json!({"error": format!("get routable leases: {e}")}),
                );
                return Ok(report);
            }
        };
        report.listed = Some(leases.len());
        self.metrics.value("numberLeases", leases.len() as f64, "");
        match self.converger.converge(&leases).await {
            Ok((applied, trusted)) => {
                report.applied = applied;
                report.trusted = trusted;
                self.metrics.incr("convergeSuccess");
            }
            Err(e) => {
                self.metrics.incr("convergeFailure");
                log::error("poll-cycle", json!({"error": e.to_string()}));
            }
        }
        Ok(report)
    }
}

impl<B: VtepBackend> Converger<B> {
    pub fn new(backend: B, vtep_name: String, local: LocalVtep) -> Self {
        Converger {
            backend,
            vtep_name,
            local,
            retention: Retention::default(),
            verified: None,
        }
    }

    /// The backend, for tests to inspect.
    pub fn backend(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Plans and applies the VTEP for `leases`; returns (operations applied, list trusted).
    pub async fn converge(&mut self, leases: &[Lease]) -> Result<(usize, bool), ConvergeError> {
        self.converge_at(leases, Instant::now()).await
    }

    /// [`Self::converge`] at time `now` (the full check interval is measured with it).
    pub async fn converge_at(
        &mut self,
        leases: &[Lease],
        now: Instant,
    ) -> Result<(usize, bool), ConvergeError> {
        let started = Instant::now();
        let index = self
            .backend
            .link_index(&self.vtep_name)
            .await?
            .ok_or_else(|| ConvergeError::VtepMissing(self.vtep_name.clone()))?;
        let kernel_changed = self.backend.kernel_changed(index);
        let desired = desired_from_leases(leases, &self.local);
        let trusted = leases.iter().filter_map(|l| l.subnet().ok()).any(|s| {
            s.network() == self.local.subnet.network() && s.prefix() == self.local.subnet.prefix()
        });
        let unchanged = self.verified.as_ref().is_some_and(|v| {
            v.index == index
                && v.trusted == trusted
                && now.saturating_duration_since(v.at) < FULL_CHECK_INTERVAL
                && v.desired == desired
        });
        if unchanged && !kernel_changed {
            log::debug(
                "converge-leases",
                json!({"leases": leases.len(), "changes": 0, "kernel": "unchanged since last check"}),
            );
            return Ok((0, trusted));
        }
        self.verified = None;
        let actual = self.backend.read_state(index).await?;
        let policy = self.retention.policy(trusted, &desired, &actual);
        let plan = plan_desired(&desired, &self.local, &actual, &policy);
        if desired.non_routable > 0 {
            log::info(
                "converger",
                json!({"non-routable-lease-count": desired.non_routable}),
            );
        }
        if !trusted {
            log::debug(
                "converge-leases",
                json!({"removals": "suppressed: list does not contain our lease"}),
            );
        }
        if plan.is_empty() {
            log::debug(
                "converge-leases",
                json!({"leases": leases.len(), "changes": 0}),
            );
            if policy.keep.is_empty() {
                self.verified = Some(Verified {
                    index,
                    desired,
                    trusted,
                    at: now,
                });
            }
            return Ok((0, trusted));
        }
        let applied = self.backend.apply(index, &plan).await?;
        log::info(
            "converge-leases",
            json!({
                "leases": leases.len(),
                "upserted": plan.upsert_routes.len() + plan.upsert_arp.len() + plan.upsert_fdb.len(),
                "removed": plan.remove_routes.len() + plan.remove_arp.len() + plan.remove_fdb.len(),
                "held_back": policy.keep.len(),
                "elapsed_ms": started.elapsed().as_millis() as u64,
            }),
        );
        Ok((applied, trusted))
    }
}

#[cfg(test)]
#[path = "cycle_tests.rs"]
mod tests;
