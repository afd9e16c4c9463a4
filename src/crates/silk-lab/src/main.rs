//! `silk-lab`: the fabric on one machine, built on the test bed.
//!
//! ```text
//! silk-lab up --cells N --state-dir DIR [--poll-interval S] [--bin-dir DIR]
//! silk-lab status --state-dir DIR
//! silk-lab down --state-dir DIR
//! silk-lab policy-server --listen ADDR --file FILE --ca-cert F --server-cert F --server-key F
//!                        [--control 127.0.0.1:PORT] [--page-size N] [--tag-length 2]
//! ```
//!
//! `up` needs root and a PostgreSQL cluster (SILK_TEST_PG_HOST socket dir, SILK_TEST_PG_PORT,
//! SILK_TEST_PG_USER); it starts the controller and N daemons detached, prints the status and
//! exits, leaving them running. `down` removes every namespace, process, database and file
//! `up` recorded in `DIR/lab.json`.

mod status;

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use silk_testkit::testbed::lab::{destroy, LabState};
use silk_testkit::testbed::render::Timing;
use silk_testkit::testbed::{Binaries, Options, Testbed};

#[derive(Parser)]
#[command(
    name = "silk-lab",
    about = "silk-controller and N cells with silk-daemon in network namespaces"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the namespaces, start controller and daemons, print the status, leave them running.
    Up {
        #[arg(long, default_value_t = 3)]
        cells: usize,
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long, default_value_t = 5)]
        poll_interval: u64,
        /// Where silk-controller and silk-daemon are (default: beside this binary).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Print the lease table, per-cell entry counts and a cross-cell ping.
    Status {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Remove everything `up` created.
    Down {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Serve policy-server-internal's API (mutual TLS) from a policies-and-ASGs file until
    /// SIGTERM or SIGINT (docs/lab.md).
    PolicyServer {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        ca_cert: PathBuf,
        #[arg(long)]
        server_cert: PathBuf,
        #[arg(long)]
        server_key: PathBuf,
        /// Plain-HTTP control API on a loopback address (faults, page size, request log).
        #[arg(long)]
        control: Option<std::net::SocketAddr>,
        #[arg(long)]
        page_size: Option<usize>,
        #[arg(long, default_value_t = 2)]
        tag_length: u32,
    },
}

fn state_file(dir: &std::path::Path) -> PathBuf {
    dir.join("lab.json")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::PolicyServer {
            listen,
            file,
            ca_cert,
            server_cert,
            server_key,
            control,
            page_size,
            tag_length,
        } => {
            silk_ops::log::init("cfnetworking", "lab-policy-server", log::LevelFilter::Info);
            let opts = silk_lab::policy_server::ServerOptions {
                listen,
                file,
                ca_cert,
                server_cert,
                server_key,
                tag_length,
                page_size,
            };
            let server = match silk_lab::policy_server::LabPolicyServer::start(opts) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("cfnetworking.lab-policy-server error: {e}");
                    std::process::exit(1);
                }
            };
            if let Some(addr) = control {
                server.serve_control(addr)?;
            }
            let signal = silk_ops::shutdown::wait_for_signal()
                .await
                .unwrap_or("signal-error");
            silk_ops::log::info("stopping", serde_json::json!({ "signal": signal }));
            tokio::task::spawn_blocking(move || server.stop()).await?;
            Ok(())
        }
        Cmd::Up {
            cells,
            state_dir,
            poll_interval,
            bin_dir,
        } => {
            if state_file(&state_dir).exists() {
                bail!(
                    "{} exists: run `silk-lab down --state-dir {}` first",
                    state_file(&state_dir).display(),
                    state_dir.display()
                );
            }
            let bin_dir = match bin_dir {
                Some(d) => d,
                None => std::env::current_exe()?
                    .parent()
                    .context("binary has no directory")?
                    .to_path_buf(),
            };
            let daemon = bin_dir.join("silk-daemon");
            if !daemon.exists() || !bin_dir.join("silk-controller").exists() {
                bail!(
                    "silk-daemon and silk-controller not found in {}: build them first",
                    bin_dir.display()
                );
            }
            let bins = Binaries::beside(&daemon.display().to_string())?;
            let timing = Timing {
                poll_interval_seconds: poll_interval,
                ..Timing::default()
            };
            let options = Options {
                cells,
                timing,
                detach: true,
                ..Options::default()
            };
            let mut bed = Testbed::build_in(bins, options, state_dir.clone()).await?;
            let started = bed.start_controller().and_then(|_| bed.start_daemons());
            // Record the state before reporting, so `down` can clean up even after a failure.
            let state = bed.leak();
            state.write(&state_file(&state_dir))?;
            started?;
            tokio::time::sleep(std::time::Duration::from_secs(poll_interval + 1)).await;
            status::print(&state).await
        }
        Cmd::Status { state_dir } => {
            let state = LabState::read(&state_file(&state_dir)).context("read lab state")?;
            status::print(&state).await
        }
        Cmd::Down { state_dir } => {
            let path = state_file(&state_dir);
            let state =
                LabState::read(&path).with_context(|| format!("read {}", path.display()))?;
            let errors = destroy(&state).await;
            if !errors.is_empty() {
                bail!("down left things behind:\n  {}", errors.join("\n  "));
            }
            std::fs::remove_file(&path)?;
            println!(
                "removed {} namespaces, {} processes, database {}",
                state.namespaces.len(),
                state.processes.len(),
                state.database
            );
            Ok(())
        }
    }
}
