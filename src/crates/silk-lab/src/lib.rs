//! The lab: the fabric on one machine, and the parts of it that stand in for Cloud Foundry
//! components outside this release (the lab policy server). Lab and test parts, never shipped
//! in the BOSH release.

pub mod policy_server;
