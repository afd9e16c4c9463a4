//! silk-controller: hands out overlay subnets to cells (control-plane §§1-4). The binary parses
//! the config ([`config`]), then [`server::start`] builds TLS ([`tls`]), the database
//! ([`db`]), the lease logic ([`leaser`], [`pool`]) and the API ([`api`]), health and debug
//! servers.

pub mod api;
pub mod config;
pub mod db;
pub mod health;
pub mod leaser;
pub mod pool;
#[cfg(test)]
mod proptests;
pub mod server;
pub mod tls;
