//! `silk-daemon-bootstrap --config=<bootstrap-config.json>` (pre-start on single-IP VMs).
//! Exits 64 on a missing or invalid config, before the policy server is asked or iptables
//! touched; 1 when the bootstrap fails.

use std::process::ExitCode;

use silk_daemon::bootstrap::{bootstrap, BootstrapConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cfg = match silk_ops::config::from_command_line(
        "silk-daemon-bootstrap",
        "silk-daemon-bootstrap",
        "config",
        BootstrapConfig::parse,
    ) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match bootstrap(&cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("silk-daemon-bootstrap: {e}");
            ExitCode::from(1)
        }
    }
}
