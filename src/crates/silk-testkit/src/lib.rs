//! Fixtures for the gated test tiers and the lab: network namespaces, the multi-cell test bed,
//! certificates and PostgreSQL databases. A dev-dependency of the other crates, never shipped.

pub mod certs;
pub mod netns;
pub mod postgres;
pub mod testbed;
