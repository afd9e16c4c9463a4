//! `silk-daemon-shutdown`, the drain (contract §6.2, §9): wait for the container metadata
//! store to empty, SIGTERM the daemon, wait until its local API stops answering, then remove
//! the single-IP `istio-ingress` chain.
//!
//! Improvements over upstream: the container wait is a real deadline of
//! `containerMetadataFileCheckTimeout` seconds (upstream counted attempts, and older versions
//! stopped after a hard-coded 200 s); a daemon that is already stopped (no pid file, no such
//! process) is not an error; every wait is bounded.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use silk_dataplane::filelock::FileLock;
use silk_ops::log;

use crate::datastore::count_metadata_entries;

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
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (hostport, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let Some(addr) = hostport.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => return e.kind() == std::io::ErrorKind::TimedOut,
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n");
    if stream.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 32];
    match stream.read(&mut buf) {
        Ok(n) => {
            let head = String::from_utf8_lossy(&buf[..n]);
            let code: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            (200..=206).contains(&code)
        }
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Removes `-j istio-ingress` from OUTPUT and the chain itself, under the shared iptables
/// lock; "No chain/target/match by that name." counts as done.
pub fn remove_istio_chain(o: &ShutdownOpts) -> Result<(), ShutdownError> {
    let _lock = match &o.iptables_lock_file {
        Some(p) => Some(
            FileLock::exclusive(p, 0o600).map_err(|e| ShutdownError::Iptables(e.to_string()))?,
        ),
        None => None,
    };
    let run = |args: &[&str]| -> Result<bool, ShutdownError> {
        let out = Command::new("iptables")
            .args(["-w", "-t", "filter"])
            .args(args)
            .output()
            .map_err(|e| ShutdownError::Iptables(format!("run iptables: {e}")))?;
        if out.status.success() {
            return Ok(true);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No chain/target/match by that name")
            || err.contains("does not exist")
            || err.contains("Bad rule")
        {
            return Ok(false);
        }
        Err(ShutdownError::Iptables(format!(
            "iptables {}: {}",
            args.join(" "),
            err.trim()
        )))
    };
    if run(&["-C", "OUTPUT", "-j", "istio-ingress"])? {
        run(&["-D", "OUTPUT", "-j", "istio-ingress"])?;
    }
    if run(&["-F", "istio-ingress"])? {
        run(&["-X", "istio-ingress"])?;
    }
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

    #[test]
    fn ok_status_is_up() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 256];
            let _ = s.read(&mut b);
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        });
        assert!(answers(
            &format!("http://127.0.0.1:{port}/ping"),
            Duration::from_secs(2)
        ));
        t.join().unwrap();
    }
}
