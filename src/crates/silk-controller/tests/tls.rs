//! The API listener's TLS (control-plane §1.1) against the real binary: a client without a
//! certificate, with a certificate from another CA, or offering only a TLS 1.2 suite other
//! than ECDHE-RSA-AES128-GCM-SHA256 is refused; TLS 1.2 with that suite and TLS 1.3 work;
//! only HTTP/1.1 is offered.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use rustls::crypto::ring;

fn provider_with(suites: Vec<rustls::SupportedCipherSuite>) -> rustls::crypto::CryptoProvider {
    rustls::crypto::CryptoProvider {
        cipher_suites: suites,
        ..ring::default_provider()
    }
}

async fn get_leases(port: u16, tls: Arc<rustls::ClientConfig>) -> std::io::Result<u16> {
    tls_request(port, tls, "GET", "/leases", "", b"")
        .await
        .map(|r| r.0)
}

async fn client_certificates_are_required_and_verified(engine: Engine) {
    let (_db, certs, controller) = setup(engine, Settings::default()).await;
    let port = controller.api_port;
    assert_eq!(get_leases(port, default_tls(&certs)).await.unwrap(), 200);

    let no_cert = tls_client(
        &certs,
        None,
        ring::default_provider(),
        rustls::DEFAULT_VERSIONS,
    );
    assert!(
        get_leases(port, no_cert).await.is_err(),
        "no client certificate must be refused"
    );
    let no_cert12 = tls_client(
        &certs,
        None,
        ring::default_provider(),
        &[&rustls::version::TLS12],
    );
    assert!(get_leases(port, no_cert12).await.is_err());

    let other_ca = tls_client(
        &certs,
        Some((&certs.other_client_cert, &certs.other_client_key)),
        ring::default_provider(),
        rustls::DEFAULT_VERSIONS,
    );
    assert!(
        get_leases(port, other_ca).await.is_err(),
        "a certificate from another CA must be refused"
    );

    // A server certificate as a client certificate: same CA, but no clientAuth usage.
    let server_as_client = tls_client(
        &certs,
        Some((&certs.server_cert, &certs.server_key)),
        ring::default_provider(),
        rustls::DEFAULT_VERSIONS,
    );
    assert!(get_leases(port, server_as_client).await.is_err());
}

async fn only_the_upstream_tls12_suite_and_tls13(engine: Engine) {
    let (_db, certs, controller) = setup(engine, Settings::default()).await;
    let port = controller.api_port;
    let client = Some((&certs.client_cert, &certs.client_key));

    let allowed = tls_client(
        &certs,
        client,
        provider_with(vec![
            ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ]),
        &[&rustls::version::TLS12],
    );
    assert_eq!(get_leases(port, allowed).await.unwrap(), 200);

    for suite in [
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ] {
        let refused = tls_client(
            &certs,
            client,
            provider_with(vec![suite]),
            &[&rustls::version::TLS12],
        );
        assert!(
            get_leases(port, refused).await.is_err(),
            "TLS 1.2 with only {suite:?} must be refused"
        );
    }

    for suite in ring::DEFAULT_CIPHER_SUITES
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS13)
    {
        let tls13 = tls_client(
            &certs,
            client,
            provider_with(vec![*suite]),
            &[&rustls::version::TLS13],
        );
        assert_eq!(get_leases(port, tls13).await.unwrap(), 200, "{suite:?}");
    }
}

async fn no_http2_alpn(engine: Engine) {
    let (_db, certs, controller) = setup(engine, Settings::default()).await;
    let mut config = (*default_tls(&certs)).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", controller.api_port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let negotiated = stream.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    assert_ne!(negotiated.as_deref(), Some(&b"h2"[..]));
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

both_engines!(
    client_certificates_are_required_and_verified,
    only_the_upstream_tls12_suite_and_tls13,
    no_http2_alpn,
);
