//! Batched writes: the operations of one plan phase serialized back to back into a few
//! `sendmsg` calls on one blocking rtnetlink socket, then one acknowledgement read per
//! operation. The kernel handles the messages of one datagram in order and acknowledges each
//! (errors included) without stopping at the first failure, so the result per operation is
//! the same as sending them one by one, at a fraction of the per-request cost.

use std::collections::BTreeMap;

use rtnetlink::packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{Socket, SocketAddr};

use super::NetlinkError;

/// Operations per datagram: keeps a datagram well under the socket buffers.
const CHUNK: usize = 256;
/// NLMSG_ERROR: the acknowledgement type (error 0 is success).
const NLMSG_ERROR: u16 = 2;

/// One write: message, netlink flags, whether "not found" counts as done, and a description.
pub struct BatchOp {
    pub msg: RouteNetlinkMessage,
    pub flags: u16,
    pub accept_missing: bool,
    pub what: String,
}

/// A blocking rtnetlink socket for batches, opened in the caller's namespace.
pub struct BatchSocket {
    socket: Socket,
    seq: u32,
}

impl BatchSocket {
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Connect)?;
        socket.bind_auto().map_err(NetlinkError::Connect)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Connect)?;
        // Acknowledge errors with the header only, not the whole request.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_rx_buf_sz(1 << 20);
        Ok(BatchSocket { socket, seq: 1 })
    }

    /// Sends `ops` and returns one result per op, in order.
    pub fn run(&mut self, ops: &[BatchOp]) -> Vec<Result<(), NetlinkError>> {
        let mut results = Vec::with_capacity(ops.len());
        for chunk in ops.chunks(CHUNK) {
            results.extend(self.run_chunk(chunk));
        }
        results
    }

    fn run_chunk(&mut self, ops: &[BatchOp]) -> Vec<Result<(), NetlinkError>> {
        let mut buf = Vec::with_capacity(ops.len() * 96);
        let mut pending: BTreeMap<u32, usize> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            let mut header = NetlinkHeader::default();
            header.flags = op.flags;
            header.sequence_number = self.seq;
            let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(op.msg.clone()));
            msg.finalize();
            let start = buf.len();
            buf.resize(start + msg.buffer_len(), 0);
            msg.serialize(&mut buf[start..]);
            pending.insert(self.seq, i);
            self.seq = self.seq.wrapping_add(1).max(1);
        }
        let mut results: Vec<Option<Result<(), NetlinkError>>> =
            (0..ops.len()).map(|_| None).collect();
        let fail_all = |results: &mut Vec<Option<Result<(), NetlinkError>>>, e: &std::io::Error| {
            for (r, op) in results.iter_mut().zip(ops) {
                if r.is_none() {
                    *r = Some(Err(NetlinkError::Kernel {
                        what: op.what.clone(),
                        source: std::io::Error::new(e.kind(), e.to_string()),
                    }));
                }
            }
        };
        if let Err(e) = self.socket.send(&buf, 0) {
            fail_all(&mut results, &e);
            return results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect();
        }
        let mut rx = Vec::with_capacity(1 << 16);
        while !pending.is_empty() {
            rx.clear();
            if let Err(e) = self.socket.recv(&mut rx, 0) {
                fail_all(&mut results, &e);
                break;
            }
            for (seq, errno) in acks(&rx) {
                let Some(i) = pending.remove(&seq) else {
                    continue;
                };
                results[i] = Some(outcome(&ops[i], errno));
            }
        }
        results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect()
    }
}

fn outcome(op: &BatchOp, errno: i32) -> Result<(), NetlinkError> {
    use nix::libc::{ENODEV, ENOENT, ESRCH};
    if errno == 0 || (op.accept_missing && matches!(errno, ENOENT | ESRCH | ENODEV)) {
        return Ok(());
    }
    Err(NetlinkError::Kernel {
        what: op.what.clone(),
        source: std::io::Error::from_raw_os_error(errno),
    })
}

/// `(sequence number, errno)` of every acknowledgement in a datagram.
fn acks(mut data: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    while data.len() >= 16 {
        let u32_at =
            |o: usize| u32::from_ne_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
        let len = u32_at(0) as usize;
        if len < 16 || len > data.len() {
            break;
        }
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let seq = u32_at(8);
        if kind == NLMSG_ERROR && len >= 20 {
            let code = i32::from_ne_bytes([data[16], data[17], data[18], data[19]]);
            out.push((seq, -code));
        }
        // Messages are 4-byte aligned.
        let next = (len + 3) & !3;
        data = &data[next.min(data.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_acks_and_errors() {
        let mut d = Vec::new();
        for (seq, code) in [(7u32, 0i32), (8, -2)] {
            d.extend_from_slice(&36u32.to_ne_bytes());
            d.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            d.extend_from_slice(&0u16.to_ne_bytes());
            d.extend_from_slice(&seq.to_ne_bytes());
            d.extend_from_slice(&0u32.to_ne_bytes());
            d.extend_from_slice(&code.to_ne_bytes());
            d.extend_from_slice(&[0u8; 16]);
        }
        assert_eq!(acks(&d), vec![(7, 0), (8, 2)]);
    }
}
