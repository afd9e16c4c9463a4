//! HTTP clients of the silk components over mutual TLS ([`MtlsClient`]):
//! [`ControllerClient`] speaks the silk-controller lease API for silk-daemon and silk-teardown;
//! [`PolicyClient`] speaks the policy server's internal API for vxlan-policy-agent.

pub mod controller;
pub mod mtls;
pub mod policy;
#[cfg(test)]
mod proptests;
pub mod tls;

pub use controller::ControllerClient;
pub use mtls::{ClientError, MtlsClient};
pub use policy::PolicyClient;
pub use tls::{ClientTls, TlsError};
