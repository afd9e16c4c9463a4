//! `skip_hostname_validation` on MySQL: upstream verifies the server's chain against `ca_cert`
//! but not its name. mysql_async can only skip the whole verification or none of it, so at
//! start one TLS handshake of our own (the MySQL `SSLRequest`, then rustls with a verifier
//! that checks the chain and ignores the name) learns a DNS name the server's certificate
//! carries; mysql_async then verifies chain and that name on every connection.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::DatabaseConfig;

/// CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH.
const CAPABILITIES: u32 = 0x0000_0001 | 0x0000_0200 | 0x0000_0800 | 0x0000_8000 | 0x0008_0000;
const MAX_PACKET: u32 = 16 * 1024 * 1024;
/// utf8mb4_general_ci.
const CHARSET: u8 = 45;

/// The `SSLRequest` packet: header (length 32, sequence 1) and payload.
pub fn ssl_request() -> Vec<u8> {
    let mut p = vec![32, 0, 0, 1];
    p.extend_from_slice(&CAPABILITIES.to_le_bytes());
    p.extend_from_slice(&MAX_PACKET.to_le_bytes());
    p.push(CHARSET);
    p.extend_from_slice(&[0u8; 23]);
    p
}

/// A DNS name of the certificate the server presents, after verifying its chain against
/// `ca_cert` (wildcards become a matching name). `None` when it carries no DNS name.
pub async fn presented_name(db: &DatabaseConfig) -> Result<Option<String>, String> {
    let roots = crate::db::tls::load_roots(db)?;
    if roots.is_empty() {
        return Err(format!("no certificate in ca_cert {}", db.ca_cert));
    }
    let config = crate::db::tls::chain_only_config(roots)?;
    let timeout = db.timeout;
    let handshake = async {
        let mut tcp = TcpStream::connect((db.host.as_str(), db.port))
            .await
            .map_err(|e| format!("dial: {e}"))?;
        let mut head = [0u8; 4];
        tcp.read_exact(&mut head)
            .await
            .map_err(|e| format!("read greeting: {e}"))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
        let mut greeting = vec![0u8; len];
        tcp.read_exact(&mut greeting)
            .await
            .map_err(|e| format!("read greeting: {e}"))?;
        if greeting.first() == Some(&0xff) {
            return Err(format!(
                "server refused: {}",
                String::from_utf8_lossy(greeting.get(3..).unwrap_or_default())
            ));
        }
        if !server_offers_tls(&greeting) {
            return Err("Client asked for SSL but server does not have this capability".into());
        }
        tcp.write_all(&ssl_request())
            .await
            .map_err(|e| format!("send SSLRequest: {e}"))?;
        let name = ServerName::try_from(db.host.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("Input/output error: {e}"))?;
        let der = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .ok_or("server presented no certificate")?;
        let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| e.to_string())?;
        let name = cert
            .valid_dns_names()
            .next()
            .map(|n| n.replacen("*.", "any.", 1));
        Ok(name)
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .unwrap_or_else(|_| Err(format!("no TLS handshake within {} s", timeout.as_secs())))
}

/// Whether the v10 handshake's lower capability flags include CLIENT_SSL.
fn server_offers_tls(greeting: &[u8]) -> bool {
    // protocol version, NUL-terminated server version, 4-byte thread id, 8-byte salt, filler.
    let Some(nul) = greeting.iter().skip(1).position(|b| *b == 0) else {
        return false;
    };
    let at = 1 + nul + 1 + 4 + 8 + 1;
    match greeting.get(at..at + 2) {
        Some(caps) => u16::from_le_bytes([caps[0], caps[1]]) & 0x0800 != 0,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_request_is_32_bytes_with_the_ssl_flag() {
        let p = ssl_request();
        assert_eq!(p.len(), 36);
        assert_eq!(&p[..4], &[32, 0, 0, 1]);
        let caps = u32::from_le_bytes([p[4], p[5], p[6], p[7]]);
        assert_ne!(caps & 0x0800, 0);
        assert_ne!(caps & 0x0200, 0);
    }

    #[test]
    fn greeting_capabilities() {
        let mut g = vec![10];
        g.extend_from_slice(b"10.11.19-MariaDB\0");
        g.extend_from_slice(&[1, 0, 0, 0]);
        g.extend_from_slice(&[7; 8]);
        g.push(0);
        g.extend_from_slice(&0xffffu16.to_le_bytes());
        assert!(server_offers_tls(&g));
        let n = g.len();
        g[n - 2..].copy_from_slice(&(!0x0800u16).to_le_bytes());
        assert!(!server_offers_tls(&g));
    }
}
