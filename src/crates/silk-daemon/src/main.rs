//! `silk-daemon -config=<client-config.json>`: exits 64 on a bad config, 1 on a start-up error
//! or a fatal renew failure, 0 on SIGTERM/SIGINT (leaving the VTEP and its entries in place).

/// The controller's allocator too: the lease list it reads each poll is one large body, and
/// glibc would map and fault in fresh pages for it every time.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use silk_daemon::config::Config;
use silk_daemon::daemon::{run, Exit};

#[actix_web::main]
async fn main() -> ExitCode {
    let cfg = match silk_ops::config::from_command_line(
        "cfnetworking.silk-daemon",
        "silk-daemon",
        "config",
        Config::parse,
    ) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let level = silk_ops::log::parse_level(&cfg.log_level)
        .map(|(_, l)| l)
        .unwrap_or(log::LevelFilter::Info);
    silk_ops::log::init(&cfg.log_prefix, "silk-daemon", level);
    match run(cfg).await {
        Ok(Exit::Signal(_)) => ExitCode::SUCCESS,
        Ok(Exit::Fatal(f)) => {
            eprintln!("This cell must be restarted (run \"bosh restart <job>\"): fatal: {f}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("cfnetworking.silk-daemon error: {e}");
            ExitCode::from(1)
        }
    }
}
