//! The blocking face against real loopback and unix-socket servers: plain, chunked and
//! unframed bodies, basic auth, mutual TLS (and a server refusing a foreign client), the
//! deadline, and malformed answers.

#![allow(clippy::unwrap_used)] // test code: panics are the failure report

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use silk_testkit::certs::{ServerKey, TestCerts};

use super::*;
use crate::tls::{parse_certs, parse_key};

const SECONDS: Duration = Duration::from_secs(5);

/// Reads one request head (up to the blank line) from `c`.
fn read_head<C: Read>(c: &mut C) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A TCP server answering one request with `reply`; `close` says whether it closes after.
/// Yields the request head it read.
fn tcp_once(reply: &'static [u8], close: bool) -> (String, JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let head = read_head(&mut c);
        c.write_all(reply).unwrap();
        if !close {
            // Keep the connection open until the client hangs up.
            let mut rest = Vec::new();
            let _ = c.read_to_end(&mut rest);
        }
        head
    });
    (addr, t)
}

#[test]
fn gets_over_tcp_with_the_request_line_and_headers() {
    let (addr, t) = tcp_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true);
    let r = BlockingClient::new(Target::Tcp(addr.clone()), SECONDS)
        .get("/x?y=1")
        .unwrap();
    assert_eq!(
        r,
        Response {
            status: 200,
            body: b"ok".to_vec()
        }
    );
    let head = t.join().unwrap();
    assert!(head.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{head}");
    assert!(head.contains(&format!("\r\nHost: {addr}\r\n")), "{head}");
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    assert!(!head.contains("Authorization"), "{head}");
}

/// `GET /` of a one-shot server answering `reply` (and closing after it when `close`).
fn get_once(reply: &'static [u8], close: bool) -> Result<Response, BlockingError> {
    let (addr, t) = tcp_once(reply, close);
    let got = BlockingClient::new(Target::Tcp(addr), SECONDS).get("/");
    t.join().unwrap();
    got
}

#[test]
fn answers_end_at_their_length_at_the_last_chunk_or_at_the_close() {
    let cases: [(&str, &[u8], bool, u16, &str); 4] = [
        (
            "content-length, server keeps the connection",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
            false,
            200,
            "abc",
        ),
        (
            "chunked with an extension, server keeps the connection",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            false,
            200,
            "abcde",
        ),
        (
            "no framing: the body runs to the close",
            b"HTTP/1.0 503 Service Unavailable\r\n\r\ndown for now",
            true,
            503,
            "down for now",
        ),
        (
            "204 has no body whatever follows",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            false,
            204,
            "",
        ),
    ];
    for (name, reply, close, status, body) in cases {
        let r = get_once(reply, close).unwrap();
        assert_eq!((r.status, r.text().as_str()), (status, body), "{name}");
    }
}

#[test]
fn puts_a_body_with_basic_auth_and_a_host_header() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let head = read_head(&mut c);
        let mut body = [0u8; 7];
        c.read_exact(&mut body).unwrap();
        c.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        (head, body)
    });
    let r = BlockingClient::new(Target::Tcp(addr), SECONDS)
        .with_host_header("api")
        .with_basic_auth("admin", "s3cret")
        .request("PUT", "/things", Some(b"{\"a\":1}"))
        .unwrap();
    assert_eq!(r.status, 201);
    let (head, body) = t.join().unwrap();
    assert!(
        head.starts_with("PUT /things HTTP/1.1\r\nHost: api\r\n"),
        "{head}"
    );
    // base64("admin:s3cret")
    assert!(
        head.contains("\r\nAuthorization: Basic YWRtaW46czNjcmV0\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nContent-Length: 7\r\n"), "{head}");
    assert_eq!(&body, b"{\"a\":1}");
    let shown = format!(
        "{:?}",
        BlockingClient::new(Target::Tcp("h:1".into()), SECONDS).with_basic_auth("u", "pw")
    );
    assert!(!shown.contains("cHc") && !shown.contains("pw"), "{shown}");
}

#[test]
fn request_targets_cannot_break_the_request_line() {
    let (addr, t) = tcp_once(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true);
    BlockingClient::new(Target::Tcp(addr), SECONDS)
        .get("/a b\r\nX: y")
        .unwrap();
    let head = t.join().unwrap();
    assert!(
        head.starts_with("GET /a%20b%0D%0AX:%20y HTTP/1.1\r\n"),
        "{head}"
    );
    assert_eq!(head.matches("\r\n\r\n").count(), 1, "{head}");
}

#[test]
fn gets_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let t = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let head = read_head(&mut c);
        c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"n\": [1]}\n")
            .unwrap();
        head
    });
    let r = BlockingClient::new(Target::Unix(sock), SECONDS)
        .get("/ping")
        .unwrap();
    #[derive(serde::Deserialize)]
    struct N {
        n: Vec<u32>,
    }
    assert_eq!(r.decode::<N>().unwrap().n, vec![1]);
    assert!(t
        .join()
        .unwrap()
        .starts_with("GET /ping HTTP/1.1\r\nHost: localhost\r\n"));
}

#[test]
fn status_errors_read_like_the_async_face() {
    let r = Response {
        status: 409,
        body: br#"{"error": "no lease available"}"#.to_vec(),
    };
    assert_eq!(
        r.check().unwrap_err().to_string(),
        "http status 409: no lease available"
    );
    assert_eq!(
        r.decode::<serde_json::Value>().unwrap_err().to_string(),
        "http status 409: no lease available"
    );
    let ok = Response {
        status: 200,
        body: b"not json".to_vec(),
    };
    ok.check().unwrap();
    assert!(ok
        .decode::<serde_json::Value>()
        .unwrap_err()
        .to_string()
        .starts_with("decode response body: "));
}

#[test]
fn refused_connections_are_connect_errors_not_timeouts() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let e = BlockingClient::new(Target::Tcp(addr.clone()), SECONDS)
        .get("/")
        .unwrap_err();
    assert!(matches!(e, BlockingError::Connect { .. }), "{e:?}");
    assert!(!e.is_timeout());
    assert!(
        e.to_string().starts_with(&format!("connect {addr}: ")),
        "{e}"
    );
    let e = BlockingClient::new(Target::Unix("/nonexistent/s.sock".into()), SECONDS)
        .get("/")
        .unwrap_err();
    assert!(matches!(e, BlockingError::Connect { .. }), "{e:?}");
}

/// The error of a GET with a 300 ms deadline against a server that runs `serve` on the
/// connection until the client has given up (`stop` then receives).
fn error_against(serve: fn(TcpStream, Receiver<()>)) -> BlockingError {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || serve(l.accept().unwrap().0, rx));
    let e = BlockingClient::new(Target::Tcp(addr), Duration::from_millis(300))
        .get("/")
        .unwrap_err();
    tx.send(()).unwrap();
    t.join().unwrap();
    e
}

#[test]
fn a_server_that_never_answers_times_out() {
    // Holds the connection, silent, until the client gave up.
    let e = error_against(|_c, stop| {
        let _ = stop.recv();
    });
    assert!(e.is_timeout(), "{e:?}");
}

#[test]
fn a_drip_fed_answer_hits_the_whole_request_deadline() {
    let e = error_against(|mut c, stop| {
        let _ = read_head(&mut c);
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        // One byte at a time, each sooner than the deadline, never the whole body.
        while stop.recv_timeout(Duration::from_millis(50)).is_err() {
            if c.write_all(b"x").is_err() {
                break;
            }
        }
    });
    assert!(e.is_timeout(), "{e:?}");
}

#[test]
fn malformed_answers_are_errors() {
    for reply in [
        &b"garbage without a head end"[..],
        b"SMTP 220 hello\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc",
        b"",
    ] {
        let e = get_once(reply, true).unwrap_err();
        assert!(
            matches!(e, BlockingError::Malformed(_)),
            "{:?}: {e:?}",
            String::from_utf8_lossy(reply)
        );
    }
}

#[test]
fn parses_plain_and_chunked_bodies() {
    let r =
        parse_response(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 3\r\n\r\nno!").unwrap();
    assert_eq!(
        r,
        Response {
            status: 405,
            body: b"no!".to_vec()
        }
    );
    let r = parse_response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.body, b"abcde");
    assert!(parse_response(b"garbage").is_none());
    let r = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
    assert!(r.body.is_empty());
}

#[test]
fn urls_split_into_target_and_path() {
    let (c, path) = BlockingClient::from_url("http://127.0.0.1:23954/ping", SECONDS).unwrap();
    assert_eq!(
        (c.target, path.as_str()),
        (Target::Tcp("127.0.0.1:23954".into()), "/ping")
    );
    let (c, path) = BlockingClient::from_url("http://localhost", SECONDS).unwrap();
    assert_eq!(
        (c.target, path.as_str()),
        (Target::Tcp("localhost:80".into()), "/")
    );
    let (c, _) = BlockingClient::from_url("https://[::1]", SECONDS).unwrap();
    assert_eq!(c.target, Target::Tcp("[::1]:443".into()));
    assert_eq!(host_of("[::1]:443"), "::1");
    assert_eq!(
        host_of("policy-server.service.cf.internal:4003"),
        "policy-server.service.cf.internal"
    );
    for bad in [
        "ftp://h/",
        "http://",
        "http://:80/",
        "http://h:port/",
        "http://u@h/",
    ] {
        assert!(BlockingClient::from_url(bad, SECONDS).is_err(), "{bad}");
    }
}

// === mutual TLS ===

/// A TLS server answering one request; with `mutual`, it requires a client certificate from
/// the test CA.
fn tls_once(certs: &TestCerts, mutual: bool) -> (String, JoinHandle<Result<String, String>>) {
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let mut roots = RootCertStore::empty();
    for c in parse_certs("ca", &read(&certs.ca_cert)).unwrap() {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = if mutual {
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap()
    } else {
        WebPkiClientVerifier::no_client_auth()
    };
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            parse_certs("server", &read(&certs.server_cert)).unwrap(),
            parse_key(&read(&certs.server_key)).unwrap(),
        )
        .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t = std::thread::spawn(move || {
        let (tcp, _) = l.accept().unwrap();
        tcp.set_read_timeout(Some(SECONDS)).unwrap();
        let conn = ServerConnection::new(Arc::new(config)).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let head = read_head(&mut s);
        if head.is_empty() {
            return Err("handshake refused".to_string());
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .map_err(|e| e.to_string())?;
        s.conn.send_close_notify();
        let _ = s.flush();
        Ok(head)
    });
    (addr, t)
}

/// Which client certificate a client presents.
#[derive(Clone, Copy)]
enum Cert {
    FromTestCa,
    FromOtherCa,
    None,
}

/// `GET /tls` against [`tls_once`]: the client's result and what the server read.
fn tls_get(
    certs: &TestCerts,
    mutual: bool,
    cert: Cert,
    name: Option<&str>,
) -> (Result<Response, BlockingError>, Result<String, String>) {
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let tls = match cert {
        Cert::FromTestCa => ClientTls::from_files(
            &p(&certs.ca_cert),
            &p(&certs.client_cert),
            &p(&certs.client_key),
        ),
        Cert::FromOtherCa => ClientTls::from_files(
            &p(&certs.ca_cert),
            &p(&certs.other_client_cert),
            &p(&certs.other_client_key),
        ),
        Cert::None => Ok(ClientTls::ca_only(std::fs::read(&certs.ca_cert).unwrap())),
    }
    .unwrap();
    let (addr, t) = tls_once(certs, mutual);
    let got = BlockingClient::new(Target::Tcp(addr), SECONDS)
        .with_tls(&tls, name)
        .unwrap()
        .get("/tls");
    (got, t.join().unwrap())
}

#[test]
fn tls_and_mutual_tls() {
    let certs = TestCerts::generate(ServerKey::Ecdsa).unwrap();
    for (what, mutual, cert) in [
        ("mutual tls", true, Cert::FromTestCa),
        (
            "server-verified tls without a client certificate",
            false,
            Cert::None,
        ),
    ] {
        let (got, served) = tls_get(&certs, mutual, cert, None);
        let r = got.unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{what}");
        assert!(
            served.unwrap().starts_with("GET /tls HTTP/1.1\r\n"),
            "{what}"
        );
    }
}

#[test]
fn tls_refusals() {
    let certs = TestCerts::generate(ServerKey::Ecdsa).unwrap();
    for (what, mutual, cert, name) in [
        (
            "a name the server certificate does not carry",
            true,
            Cert::FromTestCa,
            Some("elsewhere.example"),
        ),
        (
            "a client certificate from another CA",
            true,
            Cert::FromOtherCa,
            None,
        ),
        (
            "no client certificate where one is required",
            true,
            Cert::None,
            None,
        ),
    ] {
        let (got, served) = tls_get(&certs, mutual, cert, name);
        let e = got.unwrap_err();
        assert!(matches!(e, BlockingError::Io(_)), "{what}: {e:?}");
        assert!(served.is_err(), "{what}");
    }
}

#[test]
fn a_bad_ca_bundle_is_a_tls_error() {
    let e = BlockingClient::new(Target::Tcp("127.0.0.1:1".into()), SECONDS)
        .with_tls(&ClientTls::ca_only(b"not pem".to_vec()), None)
        .unwrap_err();
    assert!(matches!(e, BlockingError::Tls(_)), "{e:?}");
}
