//! `silk-daemon-shutdown`: the drain's first step, with upstream's flag names and defaults
//! ([`silk_daemon::shutdown::Flags`]). Exits 64 on invalid flags, before anything is read,
//! signalled or removed; 1 when the drain fails.

use std::process::ExitCode;

use silk_daemon::shutdown::{drain, ShutdownOpts};

fn main() -> ExitCode {
    let opts = match ShutdownOpts::from_args(std::env::args()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cfnetworking.silk-daemon-shutdown error: {e}");
            return ExitCode::from(silk_ops::config::EXIT_INVALID);
        }
    };
    silk_ops::log::init(
        "cfnetworking",
        "silk-daemon-shutdown",
        log::LevelFilter::Debug,
    );
    match drain(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cfnetworking.silk-daemon-shutdown error: {e}");
            ExitCode::from(1)
        }
    }
}
