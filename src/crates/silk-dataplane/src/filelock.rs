//! Exclusive `flock` on a file, retried on EINTR/EAGAIN, released on drop.
//!
//! Used for the iptables lock shared with Garden and vxlan-policy-agent
//! (`/var/vcap/data/garden-cni/iptables.lock`), the datastores and the IPAM directory lock.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("open lock file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// An exclusive lock held until drop. Derefs to the locked file so a datastore can read and
/// write the file it locked.
#[derive(Debug)]
pub struct FileLock {
    file: Flock<File>,
}

impl FileLock {
    /// Opens (creating with `mode`; missing parent directories get 0700, as the Go filelock
    /// does) and locks `path` exclusively, waiting for other holders.
    pub fn exclusive(path: &Path, mode: u32) -> Result<FileLock, LockError> {
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| LockError::Open {
                    path: path.into(),
                    source,
                })?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(mode)
            .open(path)
            .map_err(|source| LockError::Open {
                path: path.into(),
                source,
            })?;
        let mut attempts = 0u32;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(file) => return Ok(FileLock { file }),
                // A signal interrupted the wait, or the kernel asked us to try again: retry.
                Err((f, Errno::EINTR | Errno::EAGAIN)) if attempts < 1000 => {
                    attempts += 1;
                    file = f;
                    if attempts > 1 {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
                Err((_, source)) => {
                    return Err(LockError::Lock {
                        path: path.into(),
                        source,
                    })
                }
            }
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn serialises_holders_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/lock");
        let inside = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (path, inside) = (path.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let _g = FileLock::exclusive(&path, 0o600).unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(path.exists());
    }
}
