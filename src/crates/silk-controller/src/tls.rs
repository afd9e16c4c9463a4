//! The API listener's TLS (control-plane §1.1): client certificates required and verified
//! against every certificate in `ca_cert_file`; TLS 1.2 with only
//! TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 (so TLS 1.2 needs an RSA server key) and TLS 1.3
//! with rustls' default suites; no ALPN `h2`, HTTP/1.1 only. ring provider.

use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("server tls config: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The provider with upstream's suite list.
pub fn provider() -> CryptoProvider {
    let mut suites: Vec<_> = ring::DEFAULT_CIPHER_SUITES
        .iter()
        .copied()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .collect();
    suites.push(ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256);
    CryptoProvider {
        cipher_suites: suites,
        ..ring::default_provider()
    }
}

fn read(path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_string(),
        source,
    })
}

fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let parse = |reason: String| TlsError::Parse {
        path: path.to_string(),
        reason,
    };
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse(e.to_string()))?;
    if certs.is_empty() {
        return Err(parse("no PEM certificate found".into()));
    }
    Ok(certs)
}

fn key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| e.to_string())
        .and_then(|k| k.ok_or_else(|| "no PEM private key found".to_string()))
        .map_err(|reason| TlsError::Parse {
            path: path.to_string(),
            reason,
        })
}

/// Reads the three files and builds the server config.
pub fn server_config(
    ca_file: &str,
    cert_file: &str,
    key_file: &str,
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(provider());
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_file)? {
        roots.add(cert)?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert_file)?, key(key_file)?)?;
    Ok(config)
}
