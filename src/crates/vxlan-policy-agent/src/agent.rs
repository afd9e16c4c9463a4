//! The process (policy contract §3.1): start-up checks in upstream's order, each fatal, then
//! the c2c poller, the debug server and the force server until SIGTERM/SIGINT. Rules stay in
//! place on exit.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::ports::Ports;
use serde_json::json;
use silk_client::{ClientError, ClientTls, PolicyClient, TlsError};
use silk_dataplane::datastore::MetadataStore;
use silk_dataplane::ifaddrs;
use silk_dataplane::iptables::SystemIptables;
use silk_ops::Metrics;

use crate::asg::AsgCycle;
use crate::config::Config;
use crate::cycle::{C2cCycle, CycleOptions};
use crate::planner::allow_overlay_rules;
use crate::server::{c2c_logging_route, force_server};

/// The dropsonde origin and job name.
pub const JOB: &str = "vxlan-policy-agent";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("datastore-directory-stat: {path}: {source}")]
    DatastoreDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("looking up interface names: {0}")]
    Underlay(String),
    #[error("unable to load cert or key: {0}")]
    Tls(#[from] TlsError),
    #[error("policy client: {0}")]
    Client(#[source] ClientError),
    #[error("policy-client-get-policies: {0}")]
    Probe(#[source] ClientError),
    #[error("{what}: {source}")]
    Listen {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] silk_ops::loggregator::LoggregatorError),
}

/// The names of the links carrying each underlay address (upstream fails start-up on a miss;
/// the names are not used by any c2c rule).
pub fn underlay_interfaces(ips: &[Ipv4Addr]) -> Result<Vec<String>, StartError> {
    let addrs = ifaddrs::list().map_err(|e| StartError::Underlay(e.to_string()))?;
    ips.iter()
        .map(|ip| {
            ifaddrs::carrying(&addrs, IpAddr::V4(*ip))
                .ok_or_else(|| StartError::Underlay(format!("no link carries {ip}")))
        })
        .collect()
}

pub async fn run(cfg: Config) -> Result<(), StartError> {
    silk_ops::log::info(
        "parsed-config",
        json!({
            "policy_server_url": cfg.policy_server_url,
            "poll_interval": cfg.poll_interval.as_secs(),
            "cni_datastore_path": cfg.cni_datastore_path,
            "iptables_lock_file": cfg.iptables_lock_file,
            "iptables_c2c_logging": cfg.iptables_c2c_logging,
            "enable_asg_syncing": cfg.enable_asg_syncing,
            "asg_poll_interval": cfg.asg_poll_interval.as_secs(),
            "iptables_asg_logging": cfg.iptables_asg_logging,
            "enable_ipv6": cfg.enable_ipv6,
            "enable_overlay_ingress_rules": cfg.enable_overlay_ingress_rules,
            "disable_container_network_policy": cfg.disable_container_network_policy,
            "overlay_network": cfg.overlay_network.as_slice().iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "force_policy_poll_cycle": format!("{}:{}", cfg.force_policy_poll_cycle_host, cfg.force_policy_poll_cycle_port),
            "debug_server_port": cfg.debug_server_port,
        }),
    );

    let dir = Path::new(&cfg.cni_datastore_path)
        .parent()
        .unwrap_or(Path::new("/"));
    std::fs::metadata(dir).map_err(|source| StartError::DatastoreDir {
        path: dir.display().to_string(),
        source,
    })?;
    let links = underlay_interfaces(&cfg.underlay_ips)?;
    silk_ops::log::debug("underlay-interfaces", json!({ "names": links }));

    let tls = ClientTls::from_files(
        &cfg.ca_cert_file,
        &cfg.client_cert_file,
        &cfg.client_key_file,
    )?;
    let client = PolicyClient::new(&cfg.policy_server_url, &tls, cfg.client_timeout)
        .map_err(StartError::Client)?;
    // Upstream's connectivity probe: one unfiltered request; the agent does not start without it.
    client.policies(None).await.map_err(StartError::Probe)?;

    let metrics = Metrics::from_config(JOB, Some(cfg.metron_address), cfg.loggregator.as_ref())?;
    let uptime =
        silk_ops::metrics::spawn_emitter(metrics.clone(), Duration::from_secs(30), |_m| async {});
    let head_rules = if cfg.disable_container_network_policy {
        allow_overlay_rules(cfg.overlay_network.as_slice())
    } else {
        Vec::new()
    };
    let c2c_logging = Arc::new(AtomicBool::new(cfg.iptables_c2c_logging));
    let iptables = Arc::new(SystemIptables::new(&cfg.iptables_lock_file));
    let store = MetadataStore::new(&cfg.cni_datastore_path, None);
    // As upstream: IPv6 ASG chains only when the host can bind [::1]:0; otherwise silently
    // off (logged here).
    let ipv6 = cfg.enable_ipv6 && std::net::UdpSocket::bind("[::1]:0").is_ok();
    if cfg.enable_ipv6 && !ipv6 {
        silk_ops::log::info(
            "ipv6-disabled",
            json!({ "reason": "enable_ipv6 is set but the host has no IPv6 loopback" }),
        );
    }
    let asg = cfg.enable_asg_syncing.then(|| {
        Arc::new(AsgCycle::new(
            Ports {
                api: client.clone(),
                iptables: Arc::clone(&iptables),
                store: store.clone(),
                metrics: metrics.clone(),
            },
            cfg.asg_options(),
            ipv6,
        ))
    });
    let cycle = Arc::new(C2cCycle::new(
        Ports {
            api: client,
            iptables: Arc::clone(&iptables),
            store,
            metrics: metrics.clone(),
        },
        CycleOptions {
            accepted_udp_logs_per_sec: cfg.iptables_accepted_udp_logs_per_sec,
            enable_overlay_ingress_rules: cfg.enable_overlay_ingress_rules,
            head_rules,
        },
        Arc::clone(&c2c_logging),
    ));

    // Sleep after work: the first cycle runs one interval after start, no overlap, no catch-up.
    let poller = {
        let cycle = Arc::clone(&cycle);
        let every = cfg.poll_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = cycle.tick().await {
                    silk_ops::log::error("poll-cycle", json!({ "error": e.to_string() }));
                }
            }
        })
    };

    // The ASG loop beside the c2c loop, same sleep-after-work timing. Writers never interleave
    // on a table: each holds the iptables lock file from save to restore.
    let asg_poller = asg.as_ref().map(|asg| {
        let asg = Arc::clone(asg);
        let every = cfg.asg_poll_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                // Errors are counted and logged by the cycle; the next poll retries.
                let _ = asg.poll().await;
            }
        })
    });

    let debug = silk_ops::debug_server_with(
        cfg.debug_server_port,
        metrics.clone(),
        c2c_logging_route(c2c_logging),
    )
    .map_err(|source| StartError::Listen {
        what: "debug server",
        source,
    })?;
    let debug_handle = debug.handle();
    tokio::spawn(debug);
    let force = force_server(
        &cfg.force_policy_poll_cycle_host,
        cfg.force_policy_poll_cycle_port,
        Arc::clone(&cycle),
        asg,
    )
    .map_err(|source| StartError::Listen {
        what: "force server",
        source,
    })?;
    let force_handle = force.handle();
    tokio::spawn(force);
    silk_ops::log::info("starting", json!({}));

    let signal = silk_ops::shutdown::wait_for_signal()
        .await
        .map_err(StartError::Signal)?;
    silk_ops::log::info("exiting", json!({ "signal": signal }));
    poller.abort();
    if let Some(p) = asg_poller {
        p.abort();
    }
    uptime.abort();
    force_handle.stop(true).await;
    debug_handle.stop(true).await;
    Ok(())
}
