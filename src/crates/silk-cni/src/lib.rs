//! silk-cni: gives a container its overlay address on a veth pair behind the link-local
//! gateway 169.254.0.1 (cni.md section 3).

pub mod config;
pub mod plugin;
#[cfg(test)]
mod proptests;
pub mod veth;

pub use plugin::SilkCni;
