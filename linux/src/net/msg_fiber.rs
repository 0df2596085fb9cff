//! `sendmsg`/`recvmsg` for fiber tasks ([`FiberMsg`]), see `msg.rs` (msg rules): the
//! header, address and control buffer live in the call's frame, which it leaves only after
//! the completion is reaped.
#![allow(unsafe_code)] // SQEs that point at the fiber's borrowed buffers and header

use super::msg::{MsgHdr, Received, raw_fds, recvmsg_sqe, sendmsg_sqe};
use super::{AsSock, SockAddr};
use crate::fs::FiberFs;
use crate::ring::RingOp;
use keel_core::{Errno, Fiber};
use std::os::fd::BorrowedFd;

/// Message calls for fiber tasks (datagrams with addresses, descriptor passing). Each doc
/// opens with the C form.
pub trait FiberMsg {
    /// `sendmsg(fd, {to, [buf], SCM_RIGHTS fds}, MSG_NOSIGNAL)`, see sendmsg(2): `to` for
    /// an unconnected datagram socket, `fds` passed to the peer of a Unix socket (at most
    /// 253, msg rule 3; they stay borrowed until the kernel is done, msg rule 4).
    fn send_msg(
        &mut self,
        s: &impl AsSock,
        buf: &[u8],
        to: Option<&SockAddr>,
        fds: &[BorrowedFd<'_>],
    ) -> Result<u32, Errno>;
    /// `recvmsg(fd, {from, [buf], control for max_fds}, MSG_CMSG_CLOEXEC)`, see
    /// recvmsg(2): the bytes go to `buf`; the sender's address, the descriptors passed
    /// (owned, msg rule 2) and `MSG_TRUNC`/`MSG_CTRUNC` come in [`Received`].
    fn recv_msg(&mut self, s: &impl AsSock, buf: &mut [u8], max_fds: usize) -> Result<Received, Errno>;
    /// `sendto(fd, buf, len, MSG_NOSIGNAL, to, tolen)`: one datagram to `to`.
    fn send_to(&mut self, s: &impl AsSock, buf: &[u8], to: &SockAddr) -> Result<u32, Errno>;
    /// `recvfrom(fd, buf, len, 0, &from, &fromlen)`: one datagram and its sender (`None`
    /// on a connected stream). It takes no descriptors: any passed with the datagram are
    /// discarded by the kernel (`recv_msg` takes them).
    fn recv_from(&mut self, s: &impl AsSock, buf: &mut [u8]) -> Result<(u32, Option<SockAddr>), Errno>;
}

impl FiberMsg for Fiber {
    fn send_msg(
        &mut self,
        s: &impl AsSock,
        buf: &[u8],
        to: Option<&SockAddr>,
        fds: &[BorrowedFd<'_>],
    ) -> Result<u32, Errno> {
        let mut m = MsgHdr::for_send((buf.as_ptr(), buf.len()), to, &raw_fds(fds))?;
        let e = sendmsg_sqe(s.sock(), m.point());
        // SAFETY: `m` (and what it points at: `buf`, the address copy, the control) stays
        // in this frame, unmoved, until `run_op` returns after the completion (msg rule 1);
        // `fds` are borrowed as long (msg rule 4).
        self.run_op(unsafe { RingOp::from_entry(e) })
    }

    fn recv_msg(&mut self, s: &impl AsSock, buf: &mut [u8], max_fds: usize) -> Result<Received, Errno> {
        let mut m = MsgHdr::for_recv((buf.as_mut_ptr(), buf.len()), max_fds)?;
        let e = recvmsg_sqe(s.sock(), m.point());
        // SAFETY: as in `send_msg`; the kernel writes into `buf` and `m` only.
        let n = self.run_op(unsafe { RingOp::from_entry(e) })?;
        Ok(m.received(n)) // on an error `m`'s drop closes what it holds (msg rule 2)
    }

    fn send_to(&mut self, s: &impl AsSock, buf: &[u8], to: &SockAddr) -> Result<u32, Errno> {
        self.send_msg(s, buf, Some(to), &[])
    }

    fn recv_from(&mut self, s: &impl AsSock, buf: &mut [u8]) -> Result<(u32, Option<SockAddr>), Errno> {
        self.recv_msg(s, buf, 0).map(|r| (r.len, r.from))
    }
}
