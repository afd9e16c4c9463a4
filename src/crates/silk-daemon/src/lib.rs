//! silk-daemon: holds this cell's lease with the controller and keeps `silk-vtep` programmed
//! with a route, permanent ARP neighbour and FDB entry for every other cell
//! (control-plane contract §5), plus the helpers of §6 (`silk-teardown`,
//! `silk-daemon-shutdown`, `silk-daemon-bootstrap`).

pub mod api;
pub mod bootstrap;
pub mod config;
pub mod cycle;
pub mod daemon;
pub mod datastore;
pub mod istio;
#[cfg(test)]
mod proptests;
pub mod retention;
pub mod shutdown;
pub mod startup;
pub mod teardown;
