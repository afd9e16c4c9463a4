//! Fixtures for the gated test tiers and the lab: network namespaces, the multi-cell test bed,
//! certificates, PostgreSQL databases, and generators for the parsers' property tests. A
//! dev-dependency of the other crates, never shipped.

pub mod certs;
pub mod fuzz;
pub mod netns;
pub mod postgres;
pub mod testbed;

/// Fails the calling test unless it runs as root under `scripts/test` (`SILK_TEST_ROOT=1`).
pub fn require_root() {
    assert_eq!(
        std::env::var("SILK_TEST_ROOT").as_deref(),
        Ok("1"),
        "this test needs root and SILK_TEST_ROOT=1: run it via scripts/test"
    );
}

/// [`require_root`], and the throwaway PostgreSQL cluster `scripts/test` starts.
pub fn require_root_and_pg() {
    require_root();
    assert!(
        std::env::var("SILK_TEST_PG_HOST").is_ok(),
        "this test needs postgres (SILK_TEST_PG_HOST): run it via scripts/test"
    );
}
