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
//! The operation is described by [`ReadMultiOp`] (descriptor, buffer group), apart from
//! the driver (rw rule 1 in `rw_flags.rs`).

use super::File;
use crate::net::{FiberNet, MultiKind, Multishot, ProvidedBuf};
use crate::ring::RingDriver;
use io_uring::{opcode, squeue, types};
use keel_core::{Errno, Fiber};
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
}

impl FiberReadMulti for Fiber {
    fn read_multi(&mut self, file: &File) -> Result<Multishot, Errno> {
        let group = self.with_driver::<RingDriver, _>(|d| d.pbuf().map(|p| p.bgid())).flatten();
        Ok(stream(file, group.ok_or(Errno::ENOBUFS)?))
    }

    fn next_read(&mut self, m: &mut Multishot) -> Result<Option<ProvidedBuf>, Errno> {
        self.next_recv(m) // the same stream discipline (net rule 2)
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
