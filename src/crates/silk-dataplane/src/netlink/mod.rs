//! The rtnetlink backend for the VTEP: one netlink socket per process (or per namespace),
//! one dump per object kind to read the actual state ([`state`]), link and address writes at
//! acquire time ([`link`]), and the plan applied as ordered phases of replace/delete requests
//! ([`apply`]). Writes use replace semantics and deletes accept "not found", so a crash half
//! way through is repaired by the next cycle; EINTR/EAGAIN/EBUSY are retried.

pub mod apply;
pub mod batch;
pub mod link;
pub mod monitor;
pub mod state;
pub mod veth;

use std::num::NonZeroI32;

use futures::StreamExt;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::Handle;

/// How often a request that failed with EINTR/EAGAIN/EBUSY is sent again.
const RETRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("open netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("{what}: {source}")]
    Kernel {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: netlink request failed: {detail}")]
    Request { what: String, detail: String },
    #[error("link {0} not found")]
    LinkNotFound(String),
    #[error("no interface with address {0}")]
    NoInterfaceWithAddress(std::net::Ipv4Addr),
    #[error("{failed} of {total} netlink operations failed, first: {first}")]
    Apply {
        failed: usize,
        total: usize,
        #[source]
        first: Box<NetlinkError>,
    },
}

impl NetlinkError {
    /// The errno behind a kernel error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A connection to rtnetlink in the namespace that was current when it was opened.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    /// The blocking socket plan phases are batched on (see [`batch`]).
    batch: std::sync::Arc<std::sync::Mutex<batch::BatchSocket>>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").finish_non_exhaustive()
    }
}

impl Netlink {
    /// Opens the sockets (both in the calling thread's namespace) and spawns the async one's
    /// driver on the current tokio runtime.
    pub fn connect() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(conn);
        let batch = std::sync::Arc::new(std::sync::Mutex::new(batch::BatchSocket::open()?));
        Ok(Netlink { handle, batch })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Sends one acknowledged request, retrying transient errors. With `accept_missing`,
    /// ENOENT/ESRCH/ENODEV count as success (deleting what is already gone).
    pub(crate) async fn request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: impl Fn() -> String,
        accept_missing: bool,
    ) -> Result<(), NetlinkError> {
        use nix::libc::{EAGAIN, EBUSY, EINTR, ENODEV, ENOENT, ESRCH};
        let mut attempt = 0;
        loop {
            let mut req = NetlinkMessage::from(msg.clone());
            req.header.flags = flags;
            let mut handle = self.handle.clone();
            let mut resp = handle.request(req).map_err(|e| NetlinkError::Request {
                what: what(),
                detail: e.to_string(),
            })?;
            let mut code: Option<NonZeroI32> = None;
            while let Some(m) = resp.next().await {
                if let NetlinkPayload::Error(e) = m.payload {
                    code = e.code;
                }
            }
            let Some(code) = code else { return Ok(()) };
            let errno = -code.get();
            if accept_missing && matches!(errno, ENOENT | ESRCH | ENODEV) {
                return Ok(());
            }
            if matches!(errno, EINTR | EAGAIN | EBUSY) && attempt < RETRIES {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10 << attempt)).await;
                continue;
            }
            return Err(NetlinkError::Kernel {
                what: what(),
                source: std::io::Error::from_raw_os_error(errno),
            });
        }
    }
}

/// Flags for a create-or-replace write.
pub(crate) const REPLACE: u16 = rtnetlink::packet_core::NLM_F_REQUEST
    | rtnetlink::packet_core::NLM_F_ACK
    | rtnetlink::packet_core::NLM_F_CREATE
    | rtnetlink::packet_core::NLM_F_REPLACE;
/// Flags for a create that fails when the object exists.
pub(crate) const CREATE: u16 = rtnetlink::packet_core::NLM_F_REQUEST
    | rtnetlink::packet_core::NLM_F_ACK
    | rtnetlink::packet_core::NLM_F_CREATE
    | rtnetlink::packet_core::NLM_F_EXCL;
/// Flags for a delete.
pub(crate) const DELETE: u16 =
    rtnetlink::packet_core::NLM_F_REQUEST | rtnetlink::packet_core::NLM_F_ACK;
