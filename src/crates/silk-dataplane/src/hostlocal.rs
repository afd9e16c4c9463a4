//! Host-local IPAM with the stock plugin's on-disk layout (cni.md §3.4), so a cell can switch
//! between the Go and Rust plugins with containers running.
//!
//! silk asks for one or two range sets, each a single subnet: range set 0 is the cell's IPv4
//! lease, range set 1 the IPv6 prefix from silk-daemon when IPv6 is enabled. All of them share
//! one directory `<dataDir>/ipam/<network>/`:
//! - `<ip>` per reservation, named by the address text (`10.255.30.2`, `2001:db8:ab::2`),
//!   holding `<container id>\r\n<ifname>`;
//! - `last_reserved_ip.<range set index>`: the round-robin cursor of that range set;
//! - `lock`: serialises allocations and releases.
//!
//! As in host-local, a range runs from network+1 to the last address (IPv4: the one before the
//! broadcast address; IPv6: the last address of the prefix, which IPv6 does not reserve), and
//! network+1 is the default gateway, so it is skipped: the first container gets network+2.
//! A subnet with fewer than four addresses (IPv4 /31, /32, IPv6 /127, /128) is refused.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;

use crate::atomicfile::write_atomic;
use crate::filelock::{FileLock, LockError};

/// A reservation being written: its content goes to this file first and is then hard-linked
/// under the address name, so no reader ever sees an empty or half-written reservation.
const PENDING_PREFIX: &str = ".pending.";

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
    #[error("invalid range set {0}: network {1} too small to allocate from")]
    TooSmall(usize, IpNetwork),
    /// One message per failed range set, joined with `;` as host-local does.
    #[error("{}", join(.0))]
    Allocate(Vec<RangeError>),
}

/// Why one range set could not give an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("failed to allocate for range {index}: no IP addresses available in range set: {start}-{end}")]
    Exhausted {
        index: usize,
        start: IpAddr,
        end: IpAddr,
    },
    #[error("failed to allocate for range {0}: {1} has been allocated to {2}, duplicate allocation is not allowed")]
    Duplicate(usize, IpAddr, String),
}

fn join(errors: &[RangeError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(";")
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// One range set (a single subnet) in host-local's canonical form, addresses as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    index: usize,
    v6: bool,
    gateway: u128,
    start: u128,
    end: u128,
}

impl Range {
    fn new(index: usize, subnet: IpNetwork) -> Result<Self, IpamError> {
        let (v6, bits) = match subnet {
            IpNetwork::V4(_) => (false, 32u32),
            IpNetwork::V6(_) => (true, 128u32),
        };
        let host_bits = bits - u32::from(subnet.prefix());
        if host_bits < 2 {
            return Err(IpamError::TooSmall(index, subnet));
        }
        let net = to_u128(subnet.network());
        let host_mask = u128::MAX >> (128 - host_bits);
        let last = net | host_mask;
        Ok(Range {
            index,
            v6,
            gateway: net + 1,
            start: net + 1,
            end: if v6 { last } else { last - 1 },
        })
    }

    fn addr(&self, n: u128) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(n))
        } else {
            // A v4 range holds 32-bit values only.
            IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv6() == self.v6 && (self.start..=self.end).contains(&to_u128(ip))
    }

    /// host-local's round-robin order: from the address after `cursor` (or from the start when
    /// there is no usable cursor) through the end, wrapping to the start, the cursor itself
    /// last; the gateway is skipped.
    fn candidates(&self, cursor: Option<IpAddr>) -> impl Iterator<Item = IpAddr> + '_ {
        let count = self.end - self.start + 1;
        let offset = match cursor.filter(|c| self.contains(*c)).map(to_u128) {
            Some(c) if c < self.end => c + 1 - self.start,
            _ => 0,
        };
        (0..count)
            .map(move |i| {
                // (offset + i) % count without overflowing a /0.
                let k = if i < count - offset {
                    offset + i
                } else {
                    i - (count - offset)
                };
                self.start + k
            })
            .filter(move |a| *a != self.gateway)
            .map(move |a| self.addr(a))
    }

    fn exhausted(&self) -> RangeError {
        RangeError::Exhausted {
            index: self.index,
            start: self.addr(self.start),
            end: self.addr(self.end),
        }
    }
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

    /// Removes pending files left by a process that died mid-allocation (caller holds the lock).
    fn remove_stale_pending(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(PENDING_PREFIX))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    fn cursor_path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("last_reserved_ip.{index}"))
    }

    /// Reserves one address in every range set of `subnets` (in order; index = range set) for
    /// `id`/`ifname` and returns them in the same order. Either every range set gets an address
    /// or none keeps one: range-set failures are collected (host-local's messages joined with
    /// `;`) and the addresses reserved by this call are released again.
    pub fn allocate(
        &self,
        subnets: &[IpNetwork],
        id: &str,
        ifname: &str,
    ) -> Result<Vec<IpAddr>, IpamError> {
        let ranges = subnets
            .iter()
            .enumerate()
            .map(|(i, s)| Range::new(i, *s))
            .collect::<Result<Vec<_>, _>>()?;
        let _lock = self.locked()?;
        self.remove_stale_pending();
        let owner = format!("{id}\r\n{ifname}");
        let owned: Vec<IpAddr> = self
            .reservations()?
            .into_iter()
            .filter(|(_, c)| c.trim() == owner)
            .map(|(ip, _)| ip)
            .collect();
        let pending = self
            .dir
            .join(format!("{PENDING_PREFIX}{}", std::process::id()));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&pending)
                .map_err(Self::io("create", &pending))?;
            f.write_all(owner.as_bytes())
                .map_err(Self::io("write", &pending))?;
            drop(f);
            let mut got = Vec::new();
            let mut errors = Vec::new();
            for r in &ranges {
                if let Some(ip) = owned.iter().find(|ip| r.contains(**ip)) {
                    errors.push(RangeError::Duplicate(r.index, *ip, id.to_string()));
                    continue;
                }
                match self.reserve_in(r, &pending) {
                    Ok(Some(ip)) => got.push(ip),
                    Ok(None) => errors.push(r.exhausted()),
                    Err(e) => {
                        self.unreserve(&got);
                        return Err(e);
                    }
                }
            }
            if errors.is_empty() {
                Ok(got)
            } else {
                self.unreserve(&got);
                Err(IpamError::Allocate(errors))
            }
        })();
        let _ = std::fs::remove_file(&pending);
        result
    }

    /// Links `pending` under the first free candidate of `r` and moves the cursor there.
    /// `Ok(None)` when every address of the range is taken.
    fn reserve_in(&self, r: &Range, pending: &Path) -> Result<Option<IpAddr>, IpamError> {
        let cursor_path = self.cursor_path(r.index);
        let cursor = std::fs::read_to_string(&cursor_path)
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok());
        for ip in r.candidates(cursor) {
            let path = self.dir.join(ip.to_string());
            match std::fs::hard_link(pending, &path) {
                Ok(()) => {
                    write_atomic(&cursor_path, ip.to_string().as_bytes(), 0o600)
                        .map_err(Self::io("write", &cursor_path))?;
                    return Ok(Some(ip));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Self::io("create", &path)(e)),
            }
        }
        Ok(None)
    }

    fn unreserve(&self, ips: &[IpAddr]) {
        for ip in ips {
            let _ = std::fs::remove_file(self.dir.join(ip.to_string()));
        }
    }

    /// Releases every reservation of `id`/`ifname` (or of `id` alone, the old format) in every
    /// range set. Returns the released addresses; nothing reserved is not an error.
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
        released.sort();
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

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn read(h: &HostLocal, name: &str) -> String {
        std::fs::read_to_string(h.dir().join(name)).unwrap()
    }

    /// Directory entries other than `lock`, sorted.
    fn files(h: &HostLocal) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(h.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lock")
            .collect();
        v.sort();
        v
    }

    #[test]
    fn first_address_is_dot_2_with_upstream_file_layout() {
        let (_d, h) = pool();
        let ips = h
            .allocate(&[net("10.255.30.0/24")], "handle-1", "eth0")
            .unwrap();
        assert_eq!(ips, vec![ip("10.255.30.2")]);
        assert_eq!(read(&h, "10.255.30.2"), "handle-1\r\neth0");
        assert_eq!(read(&h, "last_reserved_ip.0"), "10.255.30.2");
        assert!(h.dir().join("lock").exists());
        assert_eq!(files(&h), vec!["10.255.30.2", "last_reserved_ip.0"]);
    }

    #[test]
    fn round_robin_exhaustion_duplicates_and_release() {
        let (_d, h) = pool();
        let subnet = [net("10.255.30.0/29")];
        let ips: Vec<_> = (0..5)
            .map(|i| h.allocate(&subnet, &format!("c{i}"), "eth0").unwrap()[0])
            .collect();
        assert_eq!(ips.first(), Some(&ip("10.255.30.2")));
        assert_eq!(ips.last(), Some(&ip("10.255.30.6")));
        let e = h.allocate(&subnet, "c9", "eth0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to allocate for range 0: no IP addresses available in range set: 10.255.30.1-10.255.30.6"
        );
        assert_eq!(
            h.allocate(&subnet, "c1", "eth0").unwrap_err().to_string(),
            "failed to allocate for range 0: 10.255.30.3 has been allocated to c1, duplicate allocation is not allowed"
        );
        assert_eq!(h.release("c1", "eth0").unwrap(), vec![ip("10.255.30.3")]);
        assert!(h.release("c1", "eth0").unwrap().is_empty());
        // The cursor is at .6, so the next allocation wraps to the freed .3.
        assert_eq!(
            h.allocate(&subnet, "c10", "eth0").unwrap(),
            vec![ip("10.255.30.3")]
        );
    }

    #[test]
    fn ipv6_range_set_1_is_sequential_from_network_plus_2_with_its_own_cursor() {
        let (_d, h) = pool();
        let sets = [net("10.255.30.0/24"), net("2001:db8:ab::/64")];
        let a = h.allocate(&sets, "c0", "eth0").unwrap();
        assert_eq!(a, vec![ip("10.255.30.2"), ip("2001:db8:ab::2")]);
        let b = h.allocate(&sets, "c1", "eth0").unwrap();
        assert_eq!(b, vec![ip("10.255.30.3"), ip("2001:db8:ab::3")]);
        // Files are named by the address text (RFC 5952, as Go prints it), one cursor per set.
        assert_eq!(read(&h, "2001:db8:ab::2"), "c0\r\neth0");
        assert_eq!(read(&h, "2001:db8:ab::3"), "c1\r\neth0");
        assert_eq!(read(&h, "last_reserved_ip.0"), "10.255.30.3");
        assert_eq!(read(&h, "last_reserved_ip.1"), "2001:db8:ab::3");
        assert_eq!(
            files(&h),
            vec![
                "10.255.30.2",
                "10.255.30.3",
                "2001:db8:ab::2",
                "2001:db8:ab::3",
                "last_reserved_ip.0",
                "last_reserved_ip.1"
            ]
        );
        // DEL releases both families of one container and nothing else.
        assert_eq!(
            h.release("c0", "eth0").unwrap(),
            vec![ip("10.255.30.2"), ip("2001:db8:ab::2")]
        );
        assert!(h.release("c0", "eth0").unwrap().is_empty());
        assert!(h.dir().join("2001:db8:ab::3").exists());
        // Round robin continues after the cursor rather than reusing ::2 at once.
        assert_eq!(
            h.allocate(&sets, "c2", "eth0").unwrap(),
            vec![ip("10.255.30.4"), ip("2001:db8:ab::4")]
        );
    }

    #[test]
    fn ipv6_last_address_is_usable_and_a_126_holds_two() {
        let (_d, h) = pool();
        // ::0 is the network address, ::1 the gateway; IPv6 has no broadcast, so ::3 is used.
        let sets = [net("2001:db8::/126")];
        assert_eq!(
            h.allocate(&sets, "a", "eth0").unwrap(),
            vec![ip("2001:db8::2")]
        );
        assert_eq!(
            h.allocate(&sets, "b", "eth0").unwrap(),
            vec![ip("2001:db8::3")]
        );
        assert_eq!(
            h.allocate(&sets, "c", "eth0").unwrap_err().to_string(),
            "failed to allocate for range 0: no IP addresses available in range set: 2001:db8::1-2001:db8::3"
        );
        h.release("a", "eth0").unwrap();
        // Cursor at the end wraps to the start, skipping the gateway.
        assert_eq!(
            h.allocate(&sets, "c", "eth0").unwrap(),
            vec![ip("2001:db8::2")]
        );
    }

    #[test]
    fn a_failing_range_set_rolls_back_the_other() {
        let (_d, h) = pool();
        let sets = [net("10.255.30.0/24"), net("2001:db8::/126")];
        h.allocate(&sets, "a", "eth0").unwrap();
        h.allocate(&sets, "b", "eth0").unwrap();
        let e = h.allocate(&sets, "c", "eth0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to allocate for range 1: no IP addresses available in range set: 2001:db8::1-2001:db8::3"
        );
        // The IPv4 address taken for "c" before range set 1 failed is free again.
        assert!(!h.dir().join("10.255.30.4").exists());
        assert!(h.release("c", "eth0").unwrap().is_empty());
        // Both range sets failing report both, joined as host-local does.
        let e = h
            .allocate(&[net("10.255.30.0/30"), net("2001:db8::/126")], "a", "eth0")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to allocate for range 0: 10.255.30.2 has been allocated to a, duplicate allocation is not allowed;\
             failed to allocate for range 1: 2001:db8::2 has been allocated to a, duplicate allocation is not allowed"
        );
        assert!(files(&h).iter().all(|f| !f.starts_with(PENDING_PREFIX)));
    }

    #[test]
    fn too_small_subnets_are_refused_before_anything_is_reserved() {
        let (_d, h) = pool();
        for (sets, msg) in [
            (
                vec![net("10.255.30.0/31")],
                "invalid range set 0: network 10.255.30.0/31 too small to allocate from",
            ),
            (
                vec![net("10.255.30.0/24"), net("2001:db8::/127")],
                "invalid range set 1: network 2001:db8::/127 too small to allocate from",
            ),
        ] {
            assert_eq!(h.allocate(&sets, "a", "eth0").unwrap_err().to_string(), msg);
        }
        assert!(!h.dir().exists());
    }

    #[test]
    fn cursor_outside_the_range_restarts_at_the_beginning() {
        let (_d, h) = pool();
        std::fs::create_dir_all(h.dir()).unwrap();
        std::fs::write(h.dir().join("last_reserved_ip.1"), "10.9.9.9").unwrap();
        std::fs::write(h.dir().join(".pending.99999"), "dead\r\neth0").unwrap();
        assert_eq!(
            h.allocate(
                &[net("10.255.30.0/24"), net("2001:db8:ab::/64")],
                "a",
                "eth0"
            )
            .unwrap(),
            vec![ip("10.255.30.2"), ip("2001:db8:ab::2")]
        );
        // A pending file left by a dead allocator is cleared under the lock.
        assert!(!h.dir().join(".pending.99999").exists());
        // The address text is the compressed form Go's net.IP.String() also produces.
        assert_eq!(
            ip("2001:0db8:0000:0000:0001:0000:0000:0001").to_string(),
            "2001:db8::1:0:0:1"
        );
    }

    #[test]
    fn parallel_allocations_are_distinct() {
        let (_d, h) = pool();
        let sets = [net("10.255.30.0/24"), net("2001:db8:ab::/64")];
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let h = h.clone();
                std::thread::spawn(move || h.allocate(&sets, &format!("c{i}"), "eth0").unwrap())
            })
            .collect();
        let mut ips: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 32);
    }

    #[test]
    fn release_unless_sweeps_only_the_attachments_not_kept() {
        let (_d, h) = pool();
        let nets: [IpNetwork; 2] = [
            "10.255.30.0/24".parse().unwrap(),
            "2001:db8:ab::/64".parse().unwrap(),
        ];
        let a = h.allocate(&nets, "keep-me", "eth0").unwrap();
        let b = h.allocate(&nets, "gone", "eth0").unwrap();
        std::fs::write(h.dir().join("10.255.30.9"), "old-format").unwrap();
        let released = h
            .release_unless(|id, ifname| id == "keep-me" && ifname == "eth0")
            .unwrap();
        let mut ips: Vec<_> = released.iter().map(|(ip, _)| ip.to_string()).collect();
        ips.sort();
        let mut expected: Vec<String> = b.iter().map(|ip| ip.to_string()).collect();
        expected.push("10.255.30.9".to_string());
        expected.sort();
        assert_eq!(ips, expected);
        for ip in &a {
            assert!(h.dir().join(ip.to_string()).exists());
        }
        for ip in &b {
            assert!(!h.dir().join(ip.to_string()).exists());
        }
        assert!(h.dir().join("last_reserved_ip.0").exists());
        assert!(h.release_unless(|_, _| true).unwrap().is_empty());
    }
}
