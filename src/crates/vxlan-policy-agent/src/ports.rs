//! What the agent's cycles (c2c and ASG) work through, injected so tests hand in a fake policy
//! server and a recording iptables.

use std::sync::Arc;

use silk_dataplane::datastore::MetadataStore;
use silk_ops::Metrics;

/// The policy server, the kernel's iptables, the container metadata store and the metrics
/// sink of one cycle.
pub struct Ports<A, I: ?Sized> {
    pub api: A,
    pub iptables: Arc<I>,
    pub store: MetadataStore,
    pub metrics: Metrics,
}
