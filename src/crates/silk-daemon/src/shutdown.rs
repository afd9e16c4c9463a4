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
use silk_ops::log;

use crate::datastore::count_metadata_entries;
use crate::istio;

/// Ping attempts before giving up on the daemon stopping (upstream: 5).
pub const PING_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone)]
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

    #[test]
    fn ok_status_is_up() {
        assert!(up_when_answering(200));
    }
}
