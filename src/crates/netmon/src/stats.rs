//! Where netmon's numbers come from, behind [`NetworkStats`] so the poller is tested with a
//! fake: the number of network interfaces, the iptables rule count (`iptables -S` of `filter`
//! and `nat`, every line including `-P`/`-N`, taken under the lock file shared with the CNI
//! wrapper and the VPA) and the counters in `/sys/class/net/<interface>/statistics/`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use silk_dataplane::filelock::FileLock;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a number: {text:?}")]
    NotANumber { path: String, text: String },
    #[error("iptables lock {path}: {msg}")]
    Lock { path: String, msg: String },
    #[error("iptables -S -t {table}: {msg}")]
    Iptables { table: &'static str, msg: String },
}

pub trait NetworkStats: Send + Sync {
    /// Number of network interfaces of this network namespace (as Go's `net.Interfaces`).
    fn interface_count(&self) -> Result<u64, StatsError>;
    /// Lines of `iptables -S` in the `filter` and `nat` tables together.
    fn iptables_rule_count(&self) -> Result<u64, StatsError>;
    /// One counter of `/sys/class/net/<interface>/statistics/` (`tx_bytes`, `rx_dropped`, ...).
    fn interface_stat(&self, interface: &str, stat: &str) -> Result<u64, StatsError>;
}

/// The real sources.
pub struct SystemStats {
    pub iptables_lock_file: PathBuf,
    /// `/sys/class/net`.
    pub sys_class_net: PathBuf,
    /// `/proc/net/dev`, which lists the interfaces of the reader's network namespace.
    pub proc_net_dev: PathBuf,
}

impl SystemStats {
    pub fn new(iptables_lock_file: impl Into<PathBuf>) -> Self {
        SystemStats {
            iptables_lock_file: iptables_lock_file.into(),
            sys_class_net: "/sys/class/net".into(),
            proc_net_dev: "/proc/net/dev".into(),
        }
    }
}

fn read(path: &std::path::Path) -> Result<String, StatsError> {
    std::fs::read_to_string(path).map_err(|source| StatsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Counts the interface lines of `/proc/net/dev` (two header lines, then one per interface).
pub fn count_proc_net_dev(text: &str) -> u64 {
    text.lines().skip(2).filter(|l| l.contains(':')).count() as u64
}

/// Counts the non-empty lines of `iptables -S` output.
pub fn count_rules(text: &str) -> u64 {
    text.lines().filter(|l| !l.trim().is_empty()).count() as u64
}

impl NetworkStats for SystemStats {
    fn interface_count(&self) -> Result<u64, StatsError> {
        Ok(count_proc_net_dev(&read(&self.proc_net_dev)?))
    }

    fn iptables_rule_count(&self) -> Result<u64, StatsError> {
        let _lock =
            FileLock::exclusive(&self.iptables_lock_file, 0o600).map_err(|e| StatsError::Lock {
                path: self.iptables_lock_file.display().to_string(),
                msg: e.to_string(),
            })?;
        let mut total = 0;
        for table in ["filter", "nat"] {
            let out = Command::new("iptables")
                .args(["-w", "-S", "-t", table])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| StatsError::Iptables {
                    table,
                    msg: e.to_string(),
                })?;
            if !out.status.success() {
                return Err(StatsError::Iptables {
                    table,
                    msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            total += count_rules(&String::from_utf8_lossy(&out.stdout));
        }
        Ok(total)
    }

    fn interface_stat(&self, interface: &str, stat: &str) -> Result<u64, StatsError> {
        let path = self
            .sys_class_net
            .join(interface)
            .join("statistics")
            .join(stat);
        let text = read(&path)?;
        text.trim().parse().map_err(|_| StatsError::NotANumber {
            path: path.display().to_string(),
            text: text.trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_interfaces_of_proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:    1200      12    0    0    0     0          0         0     1200      12    0    0    0     0       0          0\nsilk-vtep: 5000 10 0 1 0 0 0 0 7000 20 0 2 0 0 0 0\n  eth0: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n";
        assert_eq!(count_proc_net_dev(text), 3);
    }

    #[test]
    fn counts_every_rule_line_including_policies_and_chains() {
        let text = "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-N netout--abc\n-A FORWARD -j netout--abc\n\n";
        assert_eq!(count_rules(text), 5);
    }

    #[test]
    fn reads_counters_from_sysfs_layout() {
        let d = tempfile::tempdir().unwrap();
        let stats_dir = d.path().join("silk-vtep/statistics");
        std::fs::create_dir_all(&stats_dir).unwrap();
        std::fs::write(stats_dir.join("tx_bytes"), "12345\n").unwrap();
        std::fs::write(stats_dir.join("rx_bytes"), "oops\n").unwrap();
        let s = SystemStats {
            sys_class_net: d.path().into(),
            ..SystemStats::new("/nonexistent")
        };
        assert_eq!(s.interface_stat("silk-vtep", "tx_bytes").unwrap(), 12345);
        assert!(matches!(
            s.interface_stat("silk-vtep", "rx_bytes"),
            Err(StatsError::NotANumber { .. })
        ));
        assert!(matches!(
            s.interface_stat("silk-vtep", "rx_dropped"),
            Err(StatsError::Read { .. })
        ));
    }
}
