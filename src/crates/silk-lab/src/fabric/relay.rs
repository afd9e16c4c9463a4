//! A TCP relay between two network namespaces: it listens inside one (the api namespace, where
//! silk-controller runs) and connects in the namespace it was started in (the root namespace,
//! where the MariaDB server of scripts/test or of `scripts/lab up --db mysql` listens on
//! 127.0.0.1). Bytes pass unchanged, so the controller's TLS session is with the database
//! server itself and verifies its certificate (issued for 127.0.0.1) end to end. Both ends are
//! loopback addresses: no packet leaves either namespace.

use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

/// Where the relay listens inside the api namespace: MySQL's port on its loopback.
pub const MYSQL_LISTEN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 3306);

/// How long a connect to the upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `listen` inside the namespace at `netns` and relays every connection to `upstream`
/// (connected from the caller's namespace), a thread pair per connection; runs until killed.
pub fn serve(netns: &Path, listen: SocketAddr, upstream: SocketAddr) -> io::Result<()> {
    let listener = silk_testkit::tcp::in_netns(netns, move || TcpListener::bind(listen))?;
    for conn in listener.incoming() {
        match conn {
            Ok(client) => {
                std::thread::spawn(move || {
                    if let Err(e) = pipe(client, upstream) {
                        eprintln!("db-relay: connection to {upstream}: {e}");
                    }
                });
            }
            Err(e) => eprintln!("db-relay: accept: {e}"),
        }
    }
    Ok(())
}

/// Copies both directions until each side has closed its half.
fn pipe(client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    let server = TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut from_client, mut to_server) = (client.try_clone()?, server.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (server, client);
    let _ = io::copy(&mut from_server, &mut to_client);
    let _ = to_client.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}

/// Whether something accepts TCP connections on `addr` inside the namespace at `netns`.
pub fn answers(netns: &Path, addr: SocketAddrV4) -> bool {
    silk_testkit::tcp::in_netns(netns, move || {
        TcpStream::connect_timeout(&addr.into(), Duration::from_millis(500))
    })
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn relays_both_directions_and_half_closes() {
        // Within one namespace (the test's own): the relay's copy loop, not namespaces.
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let up_addr = upstream.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = upstream.accept().unwrap();
            let mut got = String::new();
            s.read_to_string(&mut got).unwrap();
            s.write_all(format!("echo {got}").as_bytes()).unwrap();
        });
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let front_addr = front.local_addr().unwrap();
        std::thread::spawn(move || {
            let (c, _) = front.accept().unwrap();
            pipe(c, up_addr).unwrap();
        });
        let mut c = TcpStream::connect(front_addr).unwrap();
        c.write_all(b"hello").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = String::new();
        c.read_to_string(&mut back).unwrap();
        assert_eq!(back, "echo hello");
        server.join().unwrap();
    }

    #[test]
    fn an_unreachable_upstream_is_an_error() {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(front.local_addr().unwrap()).unwrap();
        let (accepted, _) = front.accept().unwrap();
        assert!(pipe(accepted, addr).is_err());
        drop(c);
    }
}
