//! A command-line front end to [`ControllerClient`], used by `scripts/lab`:
//!
//! ```text
//! leases <url> <ca> <cert> <key> acquire <underlay_ip> [single]
//! leases <url> <ca> <cert> <key> renew <underlay_ip> <overlay_subnet> <overlay_hardware_addr>
//! leases <url> <ca> <cert> <key> release <underlay_ip>
//! leases <url> <ca> <cert> <key> list
//! ```
//! Acquire prints the lease as JSON; list prints a table sorted by underlay IP.

use std::time::Duration;

use silk_client::{ClientTls, ControllerClient};
use silk_core::Lease;

fn usage() -> ! {
    eprintln!("usage: leases <url> <ca> <cert> <key> acquire|renew|release|list [args]");
    std::process::exit(64);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        usage();
    }
    let tls = ClientTls::from_files(&args[1], &args[2], &args[3]).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let client =
        ControllerClient::new(&args[0], &tls, Duration::from_secs(10)).unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1)
        });
    let rest: Vec<&str> = args[5..].iter().map(String::as_str).collect();
    let result = match (args[4].as_str(), rest.as_slice()) {
        ("acquire", [ip]) => client.acquire(ip, false).await.map(|l| print_json(&l)),
        ("acquire", [ip, "single"]) => client.acquire(ip, true).await.map(|l| print_json(&l)),
        ("renew", [ip, subnet, mac]) => client
            .renew(&Lease {
                underlay_ip: ip.to_string(),
                overlay_subnet: subnet.to_string(),
                overlay_hardware_addr: mac.to_string(),
            })
            .await
            .map(|()| println!("renewed {ip}")),
        ("release", [ip]) => client.release(ip).await.map(|()| println!("released {ip}")),
        ("list", []) => client.list().await.map(|mut leases| {
            leases.sort();
            println!("{:<16} {:<20} VTEP MAC", "UNDERLAY IP", "OVERLAY SUBNET");
            for l in leases {
                println!(
                    "{:<16} {:<20} {}",
                    l.underlay_ip, l.overlay_subnet, l.overlay_hardware_addr
                );
            }
        }),
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(1);
    }
}

fn print_json(lease: &Lease) {
    println!("{}", serde_json::to_string(lease).unwrap_or_default());
}
