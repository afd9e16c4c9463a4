//! `healthchecker -c <healthchecker.yml>`: watches a job's local HTTP endpoint (see the crate
//! docs). Exits 64 on a bad config or an unusable failure counter file, 1 when the endpoint
//! failed three polls in a row, 0 on SIGTERM, SIGINT or SIGUSR1.

use std::process::ExitCode;

use serde_json::json;
use silk_healthchecker::config::Config;
use silk_healthchecker::counter::FailureCounter;
use silk_healthchecker::probe;
use silk_healthchecker::watchdog::{Verdict, Watchdog};
use silk_ops::config::LoadError;
use tokio::signal::unix::{signal, SignalKind};

/// Go's flag package: `-c <file>`, `-c=<file>`, `--c <file>`, `--c=<file>`.
#[derive(clap::Parser)]
#[command(name = "healthchecker")]
struct Args {
    /// Path to healthchecker.yml.
    #[arg(short = 'c', long = "c")]
    config: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match <Args as clap::Parser>::try_parse_from(silk_ops::flags::normalize(
        std::env::args(),
    )) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    let cfg = match silk_ops::config::load(&args.config, Config::parse) {
        Ok(c) => c,
        Err(e @ LoadError::Read { .. }) => {
            eprintln!("healthchecker: {e}");
            return ExitCode::from(64);
        }
        Err(e) => {
            eprintln!("healthchecker: {}: {e}", args.config);
            return ExitCode::from(64);
        }
    };
    silk_ops::log::init("", &cfg.component_name, cfg.level_filter());
    let counter = FailureCounter::new(&cfg.failure_counter_file);
    if let Err(e) = counter.ensure_exists() {
        silk_ops::log::fatal(
            "cannot-create-failure-counter-file",
            json!({"error": e.to_string()}),
        );
        return ExitCode::from(64);
    }
    match watch(&cfg, &counter).await {
        Ok(code) => code,
        Err(e) => {
            silk_ops::log::fatal("signal-handlers", json!({"error": e.to_string()}));
            ExitCode::from(1)
        }
    }
}

async fn watch(cfg: &Config, counter: &FailureCounter) -> std::io::Result<ExitCode> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let stop = |name: &str| {
        silk_ops::log::info("received-signal", json!({"signal": name}));
        Ok(ExitCode::SUCCESS)
    };

    silk_ops::log::debug(
        "sleeping-before-first-check",
        json!({"sleep_time_seconds": cfg.startup_delay.as_secs_f64()}),
    );
    let mut wait = cfg.startup_delay + cfg.poll_interval;
    silk_ops::log::info(
        "starting",
        json!({"endpoint": probe::url(&cfg.endpoint), "poll_interval_seconds": cfg.poll_interval.as_secs_f64()}),
    );
    let mut watchdog = Watchdog::default();
    loop {
        tokio::select! {
            _ = term.recv() => return stop("SIGTERM"),
            _ = int.recv() => return stop("SIGINT"),
            _ = usr1.recv() => return stop("SIGUSR1"),
            _ = tokio::time::sleep(wait) => {}
        }
        wait = cfg.poll_interval;
        let (endpoint, timeout) = (cfg.endpoint.clone(), cfg.timeout);
        let result = tokio::task::spawn_blocking(move || probe::check(&endpoint, timeout))
            .await
            .unwrap_or_else(|e| Err(probe::ProbeError::Malformed(e.to_string())));
        match watchdog.observe(result.is_ok()) {
            Verdict::Healthy => {
                silk_ops::log::debug("endpoint-healthy", json!({}));
                if let Err(e) = counter.set(0) {
                    silk_ops::log::error(
                        "resetting-failure-count",
                        json!({"error": e.to_string()}),
                    );
                }
            }
            Verdict::Failing(attempt) => {
                let error = result.err().map(|e| e.to_string()).unwrap_or_default();
                silk_ops::log::debug(
                    "received-error",
                    json!({"error": error, "attempt": attempt}),
                );
            }
            Verdict::Unhealthy => {
                let error = result.err().map(|e| e.to_string()).unwrap_or_default();
                let count = counter.increment();
                if let Err(e) = &count {
                    silk_ops::log::error(
                        "incrementing-failure-count",
                        json!({"error": e.to_string()}),
                    );
                }
                silk_ops::log::fatal(
                    "endpoint-unhealthy",
                    json!({"error": error, "failed_polls": silk_healthchecker::FAILED_POLLS,
                           "consecutive_failures": count.ok()}),
                );
                return Ok(ExitCode::from(1));
            }
        }
    }
}
