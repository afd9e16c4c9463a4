//! vxlan-policy-agent: enforces container-to-container policy on a Silk cell.
//!
//! Every `poll_interval` (and whenever cni-wrapper-plugin forces it) the agent reads the local
//! containers from the metadata store, asks the policy server which policies concern their
//! groups, plans the rules of a `vpa--<µs timestamp>` chain ([`planner`]) and swaps that chain
//! in behind `FORWARD` position 1 in one `iptables-restore` ([`enforcer`]), only when the rules
//! changed ([`cycle`]). [`server`] is the local force endpoint, [`agent`] the process.

pub mod agent;
pub mod config;
pub mod cycle;
pub mod enforcer;
pub mod planner;
#[cfg(test)]
mod proptests;
pub mod server;
