//! Readiness waits as futures ([`poll`], [`poll_multi`], [`next_ready`]), see the `ready`
//! module doc: a poll (with its deadline) and a stream's timer are kept operations
//! (`slot_op.rs`), so a future dropped in flight abandons them to their slots.
#![allow(unsafe_code)] // the timer's SQE points into its owned timespec

use super::{PollFlags, PollOp, revents, timer_sqe, timespec};
use crate::buf::RawBuf;
use crate::net::{MultiKind, Multishot};
use crate::ring::RingOp;
use crate::slot_op::SlotOp;
use core::marker::PhantomData;
use core::time::Duration;
use io_uring::types;
use keel_core::Errno;
use std::future::Future;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

/// `poll(&(struct pollfd){fd, events}, 1, timeout)`, see poll(2), through the ring
/// (`IORING_OP_POLL_ADD`): the future form of
/// [`FiberReady::poll`](super::FiberReady::poll), with the same results (ready rules 1-3).
/// Dropped in flight, its operations are cancelled in their slots.
pub fn poll(fd: BorrowedFd<'_>, events: PollFlags, timeout: Option<Duration>) -> Ready<'_> {
    let op = PollOp { fd: fd.as_raw_fd(), events, multishot: false };
    // SAFETY: a poll SQE references no memory.
    let poll = super::with_timeout(unsafe { RingOp::owned(op.sqe(), None) }, timeout);
    Ready { poll: SlotOp::new(poll), _fd: PhantomData }
}

/// The future of [`poll`].
#[must_use = "a readiness wait does nothing unless awaited"]
pub struct Ready<'fd> {
    /// The poll, with its deadline if it has a timeout (ready rule 2).
    poll: SlotOp,
    _fd: PhantomData<BorrowedFd<'fd>>,
}

impl Future for Ready<'_> {
    type Output = Result<PollFlags, Errno>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Ready rules 2-3: the deadline's `ETIME`, a cancel's `ECANCELED`, or the mask.
        Pin::new(&mut self.poll).poll(cx).map(|(res, _, _)| revents(res))
    }
}

/// A stream of readiness events on `fd` (`IORING_POLL_ADD_MULTI`, ready rule 4): the
/// future-side twin of [`FiberReady::poll_multi`](super::FiberReady::poll_multi). It owns
/// a duplicate of `fd`, made here with `F_DUPFD_CLOEXEC` (its error if that fails); take
/// the events with [`next_ready`].
pub fn poll_multi(fd: BorrowedFd<'_>, events: PollFlags) -> Result<Multishot, Errno> {
    let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(|e| Errno(e.raw_os_error()))?;
    let shared = crate::fd::Fd::from_owned(dup);
    let op = PollOp { fd: shared.raw(), events, multishot: true };
    Ok(Multishot::with_fd(shared, op.sqe(), MultiKind::Poll))
}

/// The next event mask of a [`poll_multi`] stream (`EINVAL` for a stream of another
/// kind). With a timeout, `Err(ETIME)` when it passes first; the stream stays armed and
/// events that arrive later are returned by the next call (ready rule 4).
pub async fn next_ready(m: &mut Multishot, timeout: Option<Duration>) -> Result<PollFlags, Errno> {
    if m.kind() != MultiKind::Poll {
        return Err(Errno::EINVAL);
    }
    let mask = |(res, _): (i32, u32)| super::mask_of(res as u16);
    let Some(d) = timeout else { return crate::net::future::next_multi(m).await.map(mask) };
    let mut timer = Some(timer_op(d));
    let mut next = core::pin::pin!(crate::net::future::next_multi(m));
    core::future::poll_fn(|cx| {
        if let Poll::Ready(r) = next.as_mut().poll(cx) {
            return Poll::Ready(r.map(mask)); // a timer still armed is abandoned with `timer`
        }
        // The timer goes in once the stream waits (an event already queued costs none).
        if let Some(t) = timer.as_mut()
            && let Poll::Ready((res, _, _)) = Pin::new(t).poll(cx)
        {
            timer = None;
            if res == -Errno::ETIME.0 {
                // Dropping `next` leaves the stream armed: later events wait in it.
                return Poll::Ready(Err(Errno::ETIME));
            }
            // Not an expiry (a cancelled task's timer): wait for the stream alone.
        }
        Poll::Pending
    })
    .await
}

/// A kept `IORING_OP_TIMEOUT` of `d`, its timespec in a buffer the slot keeps until the
/// completion.
fn timer_op(d: Duration) -> SlotOp {
    let mut v = vec![0u8; core::mem::size_of::<types::Timespec>()];
    // SAFETY: `v` has room for one `Timespec`, written unaligned (a `Vec<u8>` promises
    // no alignment; the kernel copies it with copy_from_user, which needs none).
    unsafe { v.as_mut_ptr().cast::<types::Timespec>().write_unaligned(timespec(d)) };
    let raw = RawBuf::from_vec(v);
    let e = timer_sqe(raw.ptr() as *const types::Timespec);
    // SAFETY: the SQE references only `raw`, which the slot keeps until completion.
    SlotOp::new(unsafe { RingOp::owned(e, Some(raw)) })
}
