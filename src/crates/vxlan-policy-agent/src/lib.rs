//! vxlan-policy-agent: enforces container-to-container policy on a Silk cell.
//!
//! Every `poll_interval` (and whenever cni-wrapper-plugin forces it) the agent reads the local
//! containers from the metadata store, asks the policy server which policies concern their
//! groups (the fetch is skipped while `policies_last_updated` shows no change), plans the
//! `vpa--<µs timestamp>` chain jumped from `FORWARD` position 1 and one `vpa-d-<group>` chain
//! per local destination group ([`planner`]), and writes what differs from the kernel's actual
//! chains in one `iptables-restore` ([`enforcer`], [`cycle`]). [`asg`] syncs ASGs, [`server`]
//! is the local force endpoint, [`agent`] the process.

pub mod agent;
pub mod asg;
pub mod config;
pub mod cycle;
pub mod enforcer;
pub mod planner;
pub mod ports;
#[cfg(test)]
mod proptests;
pub mod server;
