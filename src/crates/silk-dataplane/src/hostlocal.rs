//! Host-local IPAM with the stock plugin's on-disk layout (cni.md §3.4), so a cell can switch
//! between the Go and Rust plugins with containers running:
//! `<dataDir>/ipam/<network>/<ip>` holds `<container id>\r\n<ifname>`, `last_reserved_ip.0` the
//! round-robin cursor and `lock` serialises allocations. The network address, the first host
//! address (host-local's default gateway, `.1`) and the broadcast address are never handed out.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ipnetwork::Ipv4Network;

use crate::atomicfile::write_atomic;
use crate::filelock::{FileLock, LockError};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("{0}")]
    Lock(#[from] LockError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to allocate for range 0: no IP addresses available in range set: {0}-{1}")]
    Exhausted(Ipv4Addr, Ipv4Addr),
    #[error("invalid range set 0: subnet {0} too small to allocate from")]
    TooSmall(Ipv4Network),
    #[error("failed to allocate for range 0: {0} has been allocated to {1}, duplicate allocation is not allowed")]
    Duplicate(Ipv4Addr, String),
}

/// One network's allocation directory.
#[derive(Debug, Clone)]
pub struct HostLocal {
    dir: PathBuf,
}

impl HostLocal {
    /// `ipam_dir` is host-local's `dataDir` (silk passes `<config dataDir>/ipam`).
    pub fn new(ipam_dir: &Path, network: &str) -> Self {
        HostLocal {
            dir: ipam_dir.join(network),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> IpamError + 'a {
        move |source| IpamError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    fn locked(&self) -> Result<FileLock, IpamError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.dir)
            .map_err(Self::io("create", &self.dir))?;
        Ok(FileLock::exclusive(&self.dir.join("lock"), 0o600)?)
    }

    /// Reservations as (ip, file content).
    fn reservations(&self) -> Result<Vec<(IpAddr, String)>, IpamError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(Self::io("read dir", &self.dir))? {
            let entry = entry.map_err(Self::io("read dir", &self.dir))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            // A file removed by a concurrent release between listing and reading is skipped.
            if let Ok(content) = std::fs::read_to_string(entry.path()) {
                out.push((ip, content));
            }
        }
        Ok(out)
    }

    /// Reserves the next free address of `subnet` for `id`/`ifname`.
    pub fn allocate(
        &self,
        subnet: Ipv4Network,
        id: &str,
        ifname: &str,
    ) -> Result<Ipv4Addr, IpamError> {
        let net = u32::from(subnet.network());
        let bcast = u32::from(subnet.broadcast());
        if subnet.prefix() > 30 {
            return Err(IpamError::TooSmall(subnet));
        }
        let (first, last) = (net + 2, bcast - 1);
        let _lock = self.locked()?;
        let owner = format!("{id}\r\n{ifname}");
        if let Some((IpAddr::V4(ip), _)) = self
            .reservations()?
            .into_iter()
            .find(|(_, c)| c.trim() == owner)
        {
            return Err(IpamError::Duplicate(ip, id.to_string()));
        }
        let cursor_path = self.dir.join("last_reserved_ip.0");
        let cursor = std::fs::read_to_string(&cursor_path)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|c| (first..=last).contains(c));
        let start = cursor
            .map(|c| if c >= last { first } else { c + 1 })
            .unwrap_or(first);
        let count = last - first + 1;
        for i in 0..count {
            let candidate = first + (start - first + i) % count;
            let ip = Ipv4Addr::from(candidate);
            let path = self.dir.join(ip.to_string());
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(owner.as_bytes())
                        .map_err(Self::io("write", &path))?;
                    write_atomic(&cursor_path, ip.to_string().as_bytes(), 0o600)
                        .map_err(Self::io("write", &cursor_path))?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Self::io("create", &path)(e)),
            }
        }
        Err(IpamError::Exhausted(
            Ipv4Addr::from(net + 1),
            Ipv4Addr::from(bcast - 1),
        ))
    }

    /// Releases every reservation of `id`/`ifname` (or of `id` alone, the old format). Returns
    /// the released addresses; nothing reserved is not an error.
    pub fn release(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, IpamError> {
        if !self.dir.exists() {
            return Ok(vec![]);
        }
        let _lock = self.locked()?;
        let owner = format!("{id}\r\n{ifname}");
        let mut released = Vec::new();
        for (ip, content) in self.reservations()? {
            let c = content.trim();
            if c == owner || c == id {
                let path = self.dir.join(ip.to_string());
                match std::fs::remove_file(&path) {
                    Ok(()) => released.push(ip),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Self::io("remove", &path)(e)),
                }
            }
        }
        Ok(released)
    }

    /// GC: releases every reservation whose owner `keep(id, ifname)` rejects (`ifname` is empty
    /// in the old one-line format). Returns the released addresses with their owner ids.
    pub fn release_unless(
        &self,
        keep: impl Fn(&str, &str) -> bool,
    ) -> Result<Vec<(IpAddr, String)>, IpamError> {
        if !self.dir.exists() {
            return Ok(vec![]);
        }
        let _lock = self.locked()?;
        let mut released = Vec::new();
        for (ip, content) in self.reservations()? {
            let content = content.trim();
            let (id, ifname) = content.split_once("\r\n").unwrap_or((content, ""));
            if keep(id, ifname) {
                continue;
            }
            let path = self.dir.join(ip.to_string());
            match std::fs::remove_file(&path) {
                Ok(()) => released.push((ip, id.to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Self::io("remove", &path)(e)),
            }
        }
        Ok(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> (tempfile::TempDir, HostLocal) {
        let d = tempfile::tempdir().unwrap();
        let h = HostLocal::new(d.path(), "silk");
        (d, h)
    }

    #[test]
    fn first_address_is_dot_2_with_upstream_file_layout() {
        let (_d, h) = pool();
        let ip = h
            .allocate("10.255.30.0/24".parse().unwrap(), "handle-1", "eth0")
            .unwrap();
        assert_eq!(ip, Ipv4Addr::new(10, 255, 30, 2));
        assert_eq!(
            std::fs::read_to_string(h.dir().join("10.255.30.2")).unwrap(),
            "handle-1\r\neth0"
        );
        assert_eq!(
            std::fs::read_to_string(h.dir().join("last_reserved_ip.0")).unwrap(),
            "10.255.30.2"
        );
        assert!(h.dir().join("lock").exists());
    }

    #[test]
    fn round_robin_exhaustion_duplicates_and_release() {
        let (_d, h) = pool();
        let subnet: Ipv4Network = "10.255.30.0/29".parse().unwrap();
        let ips: Vec<_> = (0..5)
            .map(|i| h.allocate(subnet, &format!("c{i}"), "eth0").unwrap())
            .collect();
        assert_eq!(ips.first(), Some(&Ipv4Addr::new(10, 255, 30, 2)));
        assert_eq!(ips.last(), Some(&Ipv4Addr::new(10, 255, 30, 6)));
        let e = h.allocate(subnet, "c9", "eth0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to allocate for range 0: no IP addresses available in range set: 10.255.30.1-10.255.30.6"
        );
        assert!(matches!(
            h.allocate(subnet, "c1", "eth0"),
            Err(IpamError::Duplicate(..))
        ));
        assert_eq!(
            h.release("c1", "eth0").unwrap(),
            vec![IpAddr::V4(Ipv4Addr::new(10, 255, 30, 3))]
        );
        assert!(h.release("c1", "eth0").unwrap().is_empty());
        // The cursor is at .6, so the next allocation wraps to the freed .3.
        assert_eq!(
            h.allocate(subnet, "c10", "eth0").unwrap(),
            Ipv4Addr::new(10, 255, 30, 3)
        );
    }

    #[test]
    fn parallel_allocations_are_distinct() {
        let (_d, h) = pool();
        let subnet: Ipv4Network = "10.255.30.0/24".parse().unwrap();
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let h = h.clone();
                std::thread::spawn(move || h.allocate(subnet, &format!("c{i}"), "eth0").unwrap())
            })
            .collect();
        let mut ips: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 16);
    }

    #[test]
    fn release_unless_sweeps_only_the_attachments_not_kept() {
        let (_d, h) = pool();
        let net = "10.255.30.0/24".parse().unwrap();
        let a = h.allocate(net, "keep-me", "eth0").unwrap();
        let b = h.allocate(net, "gone", "eth0").unwrap();
        std::fs::write(h.dir().join("10.255.30.9"), "old-format").unwrap();
        let released = h
            .release_unless(|id, ifname| id == "keep-me" && ifname == "eth0")
            .unwrap();
        let mut ips: Vec<_> = released.iter().map(|(ip, _)| ip.to_string()).collect();
        ips.sort();
        assert_eq!(ips, vec![b.to_string(), "10.255.30.9".to_string()]);
        assert!(h.dir().join(a.to_string()).exists());
        assert!(!h.dir().join(b.to_string()).exists());
        assert!(h.dir().join("last_reserved_ip.0").exists());
        assert!(h.release_unless(|_, _| true).unwrap().is_empty());
    }
}
