//! The wrapper's side effects, one narrow trait each, injected into [`crate::orchestrate`]:
//! the delegate plugin ([`Delegate`]), vxlan-policy-agent's local endpoints ([`PolicyAgent`])
//! and the container metadata store ([`ContainerStore`]); iptables goes through silk-dataplane's
//! [`silk_dataplane::iptables::Iptables`]. The real implementations are here too; the unit
//! tests of the orchestration use recording ones.

use std::time::Duration;

use serde_json::Value;
use silk_cni_skel::{delegate, CmdArgs, CniError, CniResult};
use silk_dataplane::datastore::{Container as StoreEntry, Entries, MetadataStore, StoreError};

/// The delegate plugin (`silk-cni`), run with the wrapper's own CNI environment.
pub trait Delegate: Sync {
    fn add(&self) -> Result<CniResult, CniError>;
    fn del(&self) -> Result<(), CniError>;
}

/// An answer of vxlan-policy-agent: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentAnswer {
    pub status: u16,
    pub body: String,
}

/// vxlan-policy-agent's local endpoints.
pub trait PolicyAgent: Sync {
    /// `GET http://<policy_agent_force_poll_address><path>`; `Err` when no answer came (the
    /// transport error's text is what the ADD or DEL reports, as upstream's).
    fn get(&self, path: &str) -> Result<AgentAnswer, CniError>;
}

/// The container metadata store (cni.md §4.14).
pub trait ContainerStore: Sync {
    fn read_all(&self) -> Result<Entries, StoreError>;
    /// Adds or replaces `entry` unless `refuse`, shown the entries under the store lock,
    /// returns a reason; then nothing is written and the reason comes back.
    fn add_unless(
        &self,
        entry: &StoreEntry,
        refuse: &dyn Fn(&Entries) -> Option<String>,
    ) -> Result<Result<(), String>, StoreError>;
    /// Removes `handle`, returning its entry when there was one.
    fn delete(&self, handle: &str) -> Result<Option<StoreEntry>, StoreError>;
}

// === impl ExecDelegate ===

/// The delegate binary from `CNI_PATH`, its stdin the config's `delegate` object.
pub struct ExecDelegate<'a> {
    pub plugin_type: &'a str,
    pub args: &'a CmdArgs,
    pub stdin: Vec<u8>,
}

impl Delegate for ExecDelegate<'_> {
    fn add(&self) -> Result<CniResult, CniError> {
        delegate::add(self.plugin_type, self.args, &self.stdin)
    }

    fn del(&self) -> Result<(), CniError> {
        delegate::del(self.plugin_type, self.args, &self.stdin)
    }
}

// === impl HttpAgent ===

/// The agent over plain HTTP on the cell, each call bounded (upstream's had no timeout).
pub struct HttpAgent<'a> {
    pub addr: &'a str,
    pub timeout: Duration,
}

impl PolicyAgent for HttpAgent<'_> {
    fn get(&self, path: &str) -> Result<AgentAnswer, CniError> {
        silk_cni_skel::http::get(self.addr, path, self.timeout)
            .map(|r| AgentAnswer {
                status: r.status,
                body: r.body,
            })
            .map_err(|e| CniError::internal(e.to_string()))
    }
}

// === impl ContainerStore for MetadataStore ===

impl ContainerStore for MetadataStore {
    fn read_all(&self) -> Result<Entries, StoreError> {
        MetadataStore::read_all(self)
    }

    fn add_unless(
        &self,
        entry: &StoreEntry,
        refuse: &dyn Fn(&Entries) -> Option<String>,
    ) -> Result<Result<(), String>, StoreError> {
        let ipv6 = entry.ipv6.as_deref().filter(|s| !s.is_empty());
        MetadataStore::add_unless(
            self,
            &entry.handle,
            &entry.ip,
            ipv6,
            entry.metadata.clone(),
            refuse,
        )
    }

    fn delete(&self, handle: &str) -> Result<Option<StoreEntry>, StoreError> {
        MetadataStore::delete(self, handle)
    }
}

/// The store entry an ADD writes: the garden metadata, `null` when there is none.
pub fn store_entry(handle: &str, ip: &str, ipv6: Option<&str>, metadata: Value) -> StoreEntry {
    StoreEntry {
        handle: handle.into(),
        ip: ip.into(),
        ipv6: Some(ipv6.unwrap_or("").to_string()),
        metadata,
    }
}
