//! One GET of the watched endpoint: `http://<host>:<port><path>` or the same over a unix socket,
//! with basic auth when configured, through silk-client's blocking face. Only 200 is healthy,
//! as upstream; the timeout bounds the whole request (as Go's `http.Client.Timeout`), so an
//! endpoint that accepts and never answers fails too.

use std::time::Duration;

use silk_client::blocking::{self, BlockingClient, BlockingError};

use crate::config::{Endpoint, Target};

/// A failed poll, worded as Go's http client words it where it can.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("Get \"{url}\": {source}")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Get \"{0}\": malformed HTTP response")]
    Malformed(String),
    #[error("{0} received from healthcheck endpoint (200 expected)")]
    Status(u16),
}

pub fn url(endpoint: &Endpoint) -> String {
    match &endpoint.target {
        Target::Tcp { host, port } => format!("http://{host}:{port}{}", endpoint.path),
        Target::Unix(socket) => format!("http://unix{socket}{}", endpoint.path),
    }
}

pub fn check(endpoint: &Endpoint, timeout: Duration) -> Result<(), ProbeError> {
    let url = url(endpoint);
    let client = match &endpoint.target {
        Target::Tcp { host, port } => {
            BlockingClient::new(blocking::Target::Tcp(format!("{host}:{port}")), timeout)
        }
        Target::Unix(socket) => BlockingClient::new(blocking::Target::Unix(socket.into()), timeout)
            .with_host_header("unix"),
    };
    let client = match &endpoint.basic_auth {
        Some((user, password)) => client.with_basic_auth(user, password),
        None => client,
    };
    let response = client.get(&endpoint.path).map_err(|e| match e {
        BlockingError::Resolve { source, .. }
        | BlockingError::Connect { source, .. }
        | BlockingError::Io(source) => ProbeError::Io {
            url: url.clone(),
            source,
        },
        _ => ProbeError::Malformed(url.clone()),
    })?;
    if response.status == 200 {
        Ok(())
    } else {
        Err(ProbeError::Status(response.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn serve_once(reply: &'static [u8]) -> (u16, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 2048];
            let n = c.read(&mut buf).unwrap();
            c.write_all(reply).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (port, t)
    }

    fn endpoint(port: u16, auth: Option<(&str, &str)>) -> Endpoint {
        Endpoint {
            target: Target::Tcp {
                host: "127.0.0.1".into(),
                port,
            },
            path: "/health".into(),
            basic_auth: auth.map(|(u, p)| (u.into(), p.into())),
        }
    }

    #[test]
    fn only_200_is_healthy_and_credentials_are_sent() {
        let (port, t) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        check(
            &endpoint(port, Some(("admin", "s3cret"))),
            Duration::from_secs(5),
        )
        .unwrap();
        let request = t.join().unwrap();
        assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
        // base64("admin:s3cret")
        assert!(
            request.contains("Authorization: Basic YWRtaW46czNjcmV0\r\n"),
            "{request}"
        );

        let (port, t) =
            serve_once(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
        let err = check(&endpoint(port, None), Duration::from_secs(5)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "503 received from healthcheck endpoint (200 expected)"
        );
        assert!(!t.join().unwrap().contains("Authorization"));
    }

    #[test]
    fn a_closed_port_fails() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = check(&endpoint(port, None), Duration::from_secs(1)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("Get \"http://127.0.0.1:{port}/health\"")),
            "{err}"
        );
    }

    #[test]
    fn answers_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("h.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf).unwrap();
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        });
        let e = Endpoint {
            target: Target::Unix(sock.display().to_string()),
            path: "/".into(),
            basic_auth: None,
        };
        check(&e, Duration::from_secs(5)).unwrap();
        t.join().unwrap();
    }
}
