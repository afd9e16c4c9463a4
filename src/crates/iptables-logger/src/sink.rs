//! The output log, `iptables.log`: opened for append (created 0644, never truncated) and opened
//! again when logrotate moves or removes it, as upstream's rotatable sink does. The check runs
//! at most once a second, before a write.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const CHECK_EVERY: Duration = Duration::from_secs(1);

pub struct RotatableSink {
    path: PathBuf,
    file: File,
    id: (u64, u64),
    checked: Instant,
}

fn open(path: &std::path::Path) -> io::Result<(File, (u64, u64))> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)?;
    let m = file.metadata()?;
    Ok((file, (m.dev(), m.ino())))
}

impl RotatableSink {
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let (file, id) = open(&path)?;
        Ok(RotatableSink {
            path,
            file,
            id,
            checked: Instant::now(),
        })
    }

    /// Opens the path again when it no longer names the open file (moved, removed, replaced).
    pub fn reopen_if_rotated(&mut self) -> io::Result<()> {
        let current = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if current != Some(self.id) {
            let (file, id) = open(&self.path)?;
            self.file = file;
            self.id = id;
        }
        self.checked = Instant::now();
        Ok(())
    }

    /// Appends `line` and a newline in one write.
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        if self.checked.elapsed() >= CHECK_EVERY {
            self.reopen_if_rotated()?;
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.file.write_all(&buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_follows_a_moved_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("iptables.log");
        std::fs::write(&p, "kept\n").unwrap();
        let mut s = RotatableSink::open(&p).unwrap();
        s.write_line("one").unwrap();
        std::fs::rename(&p, d.path().join("iptables.log.1")).unwrap();
        s.reopen_if_rotated().unwrap();
        s.write_line("two").unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("iptables.log.1")).unwrap(),
            "kept\none\n"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        std::fs::remove_file(&p).unwrap();
        s.reopen_if_rotated().unwrap();
        s.write_line("three").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "three\n");
    }
}
