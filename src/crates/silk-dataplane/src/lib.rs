//! The data plane: desired-state models, pure planners that diff desired against actual state,
//! and the backends that apply a plan (netlink through rtnetlink, iptables through one
//! iptables-restore payload per change). Planners know no sockets; backends hold no policy.

pub mod atomicfile;
pub mod datastore;
pub mod filelock;
pub mod hostlocal;
pub mod ifaddrs;
pub mod iptables;
pub mod netlink;
#[cfg(test)]
mod proptests;
pub mod vtep;
