//! `silk-teardown` (contract §6.1): release this host's lease and delete `silk-vtep`. Both are
//! attempted and every failure reported. Unlike upstream, a VTEP that is already gone is not
//! a failure (pre-start and a repeated drain must be harmless), and the release request has a
//! deadline (upstream's has none and can hang pre-start or drain).

use std::time::Duration;

use serde_json::json;
use silk_dataplane::netlink::Netlink;
use silk_ops::log;

use crate::config::Config;
use crate::daemon::controller_client;

/// Deadline for the release request.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("teardown: {}", .0.join("; "))]
pub struct TeardownError(pub Vec<String>);

/// Releases the lease and deletes the VTEP; `Ok(true)` when the VTEP existed.
pub async fn teardown(cfg: &Config) -> Result<bool, TeardownError> {
    let mut errors = Vec::new();
    match controller_client(cfg, RELEASE_TIMEOUT) {
        Ok(client) => match client.release(&cfg.underlay_ip.to_string()).await {
            Ok(()) => log::info(
                "released-lease",
                json!({"underlay_ip": cfg.underlay_ip.to_string()}),
            ),
            Err(e) => errors.push(format!("release lease: {e}")),
        },
        Err(e) => errors.push(e.to_string()),
    }
    let mut existed = false;
    match Netlink::connect() {
        Ok(nl) => match nl.delete_link(&cfg.vtep_name).await {
            Ok(true) => {
                existed = true;
                log::info("deleted-vtep", json!({"vtep": cfg.vtep_name}));
            }
            Ok(false) => log::info("vtep-already-absent", json!({"vtep": cfg.vtep_name})),
            Err(e) => errors.push(format!("delete vtep {}: {e}", cfg.vtep_name)),
        },
        Err(e) => errors.push(e.to_string()),
    }
    if errors.is_empty() {
        Ok(existed)
    } else {
        Err(TeardownError(errors))
    }
}
