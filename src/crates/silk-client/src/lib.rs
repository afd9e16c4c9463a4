//! The HTTP client layer of the silk programs, in two faces over one set of error and decoding
//! helpers ([`mtls::check_status`], [`mtls::decode_ok`]):
//! - async, mutual TLS with keep-alive ([`MtlsClient`]): [`ControllerClient`] speaks the
//!   silk-controller lease API for silk-daemon and silk-teardown; [`PolicyClient`] speaks the
//!   policy server's internal API for vxlan-policy-agent and silk-daemon-bootstrap;
//! - blocking ([`blocking::BlockingClient`]): HTTP/1.1 over TCP or a unix socket, optional
//!   (mutual) TLS and basic auth, one deadline per request, for the CNI plugins and the helpers
//!   that make one call without an async runtime.

pub mod blocking;
pub mod controller;
pub mod mtls;
pub mod policy;
#[cfg(test)]
mod proptests;
pub mod tls;

pub use blocking::{BlockingClient, BlockingError, Target};
pub use controller::ControllerClient;
pub use mtls::{ClientError, MtlsClient};
pub use policy::PolicyClient;
pub use tls::{ClientTls, TlsError};
