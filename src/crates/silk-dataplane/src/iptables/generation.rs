//! The nf_tables ruleset generation: a counter the kernel bumps at every committed nftables
//! transaction in the network namespace (every `iptables-nft-restore`, every `iptables -A`,
//! any `nft` command). A caller that remembers the generation it last read the tables at can
//! skip re-reading them while the number has not moved, which turns "read iptables-save every
//! cycle" into one netlink round trip when nothing changed.
//!
//! Only meaningful when `iptables` is the nf_tables variant: iptables-legacy writes never bump
//! it. [`SystemIptables`](super::SystemIptables) checks that once before it answers.

use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NFNETLINK_V0: u8 = 0;

/// The request: a netlink header and an `nfgenmsg` (family unspec, version 0, resource 0).
fn request(seq: u32) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0..4].copy_from_slice(&20u32.to_ne_bytes());
    m[4..6].copy_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m[17] = NFNETLINK_V0;
    m
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The `NFTA_GEN_ID` of a `NFT_MSG_NEWGEN` answer, `None` for anything else (an error answer
/// when the kernel has no nf_tables).
pub fn parse_answer(b: &[u8]) -> Option<u32> {
    let len = usize::try_from(u32_at(b, 0)?).ok()?;
    let kind = u16_at(b, 4)?;
    if kind == NLMSG_ERROR || kind != ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN) {
        return None;
    }
    // Attributes follow the 16-byte header and the 4-byte nfgenmsg, each 4-byte aligned.
    let mut at = 20;
    while at + 4 <= len.min(b.len()) {
        let alen = usize::from(u16_at(b, at)?);
        let atype = u16_at(b, at + 2)? & 0x3fff;
        if alen < 4 {
            return None;
        }
        if atype == NFTA_GEN_ID && alen >= 8 {
            // Attribute payloads of nf_tables are big-endian.
            return Some(u32::from_be_bytes(b.get(at + 4..at + 8)?.try_into().ok()?));
        }
        at += (alen + 3) & !3;
    }
    None
}

/// The current generation of this network namespace's nf_tables ruleset, or `None` when the
/// kernel does not answer (no nf_tables, no permission).
pub fn nftables_generation() -> Option<u32> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .ok()?;
    let kernel = NetlinkAddr::new(0, 0);
    sendto(fd.as_raw_fd(), &request(1), &kernel, MsgFlags::empty()).ok()?;
    let mut buf = [0u8; 512];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
    parse_answer(buf.get(..n)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_newgen_answer_and_rejects_errors() {
        let mut m = vec![0u8; 20];
        m[4..6].copy_from_slice(&((10u16 << 8) | 15).to_ne_bytes());
        // NFTA_GEN_ID = 0x01020304, then a PROC_PID attribute
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&1u16.to_ne_bytes());
        m.extend_from_slice(&[1, 2, 3, 4]);
        let len = u32::try_from(m.len()).unwrap_or(0);
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(parse_answer(&m), Some(0x0102_0304));
        let mut err = m.clone();
        err[4..6].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(parse_answer(&err), None);
        assert_eq!(parse_answer(&m[..10]), None);
        assert_eq!(request(7)[4..6], ((10u16 << 8) | 16).to_ne_bytes());
    }
}
