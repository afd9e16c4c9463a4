//! Dynamic ASG syncing (policy contract §3.7): application security groups from the policy
//! server turned into one `asg-<handle>` chain per local container, jumped to from the
//! container's `netout--<handle>` chain.
//!
//! [`convert`] turns ASG rules into iptables match text, [`planner`] plans the chains of every
//! container against the saved filter table (pure; the benchmark's entry point is
//! [`planner::plan_asgs`]), [`cycle`] fetches, plans and applies: the periodic poll, the forced
//! sync of one container and the cleanup of one handle.

pub mod convert;
pub mod cycle;
pub mod planner;
pub mod skip;

pub use cycle::{AsgApi, AsgCycle, AsgCycleError, AsgOutcome};
pub use planner::{plan_asgs, plan_cleanup, AsgOptions, AsgPlan, Scope};
