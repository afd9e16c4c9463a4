//! Applying payloads: [`SystemIptables`] runs `iptables-save` / `iptables-restore --noflush -w`
//! (or the ip6tables pair) while holding the shared lock file; [`RecordingIptables`] keeps the
//! payloads in memory and answers saves from a canned text, for golden tests.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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
    /// A number that changes whenever anything changes the tables of `family`, when the
    /// backend can tell (the nf_tables generation); `None` when it cannot, and then callers
    /// must read the tables every time.
    fn generation(&self, _family: Family) -> Option<u64> {
        None
    }
}

/// The real backend.
#[derive(Debug, Clone)]
pub struct SystemIptables {
    pub lock_file: PathBuf,
    /// Whether `iptables` / `ip6tables` is the nf_tables variant (asked once per family, on
    /// the first generation call).
    nf_tables: Arc<[OnceLock<bool>; 2]>,
}

impl SystemIptables {
    pub fn new(lock_file: impl Into<PathBuf>) -> Self {
        SystemIptables {
            lock_file: lock_file.into(),
            nf_tables: Arc::new([OnceLock::new(), OnceLock::new()]),
        }
    }

    fn is_nf_tables(&self, family: Family) -> bool {
        let (slot, bin) = match family {
            Family::V4 => (&self.nf_tables[0], "iptables"),
            Family::V6 => (&self.nf_tables[1], "ip6tables"),
        };
        *slot.get_or_init(|| {
            run(bin, &["--version"], None)
                .map(|v| v.contains("nf_tables"))
                .unwrap_or(false)
        })
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

    fn generation(&self, family: Family) -> Option<u64> {
        if !self.is_nf_tables(family) {
            return None;
        }
        super::generation::nftables_generation().map(u64::from)
    }
}

/// Records restores; `save` answers with `saved` for every table. With `generation` set,
/// it answers that number and bumps it at every restore, as the nf_tables generation does.
#[derive(Debug, Default)]
pub struct RecordingIptables {
    pub saved: Mutex<String>,
    pub restores: Mutex<Vec<(Family, String)>>,
    pub saves: AtomicUsize,
    pub generation: Mutex<Option<u64>>,
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
        self.saves.fetch_add(1, Ordering::SeqCst);
        Ok(self.saved.lock().map(|s| s.clone()).unwrap_or_default())
    }

    fn restore(&self, family: Family, payload: &str) -> Result<(), IptablesError> {
        if let Ok(mut r) = self.restores.lock() {
            r.push((family, payload.to_string()));
        }
        if let Ok(mut g) = self.generation.lock() {
            *g = g.map(|n| n + 1);
        }
        Ok(())
    }

    fn generation(&self, _family: Family) -> Option<u64> {
        self.generation.lock().ok().and_then(|g| *g)
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
