//! `silk-daemon-shutdown`: the drain's first step, with upstream's flag names and defaults.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use silk_daemon::shutdown::{drain, ShutdownOpts};

#[derive(Parser)]
#[command(name = "silk-daemon-shutdown")]
struct Args {
    #[arg(long = "containerMetadataFile", default_value = "")]
    container_metadata_file: String,
    #[arg(long = "containerMetadataFileCheckInterval", default_value_t = 5)]
    check_interval: u64,
    #[arg(long = "containerMetadataFileCheckTimeout", default_value_t = 600)]
    check_timeout: u64,
    #[arg(long = "silkDaemonUrl", default_value = "")]
    silk_daemon_url: String,
    #[arg(long = "silkDaemonTimeout", default_value_t = 2)]
    silk_daemon_timeout: u64,
    #[arg(long = "silkDaemonPidPath", default_value = "")]
    silk_daemon_pid_path: String,
    #[arg(long = "pingServerTimeout", default_value_t = 600)]
    ping_server_timeout: u64,
    #[arg(long = "iptablesLockFile", default_value = "")]
    iptables_lock_file: String,
}

fn main() -> ExitCode {
    let a = Args::parse_from(silk_ops::flags::normalize(std::env::args()));
    silk_ops::log::init(
        "cfnetworking",
        "silk-daemon-shutdown",
        log::LevelFilter::Debug,
    );
    let path = |s: String| Some(PathBuf::from(s)).filter(|p| !p.as_os_str().is_empty());
    let opts = ShutdownOpts {
        container_metadata_file: PathBuf::from(a.container_metadata_file),
        check_interval: Duration::from_secs(a.check_interval.max(1)),
        check_timeout: Duration::from_secs(a.check_timeout),
        silk_daemon_url: a.silk_daemon_url,
        silk_daemon_timeout: Duration::from_secs(a.silk_daemon_timeout),
        silk_daemon_pid_path: path(a.silk_daemon_pid_path),
        ping_server_timeout: Duration::from_secs(a.ping_server_timeout),
        iptables_lock_file: path(a.iptables_lock_file),
    };
    match drain(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cfnetworking.silk-daemon-shutdown error: {e}");
            ExitCode::from(1)
        }
    }
}
