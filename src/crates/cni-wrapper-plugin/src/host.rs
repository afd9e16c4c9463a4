//! Host facts the wrapper needs before writing rules: underlay interface names (by address),
//! the cell's lease from silk-daemon (masquerade exclusion), and the iptables lock file.

use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("looking up interface names: unable to find link with ip addr: {0}")]
    NoLink(String),
    #[error("looking up interface names: {0}")]
    List(String),
    #[error("failed to get lease from silk daemon after {0} attempts: {1}")]
    Lease(u32, String),
    #[error("iptables lock file {0}: {1}")]
    LockFile(String, String),
}

/// The interfaces carrying `underlay_ips`, or `names` when non-empty. Listing is retried on
/// EINTR/EAGAIN: an interrupted netlink dump under concurrent link changes is normal when many
/// containers start at once (upstream lost ADDs to exactly this).
pub fn underlay_interfaces(
    names: &[String],
    underlay_ips: &[String],
) -> Result<Vec<String>, HostError> {
    if !names.is_empty() {
        return Ok(names.to_vec());
    }
    let mut attempt = 0u64;
    let addrs = loop {
        match nix::ifaddrs::getifaddrs() {
            Ok(a) => break a.collect::<Vec<_>>(),
            Err(Errno::EINTR | Errno::EAGAIN | Errno::EBUSY) if attempt < 8 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(5 * attempt));
            }
            Err(e) => return Err(HostError::List(e.to_string())),
        }
    };
    underlay_ips
        .iter()
        .map(|s| {
            let want: IpAddr = s.trim().parse().map_err(|_| HostError::NoLink(s.clone()))?;
            addrs
                .iter()
                .find(|a| {
                    a.address
                        .as_ref()
                        .and_then(|x| x.as_sockaddr_in().map(|v| IpAddr::V4(v.ip())))
                        == Some(want)
                })
                .map(|a| a.interface_name.clone())
                .ok_or_else(|| HostError::NoLink(s.clone()))
        })
        .collect()
}

/// The cell's lease (`overlay_subnet`) from silk-daemon, 5 attempts 500 ms apart (newer upstream).
pub fn daemon_lease(port: u16) -> Result<String, HostError> {
    lease_attempts(port, 5)
}

/// One attempt, for DEL (which reads the tables when it cannot rebuild what ADD wrote).
pub fn daemon_lease_once(port: u16) -> Result<String, HostError> {
    lease_attempts(port, 1)
}

fn lease_attempts(port: u16, attempts: u32) -> Result<String, HostError> {
    let mut last = String::new();
    for i in 0..attempts {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        match silk_cni_skel::http::get(&format!("127.0.0.1:{port}"), "/", Duration::from_secs(5)) {
            Ok(r) if r.status == 200 => {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                if let Some(s) = v.get("overlay_subnet").and_then(|s| s.as_str()) {
                    if let Ok(n) = s.parse::<ipnetwork::IpNetwork>() {
                        return Ok(format!("{}/{}", n.network(), n.prefix()));
                    }
                }
                last = format!("bad network info: {}", r.body);
            }
            Ok(r) => last = format!("status {}: {}", r.status, r.body),
            Err(e) => last = e.to_string(),
        }
    }
    Err(HostError::Lease(attempts, last))
}

/// Creates (or empties) the iptables lock file 0600 and chowns it, as upstream does before use.
pub fn prepare_lock_file(path: &str, owner: Option<(u32, u32)>) -> Result<(), HostError> {
    let err = |e: String| HostError::LockFile(path.into(), e);
    let p = Path::new(path);
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    // Not truncated: another process may hold a flock on it; the file never has content.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(p)
        .map_err(|e| err(e.to_string()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}

/// Resolves `datastore_file_owner`/`_group`; `None` when either is empty.
pub fn resolve_owner(user: &str, group: &str) -> Result<Option<(u32, u32)>, String> {
    if user.is_empty() || group.is_empty() {
        return Ok(None);
    }
    let u = nix::unistd::User::from_name(user)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("unknown user {user}"))?;
    let g = nix::unistd::Group::from_name(group)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("unknown group {group}"))?;
    Ok(Some((u.uid.as_raw(), g.gid.as_raw())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_names_win_and_loopback_is_found_by_address() {
        assert_eq!(
            underlay_interfaces(&["eth9".into()], &["10.0.0.1".into()]).unwrap(),
            vec!["eth9"]
        );
        assert_eq!(
            underlay_interfaces(&[], &["127.0.0.1".into()]).unwrap(),
            vec!["lo"]
        );
        assert_eq!(
            underlay_interfaces(&[], &["192.0.2.77".into()])
                .unwrap_err()
                .to_string(),
            "looking up interface names: unable to find link with ip addr: 192.0.2.77"
        );
        assert_eq!(resolve_owner("", "vcap").unwrap(), None);
        assert_eq!(resolve_owner("root", "root").unwrap(), Some((0, 0)));
    }
}
