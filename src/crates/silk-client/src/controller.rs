//! The silk-controller lease client, as silk-daemon and silk-teardown use it
//! (control-plane §1, §7): JSON bodies without Content-Type over mutual TLS and HTTP/1.1,
//! keep-alive connections reused, one deadline for the whole request ([`MtlsClient`]).
//!
//! Errors read like upstream's: `http status <code>: <error text or raw body>`; a 409 on renew
//! is [`ClientError::NonRetriable`] (`non-retriable: <server error>`), which the daemon treats
//! as fatal.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use silk_core::Lease;

pub use crate::mtls::ClientError;
use crate::mtls::{check_status, decode_list_ok, decode_ok, error_text, MtlsClient};
use crate::tls::ClientTls;

/// A client for one controller URL. Cheap to clone; clones share idle connections.
#[derive(Clone)]
pub struct ControllerClient {
    http: MtlsClient,
}

#[derive(Serialize)]
struct AcquireRequest<'a> {
    underlay_ip: &'a str,
    single_overlay_ip: bool,
}

#[derive(Serialize)]
struct ReleaseRequest<'a> {
    underlay_ip: &'a str,
}

#[derive(Deserialize)]
struct LeaseList {
    leases: Vec<Lease>,
}

impl ControllerClient {
    /// `url` is `https://host[:port]` (the rendered `connectivity_server_url`); the TLS server
    /// name is its host. `timeout` bounds each whole request, connect included.
    pub fn new(url: &str, tls: &ClientTls, timeout: Duration) -> Result<Self, ClientError> {
        Ok(ControllerClient {
            http: MtlsClient::new(url, tls, timeout)?,
        })
    }

    /// `PUT /leases/acquire`.
    pub async fn acquire(
        &self,
        underlay_ip: &str,
        single_overlay_ip: bool,
    ) -> Result<Lease, ClientError> {
        let body = AcquireRequest {
            underlay_ip,
            single_overlay_ip,
        };
        let (status, bytes) = self
            .call(Method::PUT, "/leases/acquire", Some(json(&body)))
            .await?;
        decode_ok(status, &bytes)
    }

    /// `PUT /leases/renew`; a 409 is [`ClientError::NonRetriable`].
    pub async fn renew(&self, lease: &Lease) -> Result<(), ClientError> {
        let (status, bytes) = self
            .call(Method::PUT, "/leases/renew", Some(json(lease)))
            .await?;
        if status == StatusCode::CONFLICT {
            return Err(ClientError::NonRetriable(error_text(&bytes)));
        }
        check_status(status, &bytes)
    }

    /// `GET /leases`: every unexpired lease.
    pub async fn list(&self) -> Result<Vec<Lease>, ClientError> {
        let (status, bytes) = self.call(Method::GET, "/leases", None).await?;
        decode_list_ok::<LeaseList>(status, &bytes).map(|l| l.leases)
    }

    /// `PUT /leases/release`; idempotent on the server.
    pub async fn release(&self, underlay_ip: &str) -> Result<(), ClientError> {
        let body = ReleaseRequest { underlay_ip };
        let (status, bytes) = self
            .call(Method::PUT, "/leases/release", Some(json(&body)))
            .await?;
        check_status(status, &bytes)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, bytes::Bytes), ClientError> {
        self.http.call(method, path, body).await
    }
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("request bodies are plain structs of strings and bools")
}
