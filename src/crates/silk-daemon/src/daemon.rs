//! Wiring the daemon together (contract §5.5 steps 2-9): controller client, start-up, local
//! API, poll loop, debug server and metrics, until a signal or a fatal renew failure.

use std::time::Duration;

use ipnetwork::Ipv4Network;
use serde_json::json;
use silk_client::{ClientTls, ControllerClient};
use silk_dataplane::netlink::monitor::ChangeMonitor;
use silk_dataplane::netlink::Netlink;
use silk_dataplane::vtep::{LocalVtep, NetlinkVtep};
use silk_ops::{log, Metrics};

use crate::api::{local_api, render, NetworkInfo};
use crate::config::Config;
use crate::cycle::{FatalRenew, Poller};
use crate::startup::{establish, StartupError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("load client tls: {0}")]
    Tls(#[from] silk_client::TlsError),
    #[error("build controller client: {0}")]
    Client(#[from] silk_client::ClientError),
    #[error(transparent)]
    Netlink(#[from] silk_dataplane::netlink::NetlinkError),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("listen on {what}: {source}")]
    Listen {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("wait for signals: {0}")]
    Signal(#[source] std::io::Error),
    #[error("IPv6 is enabled in config but the host is not IPv6 enabled")]
    Ipv6Host(#[source] std::io::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] silk_ops::loggregator::LoggregatorError),
}

/// How the daemon ended.
#[derive(Debug)]
pub enum Exit {
    /// SIGTERM/SIGINT: exit 0, kernel state left in place.
    Signal(&'static str),
    /// A renew failure that cannot be tolerated: exit 1.
    Fatal(FatalRenew),
}

/// Builds the controller client as §5.5 step 2 describes.
pub fn controller_client(cfg: &Config, timeout: Duration) -> Result<ControllerClient, DaemonError> {
    let tls = ClientTls::from_files(
        &cfg.ca_cert_file,
        &cfg.client_cert_file,
        &cfg.client_key_file,
    )?;
    Ok(ControllerClient::new(
        &cfg.connectivity_server_url,
        &tls,
        timeout,
    )?)
}

/// Runs the daemon until a signal or a fatal renew failure. Must run inside an actix/tokio
/// runtime.
pub async fn run(cfg: Config) -> Result<Exit, DaemonError> {
    if cfg.ipv6_prefix.is_some() {
        // Upstream's host check: binding a UDP socket on ::1 works only with IPv6 enabled.
        std::net::UdpSocket::bind("[::1]:0").map_err(DaemonError::Ipv6Host)?;
    }
    // Upstream creates the silk datastore at start; silk-cni writes to it later.
    crate::datastore::count_silk_entries(std::path::Path::new(&cfg.datastore))
        .map_err(StartupError::from)?;
    let client = controller_client(&cfg, cfg.client_timeout)?;
    let metrics = Metrics::from_config(
        "silk-daemon",
        silk_ops::metrics::local_metron(cfg.metron_port),
        cfg.loggregator.as_ref(),
    )?;
    let nl = Netlink::connect()?;
    let held = establish(&cfg, &client, &nl).await?;

    let body = render(&NetworkInfo {
        overlay_subnet: held.lease.overlay_subnet.clone(),
        mtu: held.mtu,
        ipv6_prefix: cfg.ipv6_prefix.map(|p| p.to_string()),
    });
    let api = local_api(cfg.health_check_port, body).map_err(|source| DaemonError::Listen {
        what: "local api",
        source,
    })?;
    let api_handle = api.handle();
    tokio::spawn(api);

    let local = LocalVtep {
        overlay_ip: held.overlay_ip,
        subnet: Ipv4Network::new(held.subnet.network(), held.subnet.prefix())
            .unwrap_or(held.subnet),
        networks: cfg.overlay_network.clone(),
        single_ip_only: cfg.single_ip_only,
    };
    // Without notifications every cycle dumps, as upstream does.
    let monitor = ChangeMonitor::open()
        .map_err(|e| log::error("change-monitor", json!({"error": e.to_string()})))
        .ok();
    let poller = Poller::new(
        client,
        NetlinkVtep::new(nl, monitor),
        cfg.vtep_name.clone(),
        held.lease.clone(),
        local,
        metrics.clone(),
        cfg.partition_tolerance,
    );
    let mut poll = tokio::spawn(poller.run(cfg.poll_interval));

    let debug =
        silk_ops::debug_server(cfg.debug_server_port, metrics.clone()).map_err(|source| {
            DaemonError::Listen {
                what: "debug server",
                source,
            }
        })?;
    let debug_handle = debug.handle();
    tokio::spawn(debug);
    let emitter = silk_ops::metrics::spawn_emitter(metrics, Duration::from_secs(30), |_| async {});
    log::info("started", json!({"lease": held.lease, "mtu": held.mtu}));

    let exit = tokio::select! {
        sig = silk_ops::shutdown::wait_for_signal() => Exit::Signal(sig.map_err(DaemonError::Signal)?),
        fatal = &mut poll => match fatal {
            Ok(f) => Exit::Fatal(f),
            // Invariant: the poll task does not panic; if it did, restarting is right.
            Err(e) => Exit::Fatal(FatalRenew(silk_client::ClientError::Status { code: 0, text: e.to_string() })),
        },
    };
    // No renew may follow a SIGTERM: the drain releases the lease right after the local API
    // stops answering, and a late renew would re-register it.
    poll.abort();
    emitter.abort();
    api_handle.stop(false).await;
    debug_handle.stop(false).await;
    Ok(exit)
}
