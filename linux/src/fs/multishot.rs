//! Multishot read (`IORING_OP_READ_MULTISHOT`, kernel 6.7+) into keel's provided-buffer
//! ring (`RingDriver::enable_provided_buffers`, `pbuf.rs`): one operation on a pollable
//! file (a pipe, a FIFO, an eventfd, a character device, a socket read as a file) yields
//! a buffer each time data arrives, fibers ([`FiberReadMulti`]) and futures
//! ([`read_multi`], [`next_read`]).
//!
//! The stream is a [`Multishot`] and behaves as a multishot receive's (net rule 2): taken
//! in CQE order, re-armed when the kernel or the driver ends it without an error (an empty
//! buffer ring included: it waits for a buffer to come back), an error ends it for good,
//! and `Ok(None)` is end of file. It holds the `File` open while it lives (fd rule 1);
//! dropping it cancels the operation and gives back buffers nobody took (completion rule
//! 3). A regular file cannot be polled: the kernel ends such a stream at its first
//! arming with `EBADFD`; a kernel without the opcode with `EINVAL`. No provided-buffer
//! ring: `ENOBUFS` when the stream is made.
//!
//! **Ending a stream and waiting for it** ([`FiberReadMulti::end_read`], [`end_read`]):
//! cancels the armed operation and waits for its last completion, giving back every buffer
//! a result still brings and never re-arming. When it returns, neither the kernel nor keel
//! uses the descriptor any more, so a caller that owns the descriptor by number (the C
//! API) may close it. Dropping the stream instead leaves the end to the driver (completion
//! rule 3), which is as safe for keel's own `File` (the slot holds it open) but gives no
//! such moment. A stream armed on another executor's ring gets `EXDEV` and is dropped.
//!
//! The operation is described by [`ReadMultiOp`] (descriptor, buffer group), apart from
//! the driver (rw rule 1 in `rw_flags.rs`).
#![allow(unsafe_code)] // lending the driver to step a stream (keel-core driver rule 2)

use super::File;
use crate::net::{FiberNet, MStep, MultiKind, Multishot, ProvidedBuf, provided};
use crate::ring::RingDriver;
use core::task::Poll;
use io_uring::{opcode, squeue, types};
use keel_core::{Errno, Fiber, TaskHandle};
use std::os::fd::RawFd;

/// One multishot read, as any driver performs it: the descriptor and the provided-buffer
/// group to read into.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ReadMultiOp {
    /// The descriptor.
    pub fd: RawFd,
    /// The provided-buffer group (`bgid`).
    pub group: u16,
}

impl ReadMultiOp {
    /// The `IORING_OP_READ_MULTISHOT` SQE (with `IOSQE_BUFFER_SELECT`; length 0: each
    /// read fills at most one provided buffer). It references no memory of the caller's.
    pub fn sqe(&self) -> squeue::Entry {
        opcode::ReadMulti::new(types::Fd(self.fd), 0, self.group).build()
    }
}

fn stream(file: &File, group: u16) -> Multishot {
    let op = ReadMultiOp { fd: file.fd(), group };
    Multishot::with_fd(file.fd.clone(), op.sqe(), MultiKind::Recv)
}

/// Multishot reads for fiber tasks.
pub trait FiberReadMulti {
    /// A stream of reads of `file` into provided buffers (module doc); `ENOBUFS` if the
    /// executor's ring has no provided-buffer ring. Take data with
    /// [`next_read`](Self::next_read).
    fn read_multi(&mut self, file: &File) -> Result<Multishot, Errno>;
    /// The next buffer of a [`read_multi`](Self::read_multi) stream; `Ok(None)` at end of
    /// file. A cancelled task gets the data read before the cancel took, then `ECANCELED`.
    fn next_read(&mut self, m: &mut Multishot) -> Result<Option<ProvidedBuf>, Errno>;
    /// Ends a [`read_multi`](Self::read_multi) stream and waits until the kernel is done
    /// with it (module doc): data not taken yet is dropped, its buffers given back. Waits
    /// also in a cancelled task (the operation's end is near: it was cancelled). `EXDEV`:
    /// the stream is armed on another executor's ring.
    fn end_read(&mut self, m: Multishot) -> Result<(), Errno>;
}

/// Steps `m` towards its end (module doc): cancels the armed operation once, gives back
/// the buffer of each result, never re-arms. `Some` once it has ended (or cannot be ended
/// here: `EXDEV`), `None` to wait for the next completion. Bounded: each turn of the loop
/// takes one result the driver has already reaped.
fn end_step(
    d: &mut RingDriver,
    m: &mut Multishot,
    me: Option<TaskHandle>,
    cancel_sent: &mut bool,
) -> Option<Result<(), Errno>> {
    loop {
        match m.step(d, me) {
            MStep::Item(res, flags) => drop(provided(d, res, flags)), // given back
            MStep::Done(e) if e == crate::errno::EXDEV && m.is_armed() => return Some(Err(e)),
            MStep::Done(_) | MStep::Submit | MStep::WaitBuffer if !m.is_armed() => return Some(Ok(())),
            // A result without data of an operation that goes on (taken): cancel it, look on.
            MStep::Done(_) | MStep::Submit | MStep::WaitBuffer => {
                if !*cancel_sent {
                    m.cancel(d);
                    *cancel_sent = true;
                }
            }
            // Nothing yet (step pointed the op's wake at `me`): cancel it, wait.
            MStep::Pending => {
                if !*cancel_sent {
                    m.cancel(d);
                    *cancel_sent = true;
                }
                return None;
            }
        }
    }
}

impl FiberReadMulti for Fiber {
    fn read_multi(&mut self, file: &File) -> Result<Multishot, Errno> {
        let group = self.with_driver::<RingDriver, _>(|d| d.pbuf().map(|p| p.bgid())).flatten();
        Ok(stream(file, group.ok_or(Errno::ENOBUFS)?))
    }

    fn next_read(&mut self, m: &mut Multishot) -> Result<Option<ProvidedBuf>, Errno> {
        self.next_recv(m) // the same stream discipline (net rule 2)
    }

    fn end_read(&mut self, mut m: Multishot) -> Result<(), Errno> {
        let me = Some(self.task());
        let mut cancel_sent = false;
        loop {
            let r = self.with_driver::<RingDriver, _>(|d| {
                // SAFETY: keel-core driver rule 2: this crate's own state in the driver (and a
                // cancel of an op it keeps itself); not replaced, no other code runs meanwhile.
                end_step(unsafe { d.get_mut() }, &mut m, me, &mut cancel_sent)
            });
            match r {
                None => return Err(crate::errno::EXDEV), // not on a ring: dropped (abandoned)
                Some(Some(r)) => return r,
                Some(None) => self.wait_io(), // the op's next CQE wakes this task (step's rewake)
            }
        }
    }
}

/// A stream of reads of `file` into provided buffers: the future form of
/// [`FiberReadMulti::read_multi`].
pub async fn read_multi(file: &File) -> Result<Multishot, Errno> {
    let group = core::future::poll_fn(|cx| {
        core::task::Poll::Ready(
            keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| d.pbuf().map(|p| p.bgid())).flatten(),
        )
    })
    .await;
    Ok(stream(file, group.ok_or(Errno::ENOBUFS)?))
}

/// The next buffer of a [`read_multi`] stream; `Ok(None)` at end of file: the future
/// form of [`FiberReadMulti::next_read`].
pub async fn next_read(m: &mut Multishot) -> Result<Option<ProvidedBuf>, Errno> {
    crate::net::future::next_recv(m).await
}

/// Ends a [`read_multi`] stream and waits until the kernel is done with it: the future
/// form of [`FiberReadMulti::end_read`]. A future dropped before it is done drops the
/// stream (the driver ends it then).
pub async fn end_read(mut m: Multishot) -> Result<(), Errno> {
    let mut cancel_sent = false;
    core::future::poll_fn(move |cx| {
        // Outside any task (rt rule 2 in keel-core): `EPERM`, as every ring future.
        let Some(tcx) = keel_core::TaskCx::of(cx) else { return Poll::Ready(Err(Errno::EPERM)) };
        let me = Some(tcx.task());
        let r = tcx.with_driver::<RingDriver, _>(|d| {
            // SAFETY: keel-core driver rule 2: this crate's own state in the driver (and a
            // cancel of an op it keeps itself); not replaced, no other code runs meanwhile.
            end_step(unsafe { d.get_mut() }, &mut m, me, &mut cancel_sent)
        });
        match r {
            None => Poll::Ready(Err(crate::errno::EXDEV)),
            Some(Some(r)) => Poll::Ready(r),
            Some(None) => Poll::Pending, // the op's next CQE wakes this task (step's rewake)
        }
    })
    .await
}
