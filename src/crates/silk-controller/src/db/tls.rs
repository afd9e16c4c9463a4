//! TLS to the database (control-plane §3.1), rustls with the ring provider on both engines.
//!
//! `require_ssl` with hostname validation verifies the server chain against `ca_cert` and the
//! name dialled (lib/pq `verify-full`, go-sql-driver with RootCAs). With
//! `skip_hostname_validation` the engines differ, as upstream: PostgreSQL encrypts without
//! verifying anything (lib/pq `sslmode=require`), MySQL verifies the chain but not the name.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::DatabaseConfig;

/// The certificates of the `ca_cert` file; an empty path gives an empty store.
pub fn load_roots(db: &DatabaseConfig) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    if !db.ca_cert.trim().is_empty() {
        let pem =
            std::fs::read(&db.ca_cert).map_err(|e| format!("read ca_cert {}: {e}", db.ca_cert))?;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|e| format!("parse ca_cert {}: {e}", db.ca_cert))?;
            roots
                .add(cert)
                .map_err(|e| format!("add ca_cert {}: {e}", db.ca_cert))?;
        }
    }
    Ok(roots)
}

/// The PostgreSQL connector: `verify-full` against `ca_cert`, or (skip_hostname_validation)
/// `require`: encrypted, nothing verified.
pub fn pg_connector(db: &DatabaseConfig) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if db.skip_hostname_validation {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipHostname {
                inner: None,
                provider,
            }))
            .with_no_client_auth()
    } else {
        let roots = load_roots(db)?;
        if roots.is_empty() {
            return Err(format!("no certificate in ca_cert {}", db.ca_cert));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(MakeRustlsConnect::new(config))
}

/// A client config that verifies the chain against `roots` but not the name: the MySQL
/// `skip_hostname_validation` semantics.
pub fn chain_only_config(roots: RootCertStore) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipHostname {
                inner: Some(inner),
                provider,
            }))
            .with_no_client_auth(),
    )
}

/// Chain verification without the name check (or no verification at all without `inner`).
#[derive(Debug)]
struct SkipHostname {
    inner: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SkipHostname {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Ok(v) => Ok(v),
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
