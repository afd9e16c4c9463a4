//! Applying payloads: [`SystemIptables`] runs `iptables-save` / `iptables-restore --noflush -w`
//! (or the ip6tables pair) while holding the shared lock file; [`RecordingIptables`] keeps the
//! payloads in memory and answers saves from a canned text, for golden tests.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::filelock::{FileLock, LockError};

use super::render::Table;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn save_bin(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }

    fn restore_bin(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("iptables lock: {0}")]
    Lock(#[from] LockError),
    #[error("exec {bin}: {source}")]
    Exec {
        bin: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{bin}: {stderr}")]
    Failed { bin: &'static str, stderr: String },
}

/// Holds the iptables lock (or nothing, for the recording backend) until dropped.
#[derive(Debug)]
pub struct LockGuard(#[allow(dead_code)] Option<FileLock>);

/// The iptables side effects. Callers take [`Iptables::lock`] once, then save and restore.
pub trait Iptables: Send + Sync {
    fn lock(&self) -> Result<LockGuard, IptablesError>;
    /// `iptables-save -t <table>` text, or every table when `table` is `None`.
    fn save(&self, family: Family, table: Option<Table>) -> Result<String, IptablesError>;
    /// One `iptables-restore --noflush` of `payload`.
    fn restore(&self, family: Family, payload: &str) -> Result<(), IptablesError>;
}

/// The real backend.
#[derive(Debug, Clone)]
pub struct SystemIptables {
    pub lock_file: PathBuf,
}

impl SystemIptables {
    pub fn new(lock_file: impl Into<PathBuf>) -> Self {
        SystemIptables {
            lock_file: lock_file.into(),
        }
    }
}

fn run(bin: &'static str, args: &[&str], stdin: Option<&str>) -> Result<String, IptablesError> {
    let mut attempts = 0;
    loop {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| IptablesError::Exec { bin, source })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .map_err(|source| IptablesError::Exec { bin, source })?;
        }
        let out = child
            .wait_with_output()
            .map_err(|source| IptablesError::Exec { bin, source })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // The nft backend reports a concurrent ruleset change ("Resource temporarily unavailable"
        // / EAGAIN, or an interrupted netlink dump) that a retry resolves.
        let transient = stderr.contains("temporarily unavailable")
            || stderr.contains("Interrupted system call");
        if transient && attempts < 10 {
            attempts += 1;
            std::thread::sleep(std::time::Duration::from_millis(5 * attempts));
            continue;
        }
        return Err(IptablesError::Failed { bin, stderr });
    }
}

impl Iptables for SystemIptables {
    fn lock(&self) -> Result<LockGuard, IptablesError> {
        Ok(LockGuard(Some(FileLock::exclusive(
            &self.lock_file,
            0o600,
        )?)))
    }

    fn save(&self, family: Family, table: Option<Table>) -> Result<String, IptablesError> {
        match table {
            Some(t) => run(family.save_bin(), &["-t", t.as_str()], None),
            None => run(family.save_bin(), &[], None),
        }
    }

    fn restore(&self, family: Family, payload: &str) -> Result<(), IptablesError> {
        if payload.is_empty() {
            return Ok(());
        }
        run(family.restore_bin(), &["--noflush", "-w"], Some(payload)).map(|_| ())
    }
}

/// Records restores; `save` answers with `saved` for every table.
#[derive(Debug, Default)]
pub struct RecordingIptables {
    pub saved: Mutex<String>,
    pub restores: Mutex<Vec<(Family, String)>>,
}

impl RecordingIptables {
    pub fn payloads(&self) -> Vec<(Family, String)> {
        self.restores.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Iptables for RecordingIptables {
    fn lock(&self) -> Result<LockGuard, IptablesError> {
        Ok(LockGuard(None))
    }

    fn save(&self, _family: Family, _table: Option<Table>) -> Result<String, IptablesError> {
        Ok(self.saved.lock().map(|s| s.clone()).unwrap_or_default())
    }

    fn restore(&self, family: Family, payload: &str) -> Result<(), IptablesError> {
        if let Ok(mut r) = self.restores.lock() {
            r.push((family, payload.to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_backend_keeps_payloads_in_order() {
        let r = RecordingIptables::default();
        let _g = r.lock().unwrap();
        r.restore(Family::V4, "*filter\nCOMMIT\n").unwrap();
        r.restore(Family::V6, "*filter\nCOMMIT\n").unwrap();
        assert_eq!(r.payloads().len(), 2);
        assert_eq!(r.payloads()[1].0, Family::V6);
    }
}
