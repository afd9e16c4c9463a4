//! Silk domain types shared by every component: leases and their wire shape, overlay networks
//! (one CIDR or a list), MAC derivation, the policy server's internal API bodies (policies, security groups). Pure data and arithmetic; nothing here does I/O.

pub mod asg;
pub mod lease;
pub mod lease_table;
pub mod network;
pub mod policy;
#[cfg(test)]
mod proptests;

pub use lease::{HardwareAddr, Lease, LeaseError};
pub use lease_table::{LeaseRef, LeaseTable};
pub use network::{NetworkError, NetworkSpec, OverlayNetworks};
