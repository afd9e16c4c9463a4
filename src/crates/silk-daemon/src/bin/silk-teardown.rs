//! `silk-teardown -config=<client-config.json>`: release the lease, delete silk-vtep.

use std::process::ExitCode;

use silk_daemon::config::Config;

#[actix_web::main]
async fn main() -> ExitCode {
    let cfg = match silk_ops::config::from_command_line(
        "cfnetworking.silk-teardown",
        "silk-teardown",
        "config",
        Config::parse,
    ) {
        Ok(c) => c,
        Err(code) => return code,
    };
    silk_ops::log::init(&cfg.log_prefix, "silk-teardown", log::LevelFilter::Info);
    match silk_daemon::teardown::teardown(&cfg).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cfnetworking.silk-teardown error: {e}");
            ExitCode::from(1)
        }
    }
}
