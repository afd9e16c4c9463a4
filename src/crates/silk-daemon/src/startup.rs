//! Start-up (control-plane contract §5.5): find the local lease on an existing `silk-vtep`
//! (its MAC and first IPv4 address) and renew it, or acquire a lease and create the VTEP.
//! With containers on the cell, a lease that cannot be kept is fatal; without, the VTEP is
//! deleted and a new lease acquired.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnetwork::Ipv4Network;
use serde_json::json;
use silk_client::ControllerClient;
use silk_core::Lease;
use silk_dataplane::netlink::{Netlink, NetlinkError};
use silk_dataplane::vtep::{vtep_addresses, VtepLink, VtepSpec};
use silk_ops::log;

use crate::config::Config;
use crate::datastore::{count_silk_entries, DatastoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("discovered lease is not in overlay network and has containers: {0}")]
    OutsideNetworkWithContainers(usize),
    #[error("renew subnet lease with containers: {0}")]
    RenewWithContainers(usize),
    #[error("acquire subnet lease: {0}")]
    Acquire(#[source] silk_client::ClientError),
    #[error("lease {0:?}: {1}")]
    BadLease(Lease, #[source] silk_core::LeaseError),
    #[error("lease IP '{0}' is not in any of the overlay networks: {1:?}")]
    NotInOverlay(Ipv4Addr, Vec<String>),
    #[error("vtep {name}: {source}")]
    Vtep {
        name: String,
        #[source]
        source: NetlinkError,
    },
    #[error("vtep {0} has no MTU after creation")]
    NoMtu(String),
    #[error(transparent)]
    Datastore(#[from] DatastoreError),
}

/// The lease this daemon holds and the VTEP that carries it.
#[derive(Debug, Clone)]
pub struct Held {
    pub lease: Lease,
    pub overlay_ip: Ipv4Addr,
    pub subnet: Ipv4Network,
    pub mtu: u32,
}

fn vtep_err(cfg: &Config) -> impl FnOnce(NetlinkError) -> StartupError + '_ {
    move |source| StartupError::Vtep {
        name: cfg.vtep_name.clone(),
        source,
    }
}

/// The lease an existing VTEP stands for: `<first IPv4>/<subnet_prefix_length>` (`/32` on
/// single-IP VMs, which avoids upstream's spurious 409 on restart) with the device MAC.
pub fn lease_from_vtep(cfg: &Config, link: &VtepLink) -> Option<Lease> {
    let ip = link.ipv4.first()?.ip();
    let mac = link.mac?;
    let prefix = if cfg.single_ip_only {
        32
    } else {
        cfg.subnet_prefix_length
    };
    Some(Lease {
        underlay_ip: cfg.underlay_ip.to_string(),
        overlay_subnet: format!("{ip}/{prefix}"),
        overlay_hardware_addr: mac.to_string(),
    })
}

/// Runs §5.5 steps 4-7 and returns the held lease.
pub async fn establish(
    cfg: &Config,
    client: &ControllerClient,
    nl: &Netlink,
) -> Result<Held, StartupError> {
    let existing = nl.find_vtep(&cfg.vtep_name).await.map_err(vtep_err(cfg))?;
    if let Some(lease) = existing.as_ref().and_then(|l| lease_from_vtep(cfg, l)) {
        if let Some(held) = keep_discovered(cfg, client, nl, lease).await? {
            return Ok(held);
        }
    }
    acquire(cfg, client, nl).await
}

/// Renews a lease read back from the VTEP; `Ok(None)` when it was dropped (VTEP deleted) and a
/// new one must be acquired.
async fn keep_discovered(
    cfg: &Config,
    client: &ControllerClient,
    nl: &Netlink,
    lease: Lease,
) -> Result<Option<Held>, StartupError> {
    let subnet = lease
        .subnet()
        .map_err(|e| StartupError::BadLease(lease.clone(), e))?;
    let containers = || count_silk_entries(Path::new(&cfg.datastore));
    if !cfg.overlay_network.contains(subnet.ip()) {
        log::error(
            "network-contains-lease",
            json!({"lease": lease, "error": "lease not in overlay network"}),
        );
        let n = containers()?;
        if n > 0 {
            return Err(StartupError::OutsideNetworkWithContainers(n));
        }
        nl.delete_link(&cfg.vtep_name)
            .await
            .map_err(vtep_err(cfg))?;
        return Ok(None);
    }
    if let Err(e) = client.renew(&lease).await {
        log::error(
            "renew-lease",
            json!({"lease": lease, "error": e.to_string()}),
        );
        let n = containers()?;
        if n > 0 {
            return Err(StartupError::RenewWithContainers(n));
        }
        nl.delete_link(&cfg.vtep_name)
            .await
            .map_err(vtep_err(cfg))?;
        return Ok(None);
    }
    log::info("renewed-lease", json!({"lease": lease}));
    let link = nl.find_vtep(&cfg.vtep_name).await.map_err(vtep_err(cfg))?;
    let mtu = link
        .and_then(|l| l.mtu)
        .ok_or_else(|| StartupError::NoMtu(cfg.vtep_name.clone()))?;
    Ok(Some(held(lease, subnet, mtu)))
}

fn held(lease: Lease, subnet: Ipv4Network, mtu: u32) -> Held {
    Held {
        overlay_ip: subnet.ip(),
        subnet: Ipv4Network::new(subnet.network(), subnet.prefix()).unwrap_or(subnet),
        lease,
        mtu,
    }
}

async fn acquire(
    cfg: &Config,
    client: &ControllerClient,
    nl: &Netlink,
) -> Result<Held, StartupError> {
    let lease = client
        .acquire(&cfg.underlay_ip.to_string(), cfg.single_ip_only)
        .await
        .map_err(StartupError::Acquire)?;
    let subnet = lease
        .subnet()
        .map_err(|e| StartupError::BadLease(lease.clone(), e))?;
    let mac = lease
        .hardware_addr()
        .map_err(|e| StartupError::BadLease(lease.clone(), e))?;
    let addresses = vtep_addresses(subnet.ip(), &cfg.overlay_network).ok_or_else(|| {
        StartupError::NotInOverlay(
            subnet.ip(),
            cfg.overlay_network
                .as_slice()
                .iter()
                .map(ToString::to_string)
                .collect(),
        )
    })?;
    let lower_ifindex = match &cfg.vxlan_interface_name {
        Some(name) => nl
            .link_index(name)
            .await
            .map_err(vtep_err(cfg))?
            .ok_or_else(|| vtep_err(cfg)(NetlinkError::LinkNotFound(name.clone())))?,
        None => nl
            .index_of_address(cfg.underlay_ip)
            .await
            .map_err(vtep_err(cfg))?,
    };
    let spec = VtepSpec {
        name: cfg.vtep_name.clone(),
        vni: cfg.vni,
        port: cfg.vtep_port,
        local: cfg.underlay_ip,
        lower_ifindex,
        mac,
        mtu: cfg.vtep_mtu,
        addresses,
    };
    // A leftover device (e.g. from a lease that could not be renewed) would make create fail.
    nl.delete_link(&cfg.vtep_name)
        .await
        .map_err(vtep_err(cfg))?;
    nl.create_vtep(&spec).await.map_err(vtep_err(cfg))?;
    log::info("acquired-lease", json!({"lease": lease}));
    let link = nl.find_vtep(&cfg.vtep_name).await.map_err(vtep_err(cfg))?;
    let mtu = link
        .and_then(|l| l.mtu)
        .ok_or_else(|| StartupError::NoMtu(cfg.vtep_name.clone()))?;
    Ok(held(lease, subnet, mtu))
}
