//! The two JSON datastores of the CNI plugins, crash-safe and with upstream's locking.
//!
//! - [`SilkStore`] (`/var/vcap/data/silk/store.json`, cni.md §3.10): keyed by
//!   `basename(CNI_NETNS)`, metadata always `null`, flock on the data file itself.
//! - [`MetadataStore`] (`/var/vcap/data/container-metadata/store.json`, cni.md §4.14): keyed by
//!   `CNI_CONTAINERID`, flock on `<path>_lock`, every write bumps `<path>_version`, files chowned
//!   to the configured owner.
//!
//! Writes go to a temporary file renamed over the data file, so a crash never leaves a
//! truncated store. With the lock on the data file itself, a waiter can end up holding the lock
//! of a replaced inode; it notices and locks again.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::atomicfile::write_atomic;
use crate::filelock::{FileLock, LockError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Lock(#[from] LockError),
    #[error("reading file: {0}")]
    Read(#[source] std::io::Error),
    #[error("decoding file: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("writing file: {0}")]
    Write(#[source] std::io::Error),
    #[error("entry does not exist")]
    Missing,
    #[error("chown {path}: {msg}")]
    Chown { path: PathBuf, msg: String },
}

/// One container's entry. `ipv6` is tolerated when absent (3.53.0 files). The metadata store
/// always writes it (newer upstream has no omitempty there, so it is `""` without IPv6); the
/// silk store writes it only when the container has an IPv6 address (omitempty upstream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub handle: String,
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    #[serde(default)]
    pub metadata: Value,
}

pub type Entries = BTreeMap<String, Container>;

pub(crate) fn decode(text: &str) -> Result<Entries, StoreError> {
    if text.trim().is_empty() {
        return Ok(Entries::new());
    }
    serde_json::from_str(text).map_err(StoreError::Decode)
}

pub(crate) fn encode(entries: &Entries) -> Vec<u8> {
    // A map of plain structs always serialises.
    let mut out = serde_json::to_vec(entries).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

fn read(path: &Path) -> Result<Entries, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(t) => decode(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Entries::new()),
        Err(e) => Err(StoreError::Read(e)),
    }
}

// === impl SilkStore ===

/// silk-cni's store.
#[derive(Debug, Clone)]
pub struct SilkStore {
    pub path: PathBuf,
}

impl SilkStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SilkStore { path: path.into() }
    }

    /// Locks the data file, making sure the lock is on the inode currently at `path`.
    fn lock(&self) -> Result<FileLock, StoreError> {
        loop {
            let lock = FileLock::exclusive(&self.path, 0o600)?;
            let held = lock.file().metadata().map_err(StoreError::Read)?.ino();
            match std::fs::metadata(&self.path) {
                Ok(m) if m.ino() == held => return Ok(lock),
                _ => continue,
            }
        }
    }

    fn modify(&self, f: impl FnOnce(&mut Entries)) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let mut entries = read(&self.path)?;
        f(&mut entries);
        write_atomic(&self.path, &encode(&entries), 0o600).map_err(StoreError::Write)
    }

    /// Adds or replaces `handle`'s entry; `ipv6` is written only when given and non-empty.
    pub fn add(&self, handle: &str, ip: &str, ipv6: Option<&str>) -> Result<(), StoreError> {
        let entry = Container {
            handle: handle.into(),
            ip: ip.into(),
            ipv6: ipv6.filter(|v| !v.is_empty()).map(str::to_string),
            metadata: Value::Null,
        };
        self.modify(|e| {
            e.insert(handle.into(), entry);
        })
    }

    pub fn delete(&self, handle: &str) -> Result<(), StoreError> {
        self.modify(|e| {
            e.remove(handle);
        })
    }

    pub fn read_all(&self) -> Result<Entries, StoreError> {
        read(&self.path)
    }

    /// GC: drops every entry `keep` rejects, returning them.
    pub fn retain(&self, keep: impl Fn(&Container) -> bool) -> Result<Vec<Container>, StoreError> {
        let mut dropped = Vec::new();
        self.modify(|e| {
            e.retain(|_, c| {
                let k = keep(c);
                if !k {
                    dropped.push(c.clone());
                }
                k
            });
        })?;
        Ok(dropped)
    }

    /// `handle`'s entry, read without taking the lock (writes replace the file atomically).
    pub fn get(&self, handle: &str) -> Result<Option<Container>, StoreError> {
        Ok(read(&self.path)?.remove(handle))
    }
}

// === impl MetadataStore ===

/// The container metadata store shared with vxlan-policy-agent, iptables-logger and the drain.
#[derive(Debug, Clone)]
pub struct MetadataStore {
    pub path: PathBuf,
    /// `(uid, gid)` applied to the store files after every write.
    pub owner: Option<(u32, u32)>,
}

impl MetadataStore {
    pub fn new(path: impl Into<PathBuf>, owner: Option<(u32, u32)>) -> Self {
        MetadataStore {
            path: path.into(),
            owner,
        }
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(suffix);
        PathBuf::from(p)
    }

    fn chown(&self, path: &Path) -> Result<(), StoreError> {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
                StoreError::Chown {
                    path: path.into(),
                    msg: e.to_string(),
                }
            })?;
        }
        Ok(())
    }

    fn modify<T>(
        &self,
        f: impl FnOnce(&mut Entries) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self.modify_unless(|e| f(e).map(Ok::<T, std::convert::Infallible>))? {
            Ok(t) => Ok(t),
            Err(never) => match never {},
        }
    }

    /// As `modify`, but an inner `Err` (a refusal) leaves the files untouched.
    fn modify_unless<T, E>(
        &self,
        f: impl FnOnce(&mut Entries) -> Result<Result<T, E>, StoreError>,
    ) -> Result<Result<T, E>, StoreError> {
        let lock_path = self.sibling("_lock");
        let _lock = FileLock::exclusive(&lock_path, 0o600)?;
        let mut entries = read(&self.path)?;
        let out = f(&mut entries)?;
        if out.is_err() {
            return Ok(out);
        }
        write_atomic(&self.path, &encode(&entries), 0o600).map_err(StoreError::Write)?;
        let version_path = self.sibling("_version");
        let version: u64 = std::fs::read_to_string(&version_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1);
        write_atomic(&version_path, (version + 1).to_string().as_bytes(), 0o600)
            .map_err(StoreError::Write)?;
        for p in [&self.path, &lock_path, &version_path] {
            self.chown(p)?;
        }
        Ok(out)
    }

    /// Adds or replaces `handle`'s entry.
    pub fn add(
        &self,
        handle: &str,
        ip: &str,
        ipv6: Option<&str>,
        metadata: Value,
    ) -> Result<(), StoreError> {
        match self.add_unless(handle, ip, ipv6, metadata, |_| {
            None::<std::convert::Infallible>
        })? {
            Ok(()) => Ok(()),
            Err(never) => match never {},
        }
    }

    /// Adds or replaces `handle`'s entry unless `refuse`, shown the entries under the store
    /// lock, names a reason: then nothing is written and the reason comes back. The lock makes
    /// the check and the write one step for every writer of the store.
    pub fn add_unless<E>(
        &self,
        handle: &str,
        ip: &str,
        ipv6: Option<&str>,
        metadata: Value,
        refuse: impl FnOnce(&Entries) -> Option<E>,
    ) -> Result<Result<(), E>, StoreError> {
        let entry = Container {
            handle: handle.into(),
            ip: ip.into(),
            ipv6: Some(ipv6.unwrap_or("").to_string()),
            metadata,
        };
        self.modify_unless(|e| {
            if let Some(reason) = refuse(e) {
                return Ok(Err(reason));
            }
            e.insert(handle.into(), entry);
            Ok(Ok(()))
        })
    }

    /// Removes `handle`, returning its entry if there was one (a missing one still bumps the version).
    pub fn delete(&self, handle: &str) -> Result<Option<Container>, StoreError> {
        self.modify(|e| Ok(e.remove(handle)))
    }

    /// Replaces the metadata of an existing entry (silk-datastore-syncer).
    pub fn update_metadata(&self, handle: &str, metadata: Value) -> Result<(), StoreError> {
        self.modify(|e| {
            let entry = e.get_mut(handle).ok_or(StoreError::Missing)?;
            entry.metadata = metadata;
            Ok(())
        })
    }

    pub fn read_all(&self) -> Result<Entries, StoreError> {
        read(&self.path)
    }

    /// GC: drops every entry whose handle `keep` rejects, returning them (one version bump).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<Container>, StoreError> {
        self.modify(|e| {
            let gone: Vec<String> = e.keys().filter(|h| !keep(h)).cloned().collect();
            Ok(gone.iter().filter_map(|h| e.remove(h)).collect())
        })
    }

    pub fn version(&self) -> u64 {
        std::fs::read_to_string(self.sibling("_version"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silk_store_matches_upstream_format() {
        let d = tempfile::tempdir().unwrap();
        let s = SilkStore::new(d.path().join("silk/store.json"));
        s.add("5f3c9a1e-7b2d-4c8e-6a91-0d4e", "10.255.30.2", None)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&s.path).unwrap(),
            "{\"5f3c9a1e-7b2d-4c8e-6a91-0d4e\":{\"handle\":\"5f3c9a1e-7b2d-4c8e-6a91-0d4e\",\"ip\":\"10.255.30.2\",\"metadata\":null}}\n"
        );
        // With IPv6 the entry gains "ipv6"; an empty value is omitted as upstream's omitempty does.
        s.add("h6", "10.255.30.3", Some("2001:db8:ab::2")).unwrap();
        s.add("h4", "10.255.30.4", Some("")).unwrap();
        assert!(std::fs::read_to_string(&s.path).unwrap().contains(
            "\"h6\":{\"handle\":\"h6\",\"ip\":\"10.255.30.3\",\"ipv6\":\"2001:db8:ab::2\",\"metadata\":null}"
        ));
        assert!(std::fs::read_to_string(&s.path)
            .unwrap()
            .contains("\"h4\":{\"handle\":\"h4\",\"ip\":\"10.255.30.4\",\"metadata\":null}"));
        assert_eq!(
            s.get("h6").unwrap().unwrap().ipv6.as_deref(),
            Some("2001:db8:ab::2")
        );
        assert_eq!(s.get("nope").unwrap(), None);
        s.delete("h6").unwrap();
        s.delete("h4").unwrap();
        s.delete("5f3c9a1e-7b2d-4c8e-6a91-0d4e").unwrap();
        s.delete("5f3c9a1e-7b2d-4c8e-6a91-0d4e").unwrap();
        assert_eq!(std::fs::read_to_string(&s.path).unwrap(), "{}\n");
    }

    #[test]
    fn metadata_store_bumps_version_on_every_write() {
        let d = tempfile::tempdir().unwrap();
        let s = MetadataStore::new(d.path().join("store.json"), None);
        s.add(
            "h",
            "10.255.30.2",
            None,
            serde_json::json!({"container_workload": "app"}),
        )
        .unwrap();
        assert_eq!(s.version(), 2);
        assert_eq!(
            std::fs::read_to_string(&s.path).unwrap(),
            "{\"h\":{\"handle\":\"h\",\"ip\":\"10.255.30.2\",\"ipv6\":\"\",\"metadata\":{\"container_workload\":\"app\"}}}\n"
        );
        assert!(d.path().join("store.json_lock").exists());
        assert_eq!(s.delete("h").unwrap().unwrap().ip, "10.255.30.2");
        assert_eq!(s.delete("h").unwrap(), None);
        assert_eq!(s.version(), 4);
        assert!(matches!(
            s.update_metadata("h", Value::Null),
            Err(StoreError::Missing)
        ));
    }

    #[test]
    fn corrupt_store_fails_with_decode_error_and_old_format_reads() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("store.json");
        std::fs::write(&p, "bad").unwrap();
        let s = MetadataStore::new(&p, None);
        assert!(s
            .add("h", "1.2.3.4", None, Value::Null)
            .unwrap_err()
            .to_string()
            .starts_with("decoding file: "));
        std::fs::write(&p, r#"{"h":{"handle":"h","ip":"1.2.3.4","metadata":null}}"#).unwrap();
        assert_eq!(s.read_all().unwrap()["h"].ipv6, None);
    }

    #[test]
    fn parallel_silk_store_writers_lose_nothing() {
        let d = tempfile::tempdir().unwrap();
        let s = SilkStore::new(d.path().join("store.json"));
        let threads: Vec<_> = (0..20)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    s.add(&format!("h{i}"), &format!("10.0.0.{i}"), None)
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.read_all().unwrap().len(), 20);
    }

    #[test]
    fn retain_drops_what_gc_does_not_keep() {
        let d = tempfile::tempdir().unwrap();
        let s = SilkStore::new(d.path().join("silk/store.json"));
        s.add("ns-a", "10.255.30.2", None).unwrap();
        s.add("ns-b", "10.255.30.3", Some("2001:db8::3")).unwrap();
        let dropped = s.retain(|c| c.ip != "10.255.30.3").unwrap();
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].handle, "ns-b");
        assert_eq!(
            s.read_all().unwrap().keys().collect::<Vec<_>>(),
            vec!["ns-a"]
        );

        let m = MetadataStore::new(d.path().join("meta/store.json"), None);
        m.add("h1", "10.255.30.2", None, Value::Null).unwrap();
        m.add("h2", "10.255.30.3", None, Value::Null).unwrap();
        let v = m.version();
        let gone = m.retain(|h| h == "h1").unwrap();
        assert_eq!(
            gone.iter().map(|c| c.handle.as_str()).collect::<Vec<_>>(),
            vec!["h2"]
        );
        assert_eq!(m.read_all().unwrap().keys().collect::<Vec<_>>(), vec!["h1"]);
        assert_eq!(m.version(), v + 1);
    }

    #[test]
    fn add_unless_writes_nothing_when_refused() {
        let d = tempfile::tempdir().unwrap();
        let m = MetadataStore::new(d.path().join("meta/store.json"), None);
        m.add("h1", "10.255.30.2", None, Value::Null).unwrap();
        let v = m.version();
        let before = std::fs::read_to_string(&m.path).unwrap();
        let refused = m
            .add_unless("h2", "10.255.30.3", None, Value::Null, |e| {
                e.contains_key("h1").then_some("h1 is there")
            })
            .unwrap();
        assert_eq!(refused, Err("h1 is there"));
        assert_eq!(std::fs::read_to_string(&m.path).unwrap(), before);
        assert_eq!(m.version(), v, "a refusal bumps nothing");
        m.add_unless(
            "h2",
            "10.255.30.3",
            Some("2001:db8::3"),
            Value::Null,
            |_| None::<()>,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            m.read_all().unwrap()["h2"].ipv6.as_deref(),
            Some("2001:db8::3")
        );
        assert_eq!(m.version(), v + 1);
    }
}
