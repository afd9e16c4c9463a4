//! `silk-lab`: the whole fabric on one machine with apps and policies (docs/lab.md).
//!
//! ```text
//! silk-lab up --cells N --apps M --state-dir DIR [--bin-dir DIR] [--db postgres|mysql]
//! silk-lab status --state-dir DIR [--wait S]
//! silk-lab policy add|remove SRC DST PORT --state-dir DIR
//! silk-lab asg add|remove SPACE PROTOCOL DESTINATION PORTS --state-dir DIR
//! silk-lab restart NAME --state-dir DIR
//! silk-lab down --state-dir DIR
//! silk-lab responder --port P --name NAME
//! silk-lab db-relay --netns PATH --listen ADDR --upstream ADDR
//! silk-lab policy-server --listen ADDR --file FILE --ca-cert F --server-cert F --server-key F
//!                        [--control 127.0.0.1:PORT] [--page-size N] [--tag-length 2]
//! ```
//!
//! `up` needs root and a PostgreSQL cluster (SILK_TEST_PG_HOST socket dir, SILK_TEST_PG_PORT,
//! SILK_TEST_PG_USER) or, with `--db mysql`, a MariaDB server with TLS
//! (SILK_TEST_MYSQL_{HOST,PORT,USER,PASSWORD} and its CA in SILK_TEST_DB_CA); it leaves every
//! process running detached and exits. `down` removes every
//! namespace, process, database and file `up` recorded in `DIR/lab.json`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use silk_lab::fabric::lab::{destroy, LabState};
use silk_lab::lab::{self, state_file};

#[derive(Parser)]
#[command(
    name = "silk-lab",
    about = "The whole silk fabric with apps and policies in network namespaces on this machine"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Db {
    Postgres,
    Mysql,
}

#[derive(Clone, Copy, ValueEnum)]
enum Action {
    Add,
    Remove,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build and start the fabric, the demo apps and policies; print the matrix; leave it running.
    Up {
        #[arg(long, default_value_t = 3)]
        cells: usize,
        #[arg(long, default_value_t = 6)]
        apps: usize,
        #[arg(long)]
        state_dir: PathBuf,
        /// Where the release's binaries are (default: beside this binary).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// silk-controller's `database.type`.
        #[arg(long, value_enum, default_value = "postgres")]
        db: Db,
    },
    /// Print leases, processes, cells, containers and the matrix, re-tested live.
    Status {
        #[arg(long)]
        state_dir: PathBuf,
        /// Re-test for up to this many seconds until the matrix equals the policies.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Add or remove a c2c policy (tcp) between two demo apps; show the matrix after the poll.
    Policy {
        action: Action,
        src: String,
        dst: String,
        port: u16,
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Add or remove a rule of a space's running security group `lab-<space>`.
    Asg {
        action: Action,
        space: String,
        protocol: String,
        destination: String,
        ports: String,
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Kill a lab process (SIGKILL, by its recorded pid) and start it again.
    Restart {
        name: String,
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Remove everything `up` created.
    Down {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// The app stand-in: answer HTTP on 0.0.0.0:PORT with NAME and the peer's address.
    Responder {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        name: String,
    },
    /// Listen on ADDR inside the network namespace at PATH and relay each connection to
    /// UPSTREAM in this process's namespace (the controller's way to a MariaDB server on the
    /// root namespace's loopback).
    DbRelay {
        #[arg(long)]
        netns: PathBuf,
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        upstream: std::net::SocketAddr,
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
            apps,
            state_dir,
            bin_dir,
            db,
        } => {
            let bin_dir = match bin_dir {
                Some(d) => d,
                None => std::env::current_exe()?
                    .parent()
                    .context("binary has no directory")?
                    .to_path_buf(),
            };
            lab::up(lab::UpOptions {
                cells,
                apps,
                state_dir,
                bin_dir,
                engine: match db {
                    Db::Postgres => silk_testkit::db::Engine::Postgres,
                    Db::Mysql => silk_testkit::db::Engine::Mysql,
                },
            })
            .await
        }
        Cmd::DbRelay {
            netns,
            listen,
            upstream,
        } => tokio::task::block_in_place(|| {
            silk_lab::fabric::relay::serve(&netns, listen, upstream)
                .with_context(|| format!("relay {listen} in {} to {upstream}", netns.display()))
        }),
        Cmd::Responder { port, name } => {
            lab::probe::serve((std::net::Ipv4Addr::UNSPECIFIED, port).into(), &name)?;
            Ok(())
        }
        Cmd::Policy {
            action,
            src,
            dst,
            port,
            state_dir,
        } => tokio::task::block_in_place(|| {
            lab::policy(&state_dir, matches!(action, Action::Add), &src, &dst, port)
        }),
        Cmd::Asg {
            action,
            space,
            protocol,
            destination,
            ports,
            state_dir,
        } => tokio::task::block_in_place(|| {
            lab::asg(
                &state_dir,
                matches!(action, Action::Add),
                &space,
                &protocol,
                &destination,
                &ports,
            )
        }),
        Cmd::Restart { name, state_dir } => {
            tokio::task::block_in_place(|| lab::restart(&state_dir, &name))
        }
        Cmd::Status { state_dir, wait } => lab::status(&state_dir, Duration::from_secs(wait)).await,
        Cmd::Down { state_dir } => {
            let path = state_file(&state_dir);
            let state =
                LabState::read(&path).with_context(|| format!("read {}", path.display()))?;
            let errors = destroy(&state).await;
            if !errors.is_empty() {
                bail!("down left things behind:\n  {}", errors.join("\n  "));
            }
            std::fs::remove_file(&path)?;
            let _ = std::fs::remove_file(lab::demo_file(&state_dir));
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
