//! The lab: the fabric on one machine ([`fabric`]: underlay, cells, processes and configs
//! rendered from the release's templates; also the tests' multi-cell bed), and the parts of it that stand in for Cloud Foundry
//! components outside this release (the lab policy server). Lab and test parts, never shipped
//! in the BOSH release.

pub mod fabric;
pub mod lab;
pub mod policy_server;
