//! Future sends that go beyond one `send`: a request/response exchange
//! ([`send_then_recv`]) and a zero-copy send from a registered buffer ([`send_zc_fixed`]),
//! the future forms of the `FiberNet` calls of the same names. Buffers go in by value and
//! come back with the result (`slot_op.rs`: a future dropped in flight leaves them with
//! its slot until the kernel is done).
#![allow(unsafe_code)] // an SQE that points into a registered buffer the operation holds

use super::{recv, send_all};
use crate::net::{AsSock, send_zc_fixed_sqe};
use crate::ring::RingOp;
use keel_core::Errno;

#[cfg(doc)]
use crate::net::FiberNet;

/// Sends all of `buf[..len]`, then receives into `buf` (up to its capacity; `Ok(0)`: end
/// of stream): the future form of [`FiberNet::send_then_recv`]. The buffer goes in by
/// value and comes back with its length set to what was received (or, if the send failed,
/// cut to `len`). The send and the receive go to the kernel one after the other (the
/// fiber's form when there is no room for both at once): the receive is submitted only once
/// the send has completed, so it never overwrites bytes still being sent.
pub async fn send_then_recv(s: &impl AsSock, mut buf: Vec<u8>, len: usize) -> (Result<u32, Errno>, Vec<u8>) {
    buf.truncate(len);
    let (sent, buf) = send_all(s, buf).await;
    if let Err(e) = sent {
        return (Err(e), buf);
    }
    recv(s, buf).await
}

/// `IORING_OP_SEND_ZC` of `len` bytes from registered buffer `buf` (the future form of
/// [`FiberNet::send_zc_fixed`]): the buffer goes with the operation and comes back with the
/// result, after the kernel's notification (net rule 4, completion rule 4), so it may be
/// reused at once. `EINVAL` if `len` exceeds the buffer, `EXDEV` if `buf` belongs to
/// another executor's ring (regbuf rule 1). Dropped in flight, the buffer stays with the
/// operation's slot until the notification, then is released (regbuf rule 5).
pub async fn send_zc_fixed(
    s: &impl AsSock,
    buf: crate::fs::FixedBuf,
    len: u32,
) -> (Result<u32, Errno>, crate::fs::FixedBuf) {
    if len as usize > buf.len() {
        return (Err(Errno::EINVAL), buf);
    }
    let e = send_zc_fixed_sqe(s.sock(), buf.as_ptr(), len, buf.index());
    // SAFETY: the SQE references only `buf` (`len` bytes, checked), which the operation
    // holds until its last CQE (the notification), and the slot if the future is dropped
    // first (regbuf rule 5); it is submitted only on `buf`'s own ring (`SlotOp::holding_fixed`).
    crate::fs::fixed_op(s.held(), unsafe { RingOp::owned(e, None) }, buf).await
}
