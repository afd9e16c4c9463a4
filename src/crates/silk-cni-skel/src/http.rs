//! A minimal blocking HTTP/1.1 GET for the loopback services plugins talk to (silk-daemon's
//! network-info endpoint, vxlan-policy-agent's force endpoints). Every call has a deadline:
//! upstream's timeout-less client let one slow agent stall container creation (cni.md §7).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("resolve {0}: {1}")]
    Resolve(String, String),
    #[error("Get \"http://{addr}{path}\": {source}")]
    Io {
        addr: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Get \"http://{0}{1}\": malformed response")]
    Malformed(String, String),
}

/// A response: status code and body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET http://<addr><path>` with `timeout` for connecting and for each read/write.
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<Response, HttpError> {
    let sock: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| HttpError::Resolve(addr.into(), e.to_string()))?
        .next()
        .ok_or_else(|| HttpError::Resolve(addr.into(), "no address".into()))?;
    let io = |source| HttpError::Io {
        addr: addr.into(),
        path: path.into(),
        source,
    };
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    exchange(&mut s, addr, path, &[])
        .map_err(io)?
        .ok_or_else(|| HttpError::Malformed(addr.into(), path.into()))
}

/// `GET <path>` over an open `stream` (TCP or unix socket, its timeouts already set) with `host`
/// as the Host header and `headers` added; `None` when the answer is not HTTP.
pub fn exchange<S: Read + Write>(
    stream: &mut S,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Option<Response>> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: silk\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    Ok(parse_response(&raw))
}

pub(crate) fn parse_response(raw: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Some(Response { status, body })
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        body = rest.get(n + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_plain_and_chunked_bodies() {
        let r = parse_response(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 3\r\n\r\nno!")
            .unwrap();
        assert_eq!(
            r,
            Response {
                status: 405,
                body: "no!".into()
            }
        );
        let r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.body, "abcde");
        assert!(parse_response(b"garbage").is_none());
    }

    #[test]
    fn talks_to_a_loopback_server() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = c.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /x?y=1 HTTP/1.1\r\n"));
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
        });
        let r = get(&addr, "/x?y=1", Duration::from_secs(5)).unwrap();
        assert_eq!(
            r,
            Response {
                status: 200,
                body: "ok".into()
            }
        );
        t.join().unwrap();
    }

    #[test]
    fn refused_connection_is_an_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        assert!(get(&addr, "/", Duration::from_secs(1)).is_err());
    }
}
