//! silk-datastore-syncer (cni.md §5.2): every N seconds, lists garden's containers and copies
//! each one's `log_config` property into the container metadata store when it differs, so
//! vxlan-policy-agent can send app logs for security-group changes.

pub mod config;
pub mod garden;
#[cfg(test)]
mod proptests;
pub mod sync;
