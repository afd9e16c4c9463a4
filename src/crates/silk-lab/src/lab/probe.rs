//! The app stand-in and the live tests: [`serve`] is the tiny HTTP responder each lab container
//! runs inside its network namespace (`silk-lab responder`); [`probe`] connects from a
//! container's namespace with short bounded timeouts and checks who answered.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use silk_testkit::tcp::in_netns;

use super::matrix::Probe;

/// Connect and read bound of one probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// The answer's body: `<name> <peer ip>\n`.
pub fn answer(name: &str, peer: SocketAddr) -> String {
    format!("{name} {}\n", peer.ip())
}

/// Answers every HTTP request on `listen` with `200 OK` and [`answer`], a thread per
/// connection, until killed.
pub fn serve(listen: SocketAddr, name: &str) -> io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    eprintln!("responder {name} listening on {listen}");
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let name = name.to_string();
        std::thread::spawn(move || {
            let _ = respond(stream, &name);
        });
    }
    Ok(())
}

fn respond(mut s: TcpStream, name: &str) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let peer = s.peer_addr()?;
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 8192 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let body = answer(name, peer);
    write!(
        s,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// One GET from inside `ns` to `dst`, expecting the responder called `name`.
pub fn probe_in(dst: SocketAddrV4, name: &str) -> Probe {
    let mut s = match TcpStream::connect_timeout(&dst.into(), PROBE_TIMEOUT) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Probe::Refused,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => return Probe::Timeout,
        Err(e) if e.raw_os_error() == Some(113) => return Probe::Refused, // EHOSTUNREACH (icmp reject)
        Err(e) => return Probe::Error(e.to_string()),
    };
    let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = s.set_write_timeout(Some(PROBE_TIMEOUT));
    if let Err(e) = write!(s, "GET / HTTP/1.0\r\nHost: {dst}\r\n\r\n") {
        return Probe::Error(e.to_string());
    }
    let mut text = String::new();
    match s.read_to_string(&mut text) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Probe::Timeout
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Probe::Refused,
        Err(e) => return Probe::Error(e.to_string()),
    }
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    if text.starts_with("HTTP/1.0 200") && body.split_whitespace().next() == Some(name) {
        Probe::Reached
    } else {
        Probe::Wrong(body.trim().to_string())
    }
}

/// Runs `targets` (address, expected responder) one after the other from inside `ns`.
pub fn probe_all(ns: &Path, targets: Vec<(SocketAddrV4, String)>) -> Vec<Probe> {
    let n = targets.len();
    let ns: PathBuf = ns.to_path_buf();
    in_netns(&ns, move || {
        Ok(targets
            .iter()
            .map(|(dst, name)| probe_in(*dst, name))
            .collect::<Vec<_>>())
    })
    .unwrap_or_else(|e| vec![Probe::Error(format!("enter {}: {e}", ns.display())); n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responder_answers_with_its_name_and_probes_tell_refused_from_wrong() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = match listener.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        };
        drop(listener);
        std::thread::spawn(move || serve(addr.into(), "backend"));
        let mut got = Probe::Refused;
        for _ in 0..50 {
            got = probe_in(addr, "backend");
            if got != Probe::Refused {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(got, Probe::Reached);
        assert_eq!(
            probe_in(addr, "frontend"),
            Probe::Wrong("backend 127.0.0.1".into())
        );
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = match closed.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        };
        drop(closed);
        assert_eq!(probe_in(closed_addr, "x"), Probe::Refused);
    }
}
