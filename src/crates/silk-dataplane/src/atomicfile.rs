//! Crash-safe file replacement: write a temporary file in the same directory and rename it
//! over the target. Readers see the old or the new content, never a truncated file (upstream
//! truncates and rewrites in place). `durable` adds fsync of the file and the directory; the
//! plugins skip it on the container hot path, where ext4's replace-by-rename ordering
//! (auto_da_alloc) already keeps the old or the new content across a crash and an fsync costs
//! milliseconds per write.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces `path` with `data` (mode `mode`), without fsync.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    write_replace(path, data, mode, false)
}

/// Replaces `path` with `data` and fsyncs the file and its directory before returning.
pub fn write_durable(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    write_replace(path, data, mode, true)
}

fn write_replace(path: &Path, data: &[u8], mode: u32, durable: bool) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("store.json");
        write_durable(&p, b"{}\n", 0o600).unwrap();
        write_atomic(&p, b"{\"a\":1}\n", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
