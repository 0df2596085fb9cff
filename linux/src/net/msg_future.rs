//! `sendmsg`/`recvmsg` as futures (msg rules in `msg.rs`): the header, the data buffer and
//! the descriptors travel boxed in the operation's slot (`RawBuf::from_box`), come back with
//! the result, and stay with the slot until the completion if the future is dropped in
//! flight; descriptors a dropped receive got are closed then (msg rule 2).
#![allow(unsafe_code)] // SQEs that point into the boxed header the slot keeps

use super::msg::{MsgHdr, Received, raw_fds, recvmsg_sqe, sendmsg_sqe};
use super::{AsSock, SockAddr};
use crate::buf::RawBuf;
use crate::fs::OwnedOp;
use crate::ring::RingOp;
use keel_core::Errno;
use std::os::fd::OwnedFd;

/// A send's memory (msg rule 1): `m` points into `data` and holds `fds`' numbers.
struct SendParts {
    m: MsgHdr,
    data: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// A receive's memory: `m` points into `data`'s spare capacity.
struct RecvParts {
    m: MsgHdr,
    data: Vec<u8>,
}

/// `sendmsg(fd, {to, [buf], SCM_RIGHTS fds}, MSG_NOSIGNAL)`: the future form of
/// [`FiberMsg::send_msg`](super::FiberMsg::send_msg). The buffer and the descriptors go in
/// by value and come back with the result (msg rule 4: open until the kernel is done).
pub async fn send_msg(
    s: &impl AsSock,
    buf: Vec<u8>,
    to: Option<&SockAddr>,
    fds: Vec<OwnedFd>,
) -> (Result<u32, Errno>, Vec<u8>, Vec<OwnedFd>) {
    let m = match MsgHdr::for_send((buf.as_ptr(), buf.len()), to, &raw_fds(&fds)) {
        Ok(m) => m,
        Err(e) => return (Err(e), buf, fds),
    };
    let mut parts = Box::new(SendParts { m, data: buf, fds });
    let e = sendmsg_sqe(s.sock(), parts.m.point());
    // SAFETY: the SQE references only the box (the header, its address and control) and
    // the data it owns, which the slot keeps until the completion (msg rule 1).
    let op = unsafe { RingOp::owned(e, Some(RawBuf::from_box(parts))) };
    let (res, raw) = OwnedOp::new(op).holding(s.held()).await;
    // SAFETY: the box above was a `SendParts`.
    match raw.and_then(|r| unsafe { r.into_box::<SendParts>() }) {
        Some(p) => {
            let SendParts { m, data, fds } = *p;
            drop(m);
            (res, data, fds)
        }
        None => (res.and(Err(Errno::EIO)), Vec::new(), Vec::new()),
    }
}

/// `recvmsg(fd, {from, [buf], control for max_fds}, MSG_CMSG_CLOEXEC)`: the future form of
/// [`FiberMsg::recv_msg`](super::FiberMsg::recv_msg). Receives up to `buf.capacity()`
/// bytes; the buffer comes back with its length set to what was received.
pub async fn recv_msg(s: &impl AsSock, buf: Vec<u8>, max_fds: usize) -> (Result<Received, Errno>, Vec<u8>) {
    let mut data = buf;
    data.clear();
    let m = match MsgHdr::for_recv((data.as_mut_ptr(), data.capacity()), max_fds) {
        Ok(m) => m,
        Err(e) => return (Err(e), data),
    };
    let mut parts = Box::new(RecvParts { m, data });
    let e = recvmsg_sqe(s.sock(), parts.m.point());
    // SAFETY: as in `send_msg`; the kernel writes into the data's capacity and the box.
    let op = unsafe { RingOp::owned(e, Some(RawBuf::from_box(parts))) };
    let (res, raw) = OwnedOp::new(op).holding(s.held()).await;
    // SAFETY: the box above was a `RecvParts`.
    let Some(mut p) = raw.and_then(|r| unsafe { r.into_box::<RecvParts>() }) else {
        return (res.and(Err(Errno::EIO)), Vec::new());
    };
    match res {
        Ok(n) => {
            let n = (n as usize).min(p.data.capacity());
            // Memcheck does not see the kernel's writes through the ring: in a valgrind
            // build the bytes received are marked defined here (as `RawBuf::into_vec` does).
            #[cfg(keel_valgrind)]
            keel_core::stack::valgrind::make_mem_defined(p.data.as_mut_ptr(), n);
            // SAFETY: the completion says the kernel wrote `n` bytes from the start of the
            // capacity (at most the capacity the iovec offered).
            unsafe { p.data.set_len(n) };
            let got = p.m.received(n as u32);
            (Ok(got), core::mem::take(&mut p.data))
        }
        Err(e) => (Err(e), core::mem::take(&mut p.data)), // the box's drop closes what it holds
    }
}

/// `sendto(fd, buf, len, MSG_NOSIGNAL, to, tolen)`: the future form of
/// [`FiberMsg::send_to`](super::FiberMsg::send_to); the buffer comes back.
pub async fn send_to(s: &impl AsSock, buf: Vec<u8>, to: &SockAddr) -> (Result<u32, Errno>, Vec<u8>) {
    let (r, buf, _) = send_msg(s, buf, Some(to), Vec::new()).await;
    (r, buf)
}

/// `recvfrom(fd, buf, cap, 0, &from, &fromlen)`: the future form of
/// [`FiberMsg::recv_from`](super::FiberMsg::recv_from); the buffer comes back with its
/// length set to what was received.
pub async fn recv_from(s: &impl AsSock, buf: Vec<u8>) -> (Result<(u32, Option<SockAddr>), Errno>, Vec<u8>) {
    let (r, buf) = recv_msg(s, buf, 0).await;
    (r.map(|r| (r.len, r.from)), buf)
}
