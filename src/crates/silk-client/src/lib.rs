//! HTTP clients of the silk components. [`ControllerClient`] speaks the silk-controller lease
//! API over mutual TLS for silk-daemon and silk-teardown.

pub mod controller;
pub mod tls;

pub use controller::{ClientError, ControllerClient};
pub use tls::{ClientTls, TlsError};
