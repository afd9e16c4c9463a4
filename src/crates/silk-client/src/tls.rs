//! Client-side mutual TLS for the controller API: a client certificate and key, trust anchors
//! from a CA bundle (every PEM block), TLS 1.2 (ECDHE-RSA-AES128-GCM-SHA256 as Go offers it
//! among others) and TLS 1.3, rustls with the ring provider, no ALPN (HTTP/1.1 only).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {what}: {source}")]
    Pem {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no PEM certificate found")]
    NoCertificate(&'static str),
    #[error("client key: no PEM private key found")]
    NoKey,
    #[error("tls config: {0}")]
    Rustls(#[from] rustls::Error),
}

/// PEM material for a client: CA bundle, certificate chain, private key. Empty chain and key
/// ([`ClientTls::ca_only`]) make a TLS client without a client certificate.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl ClientTls {
    /// Reads the three PEM files named in a client config.
    pub fn from_files(ca: &str, cert: &str, key: &str) -> Result<Self, TlsError> {
        let read = |what, path: &str| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_string(),
                source,
            })
        };
        Ok(ClientTls {
            ca_pem: read("ca cert", ca)?,
            cert_pem: read("client cert", cert)?,
            key_pem: read("client key", key)?,
        })
    }

    /// Server verification only: trust anchors from `ca_pem`, no client certificate.
    pub fn ca_only(ca_pem: Vec<u8>) -> Self {
        ClientTls {
            ca_pem,
            cert_pem: Vec::new(),
            key_pem: Vec::new(),
        }
    }

    /// The rustls config: roots from every CA block, the client chain (when there is one),
    /// TLS 1.2 and 1.3.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in parse_certs("ca cert", &self.ca_pem)? {
            roots.add(cert)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots);
        let config = if self.cert_pem.is_empty() && self.key_pem.is_empty() {
            builder.with_no_client_auth()
        } else {
            let chain = parse_certs("client cert", &self.cert_pem)?;
            let key = parse_key(&self.key_pem)?;
            builder.with_client_auth_cert(chain, key)?
        };
        Ok(Arc::new(config))
    }
}

/// Every certificate in a PEM bundle; an empty bundle is an error.
pub fn parse_certs(
    what: &'static str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(what));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) in a PEM file.
pub fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|source| TlsError::Pem {
            what: "private key",
            source,
        })?
        .ok_or(TlsError::NoKey)
}
