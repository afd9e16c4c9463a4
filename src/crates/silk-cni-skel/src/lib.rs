//! The CNI protocol harness shared by silk-cni, cni-wrapper-plugin and bandwidth.
//!
//! A plugin implements [`CniPlugin`]; [`run`] owns argv, environment, stdin, stdout and the exit
//! code: it validates the environment and the config's `cniVersion`, dispatches the command,
//! converts the result to the requested version and prints either the result or a spec error
//! `{cniVersion, code, msg, details}` (containernetworking/cni SPEC.md, "Error").

pub mod delegate;
pub mod env;
pub mod error;
pub mod filelog;
pub mod gc;
pub mod http;
#[cfg(test)]
mod proptests;
pub mod result;
pub mod run;
pub mod version;

pub use env::{CmdArgs, Command};
pub use error::{CniError, ErrorCode};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use run::{run, run_with, CniPlugin};
