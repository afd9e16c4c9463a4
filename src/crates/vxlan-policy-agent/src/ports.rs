//! What the agent's cycles (c2c and ASG) work through, injected so tests hand in a fake policy
//! server and a recording iptables, and the two things both cycles do with them: read the
//! metadata store off the async threads and time their steps.

use std::sync::Arc;
use std::time::Instant;

use silk_dataplane::datastore::{Entries, MetadataStore, StoreError};
use silk_ops::Metrics;

/// The policy server, the kernel's iptables, the container metadata store and the metrics
/// sink of one cycle.
pub struct Ports<A, I: ?Sized> {
    pub api: A,
    pub iptables: Arc<I>,
    pub store: MetadataStore,
    pub metrics: Metrics,
}

impl<A, I: ?Sized> Ports<A, I> {
    /// Every entry of the metadata store, read on a blocking thread; the read's duration is
    /// sent as `containerMetadataTime`.
    pub async fn read_store<E>(&self) -> Result<Entries, E>
    where
        E: From<StoreError> + From<tokio::task::JoinError>,
    {
        let t = Instant::now();
        let store = self.store.clone();
        let entries = tokio::task::spawn_blocking(move || store.read_all()).await??;
        self.time("containerMetadataTime", t);
        Ok(entries)
    }

    /// Sends the milliseconds since `since` as the gauge `name` (unit `ms`).
    pub fn time(&self, name: &str, since: Instant) {
        self.metrics
            .value(name, since.elapsed().as_secs_f64() * 1000.0, "ms");
    }
}
