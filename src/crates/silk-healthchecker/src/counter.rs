//! The failure counter file shared by healthchecker (writes) and restart-monit-job (reads):
//! one decimal number and a newline, as upstream's FailureCounter writes it.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("failure counter {path}: {source}")]
pub struct CounterError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

#[derive(Debug, Clone)]
pub struct FailureCounter {
    path: PathBuf,
}

impl FailureCounter {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FailureCounter { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: std::io::Error) -> CounterError {
        CounterError {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Creates the file (empty) when it does not exist yet; an existing count is kept.
    pub fn ensure_exists(&self) -> Result<(), CounterError> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn set(&self, n: u64) -> Result<(), CounterError> {
        std::fs::write(&self.path, format!("{n}\n")).map_err(|e| self.err(e))
    }

    /// The count; a missing, empty or garbled file counts as 0, as upstream's script reads it.
    pub fn read(&self) -> u64 {
        std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Adds one and returns the new count.
    pub fn increment(&self) -> Result<u64, CounterError> {
        let n = self.read() + 1;
        self.set(n)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_resets_and_reads_garbage_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        let c = FailureCounter::new(dir.path().join("count"));
        assert_eq!(c.read(), 0);
        c.ensure_exists().unwrap();
        assert_eq!(std::fs::read_to_string(c.path()).unwrap(), "");
        assert_eq!(c.increment().unwrap(), 1);
        assert_eq!(c.increment().unwrap(), 2);
        assert_eq!(std::fs::read_to_string(c.path()).unwrap(), "2\n");
        c.ensure_exists().unwrap();
        assert_eq!(c.read(), 2);
        c.set(0).unwrap();
        assert_eq!(c.read(), 0);
        std::fs::write(c.path(), "many\n").unwrap();
        assert_eq!(c.increment().unwrap(), 1);
        let missing_dir = FailureCounter::new(dir.path().join("no/such/dir/count"));
        assert!(missing_dir.ensure_exists().is_err());
    }
}
