//! The mutual-TLS HTTP/1.1 transport the silk clients share: one `https://host[:port]` base,
//! a client certificate, keep-alive connections reused, one deadline for the whole request,
//! no Content-Type on requests (upstream's Go clients send none).
//!
//! Errors read like upstream's `json_client`: any status above 299 is
//! `http status <code>: <error text or raw body>`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls::{ClientTls, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid url {0}: want https://host[:port]")]
    Url(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("connect {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("http status {code}: {text}")]
    Status { code: u16, text: String },
    /// A 409 on renew: the controller will never accept this lease.
    #[error("non-retriable: {0}")]
    NonRetriable(String),
    /// A paginated answer whose `next` does not advance.
    #[error("pagination: {0}")]
    Pagination(String),
    #[error("decode response body: {0}")]
    Decode(#[source] serde_json::Error),
}

impl ClientError {
    /// True when retrying cannot help (409 on renew).
    pub fn is_non_retriable(&self) -> bool {
        matches!(self, ClientError::NonRetriable(_))
    }
}

/// A transport for one base URL. Cheap to clone; clones share idle connections.
#[derive(Clone)]
pub struct MtlsClient {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    timeout: Duration,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

impl MtlsClient {
    /// `url` is `https://host[:port]`; the TLS server name is its host. `timeout` bounds each
    /// whole request, connect included.
    pub fn new(url: &str, tls: &ClientTls, timeout: Duration) -> Result<Self, ClientError> {
        let (host, port) = parse_url(url).ok_or_else(|| ClientError::Url(url.to_string()))?;
        let server_name =
            ServerName::try_from(host.clone()).map_err(|_| ClientError::Url(url.to_string()))?;
        Ok(MtlsClient {
            inner: Arc::new(Inner {
                host,
                port,
                server_name,
                tls: TlsConnector::from(tls.client_config()?),
                timeout,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Sends one request (`path` may carry a query) and returns status and body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let timeout = self.inner.timeout;
        tokio::time::timeout(timeout, self.call_inner(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    async fn call_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let body = Bytes::from(body.unwrap_or_default());
        if let Some(sender) = self.take_idle() {
            // A kept-alive connection the server closed meanwhile fails at once; every route is a
            // PUT or GET and safe to send again, so retry once on a fresh connection.
            if let Ok(done) = self.send(sender, method.clone(), path, body.clone()).await {
                return Ok(done);
            }
        }
        let sender = self.connect().await?;
        self.send(sender, method, path, body).await
    }

    async fn send(
        &self,
        mut sender: SendRequest<Full<Bytes>>,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        // No Content-Type, as upstream clients send none.
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(
                hyper::header::HOST,
                format!("{}:{}", self.inner.host, self.inner.port),
            )
            .body(Full::new(body))
            .expect("method, path and host header are valid");
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        self.put_idle(sender);
        Ok((status, bytes))
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.inner.idle.lock().ok()?;
        while let Some(s) = idle.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.inner.idle.lock() {
            if idle.len() < 64 {
                idle.push(sender);
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let addr = format!("{}:{}", self.inner.host, self.inner.port);
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .inner
            .tls
            .connect(self.inner.server_name.clone(), tcp)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            // The connection ends when the server closes it or the sender is dropped.
            let _ = conn.await;
        });
        Ok(sender)
    }
}

/// `https://host[:port][/]` to (host, port); port defaults to 443.
pub(crate) fn parse_url(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("https://")?.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host.to_string(), port.parse().ok()?)),
        Some(_) => None,
        None => Some((rest.to_string(), 443)),
    }
}

/// The server's `error` text, or the raw body when it is not our JSON shape.
pub fn error_text(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
}

/// `http status <code>: <error text or raw body>` unless `status` is 2xx; shared by the async
/// and the blocking face.
pub fn check_status(status: impl Into<u16>, body: &[u8]) -> Result<(), ClientError> {
    let code = status.into();
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(ClientError::Status {
            code,
            text: error_text(body),
        })
    }
}

/// The JSON body of a 2xx answer, else [`check_status`]'s error.
pub fn decode_ok<T: DeserializeOwned>(
    status: impl Into<u16>,
    body: &[u8],
) -> Result<T, ClientError> {
    check_status(status, body)?;
    serde_json::from_slice(body).map_err(ClientError::Decode)
}

/// [`decode_ok`] for the lease list: the same serde decoding through sonic-rs, which takes
/// about half serde_json's time on a list of thousands (half a megabyte at 5,000 leases,
/// decoded by every cell each poll). It takes exactly what serde_json takes (a property test);
/// a failure is the same [`ClientError::Decode`].
pub fn decode_list_ok<T: DeserializeOwned>(
    status: impl Into<u16>,
    body: &[u8],
) -> Result<T, ClientError> {
    check_status(status, body)?;
    sonic_rs::from_slice(body).map_err(|e| ClientError::Decode(serde::de::Error::custom(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_host_and_port() {
        assert_eq!(
            parse_url("https://silk-controller.service.cf.internal:4103"),
            Some(("silk-controller.service.cf.internal".into(), 4103))
        );
        assert_eq!(
            parse_url("https://127.0.0.1:4103/"),
            Some(("127.0.0.1".into(), 4103))
        );
        assert_eq!(
            parse_url("https://example.org"),
            Some(("example.org".into(), 443))
        );
        assert_eq!(parse_url("http://example.org:80"), None);
        assert_eq!(parse_url("https://:80"), None);
        assert_eq!(parse_url("https://h:notaport"), None);
    }

    #[test]
    fn errors_read_like_upstream() {
        let e =
            check_status(StatusCode::CONFLICT, br#"{"error": "no lease available"}"#).unwrap_err();
        assert_eq!(e.to_string(), "http status 409: no lease available");
        let e = check_status(StatusCode::BAD_GATEWAY, b"upstream gone").unwrap_err();
        assert_eq!(e.to_string(), "http status 502: upstream gone");
        let e = ClientError::NonRetriable(error_text(
            br#"{"error": "renew-subnet-lease: lease mismatch"}"#,
        ));
        assert_eq!(
            e.to_string(),
            "non-retriable: renew-subnet-lease: lease mismatch"
        );
        assert!(e.is_non_retriable());
    }
}
