//! `silk-teardown -config=<client-config.json>`: release the lease, delete silk-vtep.

use std::process::ExitCode;

use clap::Parser;
use silk_daemon::config::Config;

#[derive(Parser)]
#[command(name = "silk-teardown")]
struct Args {
    #[arg(long)]
    config: String,
}

#[actix_web::main]
async fn main() -> ExitCode {
    let args = Args::parse_from(silk_ops::flags::normalize(std::env::args()));
    let cfg = match silk_ops::config::load_or_report(
        "cfnetworking.silk-teardown",
        &args.config,
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
