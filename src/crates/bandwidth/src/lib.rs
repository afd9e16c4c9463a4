//! `bandwidth`: the reference bandwidth plugin's behaviour (cni.md §3.12) for the chained
//! conflist entry. Traffic into the container is shaped by a TBF root qdisc on the host veth;
//! traffic out of it is redirected from the host veth's ingress to an IFB device (`bwp` + 12 hex
//! chars of SHA-512(network name + container ID)) whose TBF root qdisc shapes it.

pub mod plan;
pub mod plugin;
#[cfg(test)]
mod proptests;

pub use plugin::Bandwidth;
