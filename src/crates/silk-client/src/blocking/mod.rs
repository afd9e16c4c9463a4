//! The blocking face of the client layer, for programs that make one call and have no async
//! runtime (the CNI plugins, silk-daemon-shutdown, the datastore syncer, the healthchecker):
//! HTTP/1.1 over TCP or a unix socket, optional TLS or mutual TLS with rustls, basic auth, and
//! one deadline for the whole request (connect, TLS handshake, write and every read), as the
//! async face has. Upstream's Go plugins used timeout-less clients, so one slow local service
//! could stall container creation (cni.md §7).
//!
//! One request per connection (`Connection: close`). The answer ends at its `Content-Length`,
//! at the last chunk of a chunked body, or when the server closes; heads over [`MAX_HEAD`] and
//! bodies over [`MAX_BODY`] are malformed answers, not allocations.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde::de::DeserializeOwned;

use crate::mtls::{check_status, decode_ok, ClientError};
use crate::tls::{ClientTls, TlsError};

mod wire;

use wire::{has_port, host_of, request_target, split_url};
pub(crate) use wire::{parse, Parsed};
pub use wire::{parse_response, MAX_BODY, MAX_HEAD};

#[derive(Debug, thiserror::Error)]
pub enum BlockingError {
    #[error("invalid url {0}: want http[s]://host[:port][/path]")]
    Url(String),
    #[error("resolve {addr}: {source}")]
    Resolve {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("connect {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// Writing the request or reading the answer (TLS handshake included) failed.
    #[error("{0}")]
    Io(#[source] io::Error),
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl BlockingError {
    /// The I/O error underneath, when there is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            BlockingError::Resolve { source, .. }
            | BlockingError::Connect { source, .. }
            | BlockingError::Io(source) => Some(source),
            _ => None,
        }
    }

    /// True when the deadline passed (connect, write or read), not when the peer refused.
    pub fn is_timeout(&self) -> bool {
        self.io_error().is_some_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            )
        })
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `host:port` (`[v6]:port` for IPv6 literals), resolved at each request.
    Tcp(String),
    /// A unix socket path.
    Unix(PathBuf),
}

/// A response: status code and body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `http status <code>: <error text or raw body>` unless the status is 2xx.
    pub fn check(&self) -> Result<(), ClientError> {
        check_status(self.status, &self.body)
    }

    /// The JSON body of a 2xx answer.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        decode_ok(self.status, &self.body)
    }
}

/// A client for one server. Cheap to clone; holds no connection.
#[derive(Clone)]
pub struct BlockingClient {
    target: Target,
    host_header: String,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    authorization: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for BlockingClient {
    // The Authorization value stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingClient")
            .field("target", &self.target)
            .field("host_header", &self.host_header)
            .field("tls", &self.tls.is_some())
            .field("basic_auth", &self.authorization.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl BlockingClient {
    /// Plain HTTP to `target`; the Host header is the TCP address, or `localhost` on a unix
    /// socket. `timeout` bounds each whole request.
    pub fn new(target: Target, timeout: Duration) -> Self {
        let host_header = match &target {
            Target::Tcp(addr) => addr.clone(),
            Target::Unix(_) => "localhost".to_string(),
        };
        BlockingClient {
            target,
            host_header,
            tls: None,
            authorization: None,
            timeout,
        }
    }

    /// A client for `http://host[:port]` or `https://host[:port]` (ports default to 80 and
    /// 443, a trailing path is allowed and returned); `https` needs [`Self::with_tls`] after.
    pub fn from_url(url: &str, timeout: Duration) -> Result<(Self, String), BlockingError> {
        let (https, hostport, path) =
            split_url(url).ok_or_else(|| BlockingError::Url(url.to_string()))?;
        let addr = if has_port(&hostport) {
            hostport
        } else if https {
            format!("{hostport}:443")
        } else {
            format!("{hostport}:80")
        };
        Ok((BlockingClient::new(Target::Tcp(addr), timeout), path))
    }

    /// Sends `host` as the Host header instead.
    pub fn with_host_header(mut self, host: &str) -> Self {
        self.host_header = host.to_string();
        self
    }

    /// Sends `Authorization: Basic base64(user:password)` with every request.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.authorization = Some(format!("Basic {token}"));
        self
    }

    /// Speaks TLS, verifying the server against `tls`'s CA bundle (and presenting its client
    /// certificate when it has one). The name verified is `server_name`, or the host of a TCP
    /// target.
    pub fn with_tls(
        mut self,
        tls: &ClientTls,
        server_name: Option<&str>,
    ) -> Result<Self, BlockingError> {
        let name = match (server_name, &self.target) {
            (Some(n), _) => n.to_string(),
            (None, Target::Tcp(addr)) => host_of(addr).to_string(),
            (None, Target::Unix(p)) => return Err(BlockingError::Url(p.display().to_string())),
        };
        let name = ServerName::try_from(name.clone()).map_err(|_| BlockingError::Url(name))?;
        self.tls = Some((tls.client_config()?, name));
        Ok(self)
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Response, BlockingError> {
        self.request("GET", path, None)
    }

    /// One request; `path` may carry a query. Bytes of `path` that may not appear in a request
    /// line (controls, spaces, non-ASCII) are percent-encoded.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, BlockingError> {
        let deadline = Instant::now() + self.timeout;
        let mut conn = self.connect(deadline)?;
        let head = self.request_head(method, path, body);
        let mut out = head.into_bytes();
        out.extend_from_slice(body.unwrap_or_default());
        conn.arm(deadline).map_err(BlockingError::Io)?;
        conn.write_all(&out).map_err(BlockingError::Io)?;
        conn.flush().map_err(BlockingError::Io)?;
        read_response(&mut *conn, deadline)
    }

    fn request_head(&self, method: &str, path: &str, body: Option<&[u8]>) -> String {
        let mut head = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: silk\r\n",
            request_target(path),
            self.host_header
        );
        if let Some(auth) = &self.authorization {
            head.push_str(&format!("Authorization: {auth}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        head.push_str("Connection: close\r\n\r\n");
        head
    }

    fn connect(&self, deadline: Instant) -> Result<Box<dyn Conn>, BlockingError> {
        let plain: Box<dyn Conn> = match &self.target {
            Target::Tcp(addr) => Box::new(connect_tcp(addr, deadline)?),
            Target::Unix(path) => {
                let s = UnixStream::connect(path).map_err(|source| BlockingError::Connect {
                    addr: path.display().to_string(),
                    source,
                })?;
                Box::new(s)
            }
        };
        let Some((config, name)) = &self.tls else {
            return Ok(plain);
        };
        let tls = ClientConnection::new(Arc::clone(config), name.clone())
            .map_err(|e| BlockingError::Tls(TlsError::Rustls(e)))?;
        let mut stream = StreamOwned::new(tls, plain);
        stream.sock.arm(deadline).map_err(BlockingError::Io)?;
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(BlockingError::Io)?;
            stream.sock.arm(deadline).map_err(BlockingError::Io)?;
        }
        Ok(Box::new(TlsConn(stream)))
    }
}

/// A byte stream whose read and write timeouts can be set to the time left.
trait Conn: Read + Write {
    fn set_timeouts(&self, t: Duration) -> io::Result<()>;

    /// Sets the timeouts to what is left before `deadline`; a passed deadline is a timeout.
    fn arm(&self, deadline: Instant) -> io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline exceeded"));
        }
        self.set_timeouts(left)
    }
}

impl Conn for TcpStream {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

impl Conn for UnixStream {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

impl Conn for Box<dyn Conn> {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        (**self).set_timeouts(t)
    }
}

struct TlsConn(StreamOwned<ClientConnection, Box<dyn Conn>>);

impl Read for TlsConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.read(buf) {
            // A server that closes without close_notify (common with Connection: close) ends
            // the body; a truncated body is still caught by the length check.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            other => other,
        }
    }
}

impl Write for TlsConn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Conn for TlsConn {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        self.0.sock.set_timeouts(t)
    }
}

fn connect_tcp(addr: &str, deadline: Instant) -> Result<TcpStream, BlockingError> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|source| BlockingError::Resolve {
            addr: addr.to_string(),
            source,
        })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    if addrs.is_empty() {
        return Err(BlockingError::Resolve {
            addr: addr.to_string(),
            source: last,
        });
    }
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last = io::Error::new(io::ErrorKind::TimedOut, "deadline exceeded");
            break;
        }
        match TcpStream::connect_timeout(&a, left) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(BlockingError::Connect {
        addr: addr.to_string(),
        source: last,
    })
}

/// Reads one answer: the head, then the body by `Content-Length`, by chunks, or to the end.
fn read_response(conn: &mut dyn Conn, deadline: Instant) -> Result<Response, BlockingError> {
    let mut buf = Vec::with_capacity(1024);
    let mut eof = false;
    loop {
        match parse(&buf, eof) {
            Parsed::Done(r) => return Ok(r),
            Parsed::Malformed(why) => return Err(BlockingError::Malformed(why)),
            Parsed::NeedMore => {}
        }
        if eof {
            return Err(BlockingError::Malformed(
                "connection closed mid-answer".into(),
            ));
        }
        conn.arm(deadline).map_err(BlockingError::Io)?;
        let mut chunk = [0u8; 8192];
        match conn.read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BlockingError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests;
