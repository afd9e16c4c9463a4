//! Fixtures for the gated test tiers: network namespaces, certificates, PostgreSQL and MySQL
//! databases ([`db`] for tests that run on both engines), private throwaway database servers
//! ([`dbserver`]), a Loggregator v2 agent (gRPC, mutual TLS) and generators for the parsers'
//! property tests ([`fuzz`]). A dev-dependency of the other crates, never shipped; the fabric
//! assembly (cells, processes, rendering) lives in the lab crate (`silk_lab::fabric`).

pub mod certs;
pub mod cni;
pub mod db;
pub mod dbserver;
pub mod figures;
pub mod fuzz;
pub mod ipjson;
pub mod loggregator;
pub mod mysql;
pub mod netns;
pub mod postgres;
pub mod tcp;

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

/// The value of `key`, set by scripts/test for the server `what`; panics with the reason when it
/// is missing, so a gated test never passes by skipping.
pub fn server_env(key: &str, what: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| {
        panic!(
            "{key} is not set: these tests need the {what} scripts/test starts (run scripts/test)"
        )
    })
}

/// [`server_env`] parsed as a port.
pub fn server_env_port(key: &str, what: &str) -> u16 {
    server_env(key, what)
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a port"))
}

/// Runs `cleanup` to completion on a thread of its own with its own runtime, for `Drop`
/// impls that may run inside a runtime (where `block_on` would panic). Best effort: a
/// runtime that cannot be built skips the cleanup.
pub fn block_on_cleanup<F>(cleanup: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(cleanup);
        }
    })
    .join();
}
