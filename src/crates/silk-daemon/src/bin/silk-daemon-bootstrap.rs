//! `silk-daemon-bootstrap --config=<bootstrap-config.json>` (pre-start on single-IP VMs).

use std::process::ExitCode;

use clap::Parser;
use silk_daemon::bootstrap::{bootstrap, BootstrapConfig};

#[derive(Parser)]
#[command(name = "silk-daemon-bootstrap")]
struct Args {
    #[arg(long)]
    config: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse_from(silk_ops::flags::normalize(std::env::args()));
    let cfg: BootstrapConfig = match std::fs::read_to_string(&args.config)
        .map_err(anyhow::Error::from)
        .and_then(|t| Ok(serde_json::from_str(&t)?))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("silk-daemon-bootstrap: load config {}: {e:#}", args.config);
            return ExitCode::from(1);
        }
    };
    match bootstrap(&cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("silk-daemon-bootstrap: {e}");
            ExitCode::from(1)
        }
    }
}
