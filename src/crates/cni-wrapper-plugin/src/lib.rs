//! cni-wrapper-plugin: delegates interface setup to silk-cni and wires each container's
//! iptables chains (NetIn, NetOut, ASGs, overlay, masquerade) per cni.md section 4.

pub mod config;
pub mod handover;
pub mod host;
pub mod netrules;
pub mod plugin;
#[cfg(test)]
mod proptests;
pub mod teardown;

pub use plugin::Wrapper;
