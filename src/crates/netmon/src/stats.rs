//! Where netmon's numbers come from, behind [`NetworkStats`] so the poller is tested with a
//! fake: the number of network interfaces, the iptables rule count (upstream counts the lines
//! of `iptables -S` of `filter` and `nat`, `-P`/`-N` lines included; we read the same tables
//! through silk-dataplane's [`Iptables`] port, `iptables-save -t <table>` under the lock file
//! shared with the CNI wrapper and the VPA, and count the lines that stand for those:
//! [`count_saved_rules`]) and the counters in `/sys/class/net/<interface>/statistics/`.

use std::path::PathBuf;
use std::sync::Arc;

use silk_dataplane::iptables::{Family, Iptables, IptablesError, SystemIptables, Table};

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
    #[error("count iptables rules of {table}: {source}")]
    Iptables {
        table: &'static str,
        #[source]
        source: IptablesError,
    },
}

pub trait NetworkStats: Send + Sync {
    /// Number of network interfaces of this network namespace (as Go's `net.Interfaces`).
    fn interface_count(&self) -> Result<u64, StatsError>;
    /// Lines of `iptables -S` in the `filter` and `nat` tables together (IPv4).
    fn iptables_rule_count(&self) -> Result<u64, StatsError>;
    /// One counter of `/sys/class/net/<interface>/statistics/` (`tx_bytes`, `rx_dropped`, ...).
    fn interface_stat(&self, interface: &str, stat: &str) -> Result<u64, StatsError>;
}

/// The real sources.
pub struct SystemStats {
    pub iptables: Arc<dyn Iptables>,
    /// `/sys/class/net`.
    pub sys_class_net: PathBuf,
    /// `/proc/net/dev`, which lists the interfaces of the reader's network namespace.
    pub proc_net_dev: PathBuf,
}

impl SystemStats {
    pub fn new(iptables_lock_file: impl Into<PathBuf>) -> Self {
        SystemStats {
            iptables: Arc::new(SystemIptables::new(iptables_lock_file)),
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

/// The number of lines `iptables -S` prints for the tables in `iptables-save` text: one per
/// chain (`:CHAIN POLICY [p:b]` in the save, `-P`/`-N` in `-S`) and one per rule (`-A`).
/// Table headers, `COMMIT` and comments have no `-S` twin.
pub fn count_saved_rules(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(':') || l.starts_with("-A "))
        .count() as u64
}

impl NetworkStats for SystemStats {
    fn interface_count(&self) -> Result<u64, StatsError> {
        Ok(count_proc_net_dev(&read(&self.proc_net_dev)?))
    }

    fn iptables_rule_count(&self) -> Result<u64, StatsError> {
        let _lock = self
            .iptables
            .lock()
            .map_err(|source| StatsError::Iptables {
                table: "filter",
                source,
            })?;
        let mut total = 0;
        for table in [Table::Filter, Table::Nat] {
            let saved = self
                .iptables
                .save(Family::V4, Some(table))
                .map_err(|source| StatsError::Iptables {
                    table: table.as_str(),
                    source,
                })?;
            total += count_saved_rules(&saved);
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

    /// `iptables-save -t <table>` text and the number of lines `iptables -S -t <table>` prints
    /// for the same table (both taken from iptables 1.8.9 in one namespace).
    const SAVED: [(&str, u64); 4] = [
        ("", 0),
        (
            "# Generated by iptables-save v1.8.9 (nf_tables) on Sat Dec  5 10:20:49 2026\n*filter\n\
             :INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n\
             # Completed on Sat Dec  5 10:20:49 2026\n",
            3,
        ),
        (
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [10:600]\n:OUTPUT ACCEPT [0:0]\n\
             :netout--abc - [0:0]\n-A INPUT -j netout--abc\n\
             -A netout--abc -p tcp -m tcp --dport 80 -m comment --comment \"a b\" -j ACCEPT\nCOMMIT\n",
            6,
        ),
        (
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [0:0]\n:netin--abc - [0:0]\n-A PREROUTING -j netin--abc\n\
             -A POSTROUTING -s 10.255.30.2/32 ! -d 10.255.0.0/16 -j MASQUERADE\nCOMMIT\n",
            7,
        ),
    ];

    #[test]
    fn counts_what_iptables_s_would_print() {
        for (text, want) in SAVED {
            assert_eq!(count_saved_rules(text), want, "{text}");
        }
    }

    #[test]
    fn rule_count_reads_filter_and_nat_through_the_iptables_port() {
        let ipt = Arc::new(silk_dataplane::iptables::RecordingIptables::default());
        *ipt.saved.lock().unwrap() = SAVED[2].0.to_string();
        let s = SystemStats {
            iptables: ipt.clone(),
            ..SystemStats::new("/nonexistent")
        };
        // The recording port answers every table with the same text: two saves, no writes.
        assert_eq!(s.iptables_rule_count().unwrap(), 12);
        assert_eq!(ipt.saves.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(ipt.payloads().is_empty());
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
