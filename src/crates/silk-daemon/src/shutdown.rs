//! `silk-daemon-shutdown`, the drain (contract §6.2, §9): wait for the container metadata
//! store to empty, SIGTERM the daemon, wait until its local API stops answering, then remove
//! the single-IP `istio-ingress` chain.
//!
//! Improvements over upstream: the container wait is a real deadline of
//! `containerMetadataFileCheckTimeout` seconds (upstream counted attempts, and older versions
//! stopped after a hard-coded 200 s); a daemon that is already stopped (no pid file, no such
//! process) is not an error; every wait is bounded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use silk_client::blocking::BlockingClient;
use silk_dataplane::iptables::{Iptables, SystemIptables};
use silk_ops::config::{nonempty, ConfigError};
use silk_ops::log;

use crate::datastore::count_metadata_entries;
use crate::istio;

/// Ping attempts before giving up on the daemon stopping (upstream: 5).
pub const PING_ATTEMPTS: u32 = 5;

/// The command line as given, upstream's flag names and defaults (jobs/silk-daemon/templates/
/// drain.erb passes the metadata file, its check timeout, the ping URL, the pid file and the
/// iptables lock); read through [`silk_ops::flags::parse`], checked into [`ShutdownOpts`].
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "silk-daemon-shutdown")]
pub struct Flags {
    #[arg(long = "containerMetadataFile", default_value = "")]
    pub container_metadata_file: String,
    /// Seconds between looks at the metadata store.
    #[arg(long = "containerMetadataFileCheckInterval", default_value_t = 5)]
    pub check_interval: u64,
    /// Seconds to wait for the store to empty before going on.
    #[arg(long = "containerMetadataFileCheckTimeout", default_value_t = 600)]
    pub check_timeout: u64,
    /// The daemon's ping URL; empty: the daemon is signalled but not waited for.
    #[arg(long = "silkDaemonUrl", default_value = "")]
    pub silk_daemon_url: String,
    /// Seconds between pings.
    #[arg(long = "silkDaemonTimeout", default_value_t = 2)]
    pub silk_daemon_timeout: u64,
    #[arg(long = "silkDaemonPidPath", default_value = "")]
    pub silk_daemon_pid_path: String,
    #[arg(long = "pingServerTimeout", default_value_t = 600)]
    pub ping_server_timeout: u64,
    #[arg(long = "iptablesLockFile", default_value = "")]
    pub iptables_lock_file: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownOpts {
    pub container_metadata_file: PathBuf,
    pub check_interval: Duration,
    pub check_timeout: Duration,
    pub silk_daemon_url: String,
    pub silk_daemon_timeout: Duration,
    pub silk_daemon_pid_path: Option<PathBuf>,
    pub ping_server_timeout: Duration,
    pub iptables_lock_file: Option<PathBuf>,
}

impl ShutdownOpts {
    /// Reads `args` (argv, the program name first) as upstream's flags and checks them, every
    /// problem listed at once; a usage error is [`ConfigError::Invalid`] too.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Self, ConfigError> {
        Self::try_from(silk_ops::flags::parse::<Flags>(args)?)
    }
}

impl TryFrom<Flags> for ShutdownOpts {
    type Error = ConfigError;

    fn try_from(f: Flags) -> Result<Self, ConfigError> {
        let mut e = Vec::new();
        nonempty(&mut e, "-containerMetadataFile", &f.container_metadata_file);
        if f.check_interval == 0 {
            e.push("-containerMetadataFileCheckInterval: must be at least 1".to_string());
        }
        if !(f.silk_daemon_url.is_empty()
            || f.silk_daemon_url.starts_with("http://")
            || f.silk_daemon_url.starts_with("https://"))
        {
            e.push(format!(
                "-silkDaemonUrl: must be an http URL or empty, got {:?}",
                f.silk_daemon_url
            ));
        }
        if !e.is_empty() {
            return Err(ConfigError::Invalid(e));
        }
        let path = |s: String| Some(PathBuf::from(s)).filter(|p| !p.as_os_str().is_empty());
        Ok(ShutdownOpts {
            container_metadata_file: PathBuf::from(f.container_metadata_file),
            check_interval: Duration::from_secs(f.check_interval),
            check_timeout: Duration::from_secs(f.check_timeout),
            silk_daemon_url: f.silk_daemon_url,
            silk_daemon_timeout: Duration::from_secs(f.silk_daemon_timeout),
            silk_daemon_pid_path: path(f.silk_daemon_pid_path),
            ping_server_timeout: Duration::from_secs(f.ping_server_timeout),
            iptables_lock_file: path(f.iptables_lock_file),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error("container metadata file directory {0} does not exist")]
    NoMetadataDir(String),
    #[error("read pid file {path}: {source}")]
    PidFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("signal silk-daemon pid {pid}: {source}")]
    Signal {
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("Silk Daemon Server did not exit after {0} ping attempts")]
    StillUp(u32),
    #[error("iptables: {0}")]
    Iptables(String),
}

/// Runs the drain steps in order.
pub fn drain(o: &ShutdownOpts) -> Result<(), ShutdownError> {
    let dir = o
        .container_metadata_file
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    if !dir.is_dir() {
        return Err(ShutdownError::NoMetadataDir(dir.display().to_string()));
    }
    wait_for_containers(o);
    stop_daemon(o)?;
    remove_istio_chain(o)
}

/// Waits until the metadata store is empty or `check_timeout` has passed (then goes on, as
/// upstream: the drain must not block the deploy forever).
fn wait_for_containers(o: &ShutdownOpts) {
    let deadline = Instant::now() + o.check_timeout;
    loop {
        match count_metadata_entries(&o.container_metadata_file) {
            Ok(0) => return,
            Ok(n) => log::debug("waiting-for-containers", json!({"count": n})),
            Err(e) => log::error("read-container-metadata", json!({"error": e.to_string()})),
        }
        let now = Instant::now();
        if now >= deadline {
            log::info(
                "container-wait-timed-out",
                json!({"timeout_seconds": o.check_timeout.as_secs()}),
            );
            return;
        }
        std::thread::sleep(o.check_interval.min(deadline - now));
    }
}

fn stop_daemon(o: &ShutdownOpts) -> Result<(), ShutdownError> {
    if let Some(path) = &o.silk_daemon_pid_path {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let pid: i32 = text.trim().parse().unwrap_or(0);
                if pid > 0 {
                    use nix::sys::signal::{kill, Signal};
                    match kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM) {
                        Ok(()) => log::info("sent-sigterm", json!({"pid": pid})),
                        Err(nix::Error::ESRCH) => {
                            log::info("silk-daemon-not-running", json!({"pid": pid}))
                        }
                        Err(source) => return Err(ShutdownError::Signal { pid, source }),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                log::info(
                    "silk-daemon-not-running",
                    json!({"pid_file": path.display().to_string()}),
                );
            }
            Err(source) => {
                return Err(ShutdownError::PidFile {
                    path: path.display().to_string(),
                    source,
                })
            }
        }
    }
    if o.silk_daemon_url.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + o.ping_server_timeout;
    for attempt in 1..=PING_ATTEMPTS {
        if !answers(&o.silk_daemon_url, Duration::from_secs(5)) {
            log::info("silk-daemon-stopped", json!({"attempt": attempt}));
            return Ok(());
        }
        if attempt == PING_ATTEMPTS || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(o.silk_daemon_timeout);
    }
    Err(ShutdownError::StillUp(PING_ATTEMPTS))
}

/// True when `url` (`http://host:port/path`) answers 200-206 or times out ("still up");
/// false on a refused connection or another status ("down"), as upstream decides.
pub fn answers(url: &str, timeout: Duration) -> bool {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let Ok((client, path)) = BlockingClient::from_url(&url, timeout) else {
        return false;
    };
    match client.get(&path) {
        Ok(r) => (200..=206).contains(&r.status),
        Err(e) => e.is_timeout(),
    }
}

/// Removes every jump to `istio-ingress` and the chain itself in one restore, under the
/// shared iptables lock (when configured); nothing to remove is success.
pub fn remove_istio_chain(o: &ShutdownOpts) -> Result<(), ShutdownError> {
    let lock = o.iptables_lock_file.as_deref();
    let iptables = SystemIptables::new(lock.unwrap_or(Path::new("")));
    remove_istio_chain_with(&iptables, lock.is_some())
}

/// [`remove_istio_chain`] through any [`Iptables`] port.
pub fn remove_istio_chain_with(iptables: &dyn Iptables, lock: bool) -> Result<(), ShutdownError> {
    let changed = istio::apply(iptables, lock, istio::plan_remove)
        .map_err(|e| ShutdownError::Iptables(e.to_string()))?;
    log::info("remove-istio-chain", json!({"changed": changed}));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connection_is_down() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        assert!(!answers(
            &format!("http://127.0.0.1:{port}/ping"),
            Duration::from_secs(1)
        ));
    }

    /// Whether a daemon answering `status` counts as up.
    fn up_when_answering(status: u16) -> bool {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            silk_testkit::fuzz::answer_once(l.accept().unwrap().0, status, b"")
        });
        let up = answers(
            &format!("http://127.0.0.1:{port}/ping"),
            Duration::from_secs(2),
        );
        assert!(t.join().unwrap().starts_with("GET /ping HTTP/1.1\r\n"));
        up
    }

    #[test]
    fn statuses_200_to_206_are_up_others_down() {
        for (status, up) in [
            (200, true),
            (204, true),
            (206, true),
            (207, false),
            (404, false),
            (503, false),
        ] {
            assert_eq!(up_when_answering(status), up, "{status}");
        }
    }

    #[test]
    fn silence_until_the_timeout_is_up() {
        use std::io::Read;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            // Accepted and never answered: held until the client hangs up.
            let (mut s, _) = l.accept().unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        });
        assert!(answers(
            &format!("127.0.0.1:{port}/ping"),
            Duration::from_millis(200)
        ));
        t.join().unwrap();
    }

    #[test]
    fn removes_the_chain_through_the_port_in_one_restore() {
        let ipt = silk_dataplane::iptables::RecordingIptables::default();
        *ipt.saved.lock().unwrap() = "*filter\n:OUTPUT ACCEPT [0:0]\n:istio-ingress - [0:0]\n\
            -A OUTPUT -j istio-ingress\n-A istio-ingress -o silk-vtep -j ACCEPT\nCOMMIT\n"
            .into();
        remove_istio_chain_with(&ipt, true).unwrap();
        assert_eq!(
            ipt.payloads(),
            vec![(
                silk_dataplane::iptables::Family::V4,
                "*filter\n:istio-ingress - [0:0]\n-D OUTPUT -j istio-ingress\n-X istio-ingress\nCOMMIT\n"
                    .to_string()
            )]
        );
    }

    fn argv(a: &[&str]) -> Vec<String> {
        std::iter::once("silk-daemon-shutdown")
            .chain(a.iter().copied())
            .map(String::from)
            .collect()
    }

    #[test]
    fn reads_the_drain_templates_command_line_with_upstreams_defaults() {
        let o = ShutdownOpts::from_args(argv(&[
            "--containerMetadataFile",
            "/var/vcap/data/container-metadata/store.json",
            "--containerMetadataFileCheckTimeout",
            "300",
            "--silkDaemonUrl",
            "http://localhost:23954/ping",
            "--silkDaemonPidPath",
            "/var/vcap/sys/run/bpm/silk-daemon/silk-daemon.pid",
            "--iptablesLockFile",
            "/var/vcap/data/garden-cni/iptables.lock",
        ]))
        .unwrap();
        assert_eq!(
            o,
            ShutdownOpts {
                container_metadata_file: "/var/vcap/data/container-metadata/store.json".into(),
                check_interval: Duration::from_secs(5),
                check_timeout: Duration::from_secs(300),
                silk_daemon_url: "http://localhost:23954/ping".into(),
                silk_daemon_timeout: Duration::from_secs(2),
                silk_daemon_pid_path: Some(
                    "/var/vcap/sys/run/bpm/silk-daemon/silk-daemon.pid".into()
                ),
                ping_server_timeout: Duration::from_secs(600),
                iptables_lock_file: Some("/var/vcap/data/garden-cni/iptables.lock".into()),
            }
        );
        let single = ShutdownOpts::from_args(argv(&[
            "-containerMetadataFile=/m/store.json",
            "-containerMetadataFileCheckInterval=1",
            "-silkDaemonTimeout=3",
            "-pingServerTimeout=4",
        ]))
        .unwrap();
        assert_eq!(single.check_interval, Duration::from_secs(1));
        assert_eq!(single.silk_daemon_timeout, Duration::from_secs(3));
        assert_eq!(single.ping_server_timeout, Duration::from_secs(4));
        assert_eq!(single.silk_daemon_url, "");
        assert_eq!(single.silk_daemon_pid_path, None);
        assert_eq!(single.iptables_lock_file, None);
    }

    #[test]
    fn bad_flags_are_listed_together_or_reported_as_usage() {
        let e = ShutdownOpts::from_args(argv(&[
            "--containerMetadataFileCheckInterval",
            "0",
            "--silkDaemonUrl",
            "localhost:23954/ping",
        ]))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid config: -containerMetadataFile: must not be empty; \
             -containerMetadataFileCheckInterval: must be at least 1; \
             -silkDaemonUrl: must be an http URL or empty, got \"localhost:23954/ping\""
        );
        for a in [
            &["--containerMetadataFile=/m", "--silkDaemonTimeout", "two"][..],
            &["--containerMetadataFile=/m", "--unknown", "1"][..],
        ] {
            assert!(
                matches!(
                    ShutdownOpts::from_args(argv(a)),
                    Err(ConfigError::Invalid(_))
                ),
                "{a:?}"
            );
        }
    }

    #[test]
    fn ok_status_is_up() {
        assert!(up_when_answering(200));
    }
}
