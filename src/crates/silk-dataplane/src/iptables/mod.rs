//! iptables: chain names, rules, the `iptables-restore --noflush` renderer and the backend that
//! applies one payload per change under the shared lock file.

pub mod backend;
pub mod chain;
pub mod egress;
pub mod generation;
pub mod render;
pub mod save;

pub use backend::{Family, Iptables, IptablesError, LockGuard, RecordingIptables, SystemIptables};
pub use chain::{ChainName, ChainNameError};
pub use render::{Payload, Rule, Table, TablePlan};
pub use save::SavedTable;
