//! The future form of [`FiberSignal::next_signal`](crate::signal::FiberSignal::next_signal)
//! (signal rules in `signal.rs`): the `signalfd_siginfo` buffer travels boxed in the
//! operation's slot; if the future is dropped after the kernel dequeued a signal, the
//! buffer's `Drop` (run by the driver at the completion) puts the signal back (signal
//! rule 3).
#![allow(unsafe_code)] // an SQE into the boxed buffer the slot keeps

use crate::buf::RawBuf;
use crate::fs::OwnedOp;
use crate::ring::RingOp;
use crate::signal::{SignalFd, SignalInfo, info_of, read_sqe, requeue, zeroed_info};
use keel_core::Errno;

/// One read's buffer; `taken` once its task has the signal.
struct InfoBuf {
    raw: libc::signalfd_siginfo,
    taken: bool,
}

impl Drop for InfoBuf {
    fn drop(&mut self) {
        if !self.taken {
            requeue(&self.raw); // signal rule 3 (nothing when `ssi_signo` is 0: no signal read)
        }
    }
}

/// `read(sfd, &info, sizeof info)` through the ring: waits for one of `sfd`'s signals
/// (signal rules 1-3); the future form of
/// [`FiberSignal::next_signal`](crate::signal::FiberSignal::next_signal).
pub async fn next_signal(sfd: &SignalFd) -> Result<SignalInfo, Errno> {
    let mut b = Box::new(InfoBuf { raw: zeroed_info(), taken: false });
    let e = read_sqe(sfd.fd(), &mut b.raw);
    // SAFETY: the SQE references only the box, which the slot keeps until completion.
    let op = unsafe { RingOp::owned(e, Some(RawBuf::from_box(b))) };
    let (res, raw) = OwnedOp::new(op).holding(Some(&sfd.fd)).await;
    // SAFETY: the box above was an `InfoBuf`.
    let mut b = raw.and_then(|r| unsafe { r.into_box::<InfoBuf>() }).ok_or(Errno::EIO)?;
    b.taken = true;
    info_of(res?, &b.raw)
}
