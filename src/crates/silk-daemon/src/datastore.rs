//! Counting containers: the daemon counts the silk datastore's entries at start-up (contract
//! §5.5) and the drain waits for the container metadata store to empty (§6.2). The stores
//! themselves (format, locking) live in `silk_dataplane::datastore`.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use silk_dataplane::datastore::{MetadataStore, SilkStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    #[error("create datastore {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("read datastore {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: StoreError,
    },
}

/// Entries in the silk datastore; the directory (mode 0700) and an empty file (mode 0600) are
/// created when absent, as upstream's daemon does at start.
pub fn count_silk_entries(path: &Path) -> Result<usize, DatastoreError> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| DatastoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| DatastoreError::Dir {
            path: path.display().to_string(),
            source,
        })?;
    SilkStore::new(path)
        .read_all()
        .map(|e| e.len())
        .map_err(|source| DatastoreError::Store {
            path: path.display().to_string(),
            source,
        })
}

/// Entries in the container metadata store (missing file: 0).
pub fn count_metadata_entries(path: &Path) -> Result<usize, DatastoreError> {
    MetadataStore::new(path, None)
        .read_all()
        .map(|e| e.len())
        .map_err(|source| DatastoreError::Store {
            path: path.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_creates_dir() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("silk/store.json");
        assert_eq!(count_silk_entries(&p).unwrap(), 0);
        assert!(p.is_file());
        std::fs::write(
            &p,
            r#"{"a":{"handle":"h","ip":"10.255.7.2","metadata":null}}"#,
        )
        .unwrap();
        assert_eq!(count_silk_entries(&p).unwrap(), 1);
        let m = dir.path().join("meta.json");
        assert_eq!(count_metadata_entries(&m).unwrap(), 0);
        std::fs::write(&m, "{}").unwrap();
        assert_eq!(count_metadata_entries(&m).unwrap(), 0);
    }
}
