//! What the epoll driver performs: operations described as plain data, with no SQE in
//! them, so the same description can be carried out on readiness.

use crate::flags::PollFlags;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// An operation for [`EpollDriver`](super::EpollDriver).
#[derive(Debug)]
pub struct EpollOp {
    pub(crate) kind: EpollKind,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum EpollKind {
    /// Completes at the next reap with `Ok(0)`.
    Nop,
    /// Completes when `fd` has one of `events`, with the ready mask (`POLLERR`,
    /// `POLLHUP`, `POLLNVAL` always count).
    Poll { fd: RawFd, events: u16 },
}

impl EpollOp {
    /// A no-op.
    pub fn nop() -> Self {
        EpollOp { kind: EpollKind::Nop }
    }

    /// Waits until `fd` has one of `events` (`POLLIN`, `POLLOUT`, `POLLPRI`, ...) and
    /// completes with the ready mask (the 16 `revents` bits).
    ///
    /// # Safety
    /// `fd` stays open until the operation has completed and been reaped, or been
    /// cancelled: epoll forgets a descriptor that is closed, and the operation would then
    /// wait for an event that never comes.
    pub unsafe fn poll(fd: BorrowedFd<'_>, events: PollFlags) -> Self {
        EpollOp { kind: EpollKind::Poll { fd: fd.as_raw_fd(), events: crate::ready::poll_bits(events) } }
    }
}
