//! Container lookup by IP in the container metadata store (`store.json`, policy contract §3.2),
//! as upstream's `repository.ContainerRepo`: the entry whose `ip` equals the address gives the
//! handle and the `app_id`, `space_id`, `org_id` metadata; a miss gives empty fields.
//!
//! The store is re-read only when its file changes (inode, size or mtime), so a busy log costs
//! one `stat` per line, and memory stays bounded by the store itself.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::Serialize;
use silk_dataplane::datastore::{Entries, MetadataStore, StoreError};

/// The `source` / `destination` object of an output line; field order is upstream's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    pub container_id: String,
    pub app_guid: String,
    pub space_guid: String,
    pub organization_guid: String,
    pub host_ip: String,
    pub host_guid: String,
}

/// Finds the container with `ip` in `entries` (first handle in sorted order when two share it).
/// `host_ip` and `host_guid` are left empty for the caller.
pub fn find_by_ip(entries: &Entries, ip: &str) -> ContainerInfo {
    let Some(c) = entries.values().find(|c| c.ip == ip) else {
        return ContainerInfo::default();
    };
    let meta = |key: &str| {
        c.metadata
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    ContainerInfo {
        container_id: c.handle.clone(),
        app_guid: meta("app_id"),
        space_guid: meta("space_id"),
        organization_guid: meta("org_id"),
        host_ip: String::new(),
        host_guid: String::new(),
    }
}

/// The metadata store, cached until its file changes.
pub struct ContainerRepo {
    store: MetadataStore,
    path: PathBuf,
    seen: Option<(u64, u64, i64, i64)>,
    entries: Entries,
}

impl ContainerRepo {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        ContainerRepo {
            store: MetadataStore::new(path.clone(), None),
            path,
            seen: None,
            entries: Entries::new(),
        }
    }

    /// The container with `ip`, reading the store again if it changed since the last call.
    pub fn get_by_ip(&mut self, ip: &str) -> Result<ContainerInfo, StoreError> {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()));
        if stamp.is_none() || stamp != self.seen {
            self.entries = self.store.read_all()?;
            self.seen = stamp;
        }
        Ok(find_by_ip(&self.entries, ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store_with(dir: &std::path::Path) -> MetadataStore {
        MetadataStore::new(dir.join("store.json"), None)
    }

    #[test]
    fn finds_container_by_ip_with_its_metadata() {
        let d = tempfile::tempdir().unwrap();
        let s = store_with(d.path());
        s.add(
            "6f1e4f5a-1b2c-4d3e-8f9a-0b1c2d3e4f5a",
            "10.255.7.4",
            None,
            json!({"app_id": "app-1", "space_id": "space-1", "org_id": "org-1", "policy_group_id": "pg"}),
        )
        .unwrap();
        s.add("other", "10.255.7.3", None, json!({"app_id": "app-2"}))
            .unwrap();
        let mut repo = ContainerRepo::new(d.path().join("store.json"));
        assert_eq!(
            repo.get_by_ip("10.255.7.4").unwrap(),
            ContainerInfo {
                container_id: "6f1e4f5a-1b2c-4d3e-8f9a-0b1c2d3e4f5a".into(),
                app_guid: "app-1".into(),
                space_guid: "space-1".into(),
                organization_guid: "org-1".into(),
                ..Default::default()
            }
        );
        // Metadata without the keys (or with non-strings) gives empty fields.
        let other = repo.get_by_ip("10.255.7.3").unwrap();
        assert_eq!(other.app_guid, "app-2");
        assert_eq!(other.space_guid, "");
    }

    #[test]
    fn miss_and_missing_store_give_empty_fields() {
        let d = tempfile::tempdir().unwrap();
        let mut repo = ContainerRepo::new(d.path().join("store.json"));
        assert_eq!(
            repo.get_by_ip("10.255.7.4").unwrap(),
            ContainerInfo::default()
        );
    }

    #[test]
    fn sees_changes_to_the_store() {
        let d = tempfile::tempdir().unwrap();
        let s = store_with(d.path());
        s.add("c1", "10.255.0.1", None, json!({"app_id": "a1"}))
            .unwrap();
        let mut repo = ContainerRepo::new(d.path().join("store.json"));
        assert_eq!(repo.get_by_ip("10.255.0.1").unwrap().container_id, "c1");
        s.delete("c1").unwrap();
        s.add("c3", "10.255.0.1", None, json!({"app_id": "a3"}))
            .unwrap();
        let got = repo.get_by_ip("10.255.0.1").unwrap();
        assert_eq!(
            (got.container_id.as_str(), got.app_guid.as_str()),
            ("c3", "a3")
        );
    }

    #[test]
    fn corrupt_store_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("store.json"), "{not json").unwrap();
        let mut repo = ContainerRepo::new(d.path().join("store.json"));
        assert!(repo.get_by_ip("10.255.0.1").is_err());
    }
}
