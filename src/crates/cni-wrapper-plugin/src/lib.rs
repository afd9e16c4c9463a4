//! cni-wrapper-plugin: delegates interface setup to silk-cni and wires each container's
//! iptables chains (NetIn, NetOut, ASGs, overlay, masquerade) per cni.md section 4.

pub mod config;
pub mod host;
pub mod netrules;
pub mod orchestrate;
pub mod plan;
pub mod plugin;
pub mod ports;
#[cfg(test)]
mod proptests;
pub mod teardown;

pub use plugin::Wrapper;
