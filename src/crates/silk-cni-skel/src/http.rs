//! The plugins' blocking GET of the loopback services they talk to (silk-daemon's
//! network-info endpoint, vxlan-policy-agent's force endpoints): a thin adapter over
//! [`silk_client::blocking`], keeping this module's error texts (Go's `Get "<url>": <err>`)
//! and its text-bodied [`Response`]. Every call has a deadline: upstream's timeout-less client
//! let one slow agent stall container creation (cni.md §7).

use std::time::Duration;

use silk_client::blocking::{self, BlockingClient, BlockingError, Target};

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

impl From<blocking::Response> for Response {
    fn from(r: blocking::Response) -> Self {
        Response {
            status: r.status,
            body: r.text(),
        }
    }
}

/// `GET http://<addr><path>` with `timeout` for the whole request.
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<Response, HttpError> {
    BlockingClient::new(Target::Tcp(addr.to_string()), timeout)
        .get(path)
        .map(Response::from)
        .map_err(|e| match e {
            BlockingError::Resolve { source, .. } => {
                HttpError::Resolve(addr.into(), source.to_string())
            }
            BlockingError::Connect { source, .. } | BlockingError::Io(source) => HttpError::Io {
                addr: addr.into(),
                path: path.into(),
                source,
            },
            // No TLS and no URL here: only malformed answers are left.
            BlockingError::Malformed(_) | BlockingError::Url(_) | BlockingError::Tls(_) => {
                HttpError::Malformed(addr.into(), path.into())
            }
        })
}

#[cfg(test)]
pub(crate) fn parse_response(raw: &[u8]) -> Option<Response> {
    blocking::parse_response(raw).map(Response::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
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

    /// A loopback server answering one request with `reply`; yields the request it read.
    fn serve_once(reply: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = c.read(&mut buf).unwrap();
            c.write_all(reply).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (addr, t)
    }

    #[test]
    fn talks_to_a_loopback_server() {
        let (addr, t) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let r = get(&addr, "/x?y=1", Duration::from_secs(5)).unwrap();
        assert_eq!(
            r,
            Response {
                status: 200,
                body: "ok".into()
            }
        );
        assert!(t.join().unwrap().starts_with("GET /x?y=1 HTTP/1.1\r\n"));
    }

    #[test]
    fn refused_connection_is_an_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        assert!(get(&addr, "/", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn errors_keep_their_go_wording() {
        let (addr, t) = serve_once(b"not http");
        let e = get(&addr, "/force", Duration::from_secs(5)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("Get \"http://{addr}/force\": malformed response")
        );
        t.join().unwrap();
        // No port: refused before any lookup leaves the machine.
        let e = get("no-port", "/", Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, HttpError::Resolve(..)), "{e:?}");
    }
}
