//! Closing a descriptor (fd rule 3): cancel every operation naming it first, then close
//! it through the ring, or let the last operation's completion close it; a close that
//! cannot go through the ring (a cancelled task, no keel task) cancels synchronously and
//! closes with `close(2)`. The descriptor is closed whatever the result.
#![allow(unsafe_code)] // cancel and close SQEs; closing a descriptor nothing else names

use super::OwnedOp;
use crate::fd::{Fd, SharedFd};
use crate::ring::{RingDriver, RingOp};
use io_uring::{opcode, types};
use keel_core::{Errno, Fiber, IoResult, IoStatus};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;

/// Whether a cancel's result says it did not run (so the descriptor's operations may
/// still be in flight): refused before submission (cancelled task, no room) or itself
/// cancelled.
fn cancel_not_run(r: &Result<u32, Errno>) -> bool {
    matches!(r, Err(e) if *e != Errno::ENOENT && *e != crate::errno::EALREADY && *e != Errno::EINVAL)
}

/// fd rule 3 for a direct descriptor, fibers (`FiberFs::close_direct`,
/// `FiberNet::close_fixed_socket`): cancel its operations, then close it through the ring;
/// what cannot start (a cancelled task) is done synchronously (`sync_close_fixed`).
pub(crate) fn close_fixed_fiber(f: &mut Fiber, index: u32) -> Result<(), Errno> {
    let sock = crate::net::Sock::Fixed(index);
    // SAFETY: cancel and close SQEs reference no memory.
    let cancelled = run_to_end(f, unsafe { RingOp::from_entry(crate::net::cancel_fd_sqe(sock)) });
    // SAFETY: as above.
    let closed = match cancelled
        .is_some()
        .then(|| run_to_end(f, unsafe { RingOp::from_entry(crate::net::close_sqe(sock)) }))
        .flatten()
    {
        Some(Err(Errno::ECANCELED)) | None => {
            return f
                .with_driver::<RingDriver, _>(|d| {
                    // SAFETY: keel-core driver rule 2: this crate's own state in the driver
                    // (and at most a cancel of an op it keeps itself); not replaced, no
                    // other code runs meanwhile.
                    let d = unsafe { d.get_mut() };
                    d.sync_close_fixed(index)
                })
                .unwrap_or(Err(Errno::EINVAL));
        }
        Some(r) => r.map(drop),
    };
    cancelled.map_or(Ok(()), crate::net::cancel_ok).and(closed)
}

/// fd rule 3 for a direct descriptor, futures (`net::future::close_fixed_socket`).
pub(crate) async fn close_fixed_shared(index: u32) -> Result<(), Errno> {
    let sock = crate::net::Sock::Fixed(index);
    // SAFETY: a cancel SQE references no memory.
    let cancelled = OwnedOp::new(unsafe { RingOp::owned(crate::net::cancel_fd_sqe(sock), None) }).await.0;
    let closed = if cancel_not_run(&cancelled) {
        Err(Errno::ECANCELED)
    } else {
        // SAFETY: as above.
        OwnedOp::new(unsafe { RingOp::owned(crate::net::close_sqe(sock), None) }).await.0.map(drop)
    };
    match closed {
        Err(Errno::ECANCELED) | Err(Errno::EPERM) => {
            let r = core::future::poll_fn(|cx| {
                Poll::Ready(keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| {
                    // SAFETY: keel-core driver rule 2: this crate's own state in the driver
                    // (and at most a cancel of an op it keeps itself); not replaced, no
                    // other code runs meanwhile.
                    let d = unsafe { d.get_mut() };
                    d.sync_close_fixed(index)
                }))
            })
            .await;
            r.unwrap_or(Err(Errno::EPERM)) // outside a task there is no ring to reach
        }
        closed => crate::net::cancel_ok(cancelled).and(closed),
    }
}

/// fd rule 3 for futures (`close`, `net::future::close_socket`).
pub(crate) async fn close_shared(fd: SharedFd) -> Result<(), Errno> {
    let raw = fd.raw();
    // The cancel holds the descriptor too: its number is not reused under it.
    // SAFETY: a cancel SQE references no memory.
    let cancel = unsafe { RingOp::owned(crate::net::cancel_fd_sqe(crate::net::Sock::Fd(raw)), None) };
    let cancelled = OwnedOp::new(cancel).holding(Some(&fd)).await.0;
    if cancel_not_run(&cancelled) {
        core::future::poll_fn(|cx| {
            Poll::Ready(keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| {
                // SAFETY: keel-core driver rule 2: this crate's own state in the driver
                // (and at most a cancel of an op it keeps itself); not replaced, no other
                // code runs meanwhile.
                let d = unsafe { d.get_mut() };
                d.sync_cancel_fd(raw)
            }))
        })
        .await;
    }
    let cancelled = crate::net::cancel_ok(cancelled).or_else(|e| if cancel_not_run(&Err(e)) { Ok(()) } else { Err(e) });
    // The close holds our reference: if it never runs (refused, cancelled) dropping it
    // closes the descriptor with close(2); if it completes, the kernel closed it.
    let e = opcode::Close::new(types::Fd(raw)).build();
    let closed = if Rc::strong_count(&fd) == 1 {
        // SAFETY: no memory is referenced.
        match OwnedOp::new(unsafe { RingOp::owned(e, None) }).holding(Some(&fd)).await.0 {
            Ok(_) => Ok(()),
            // A cancelled task: refused, or cancelled before the kernel ran it; the drop of
            // `fd` below closes it with close(2) (slot rule 4 left it unmarked).
            Err(Errno::ECANCELED) => Ok(()),
            // Outside a keel task (EPERM) or not on a ring (EINVAL): an error, and the drop
            // of `fd` below closes it all the same; else the kernel ran close(2).
            Err(e) => Err(e),
        }
    } else {
        Ok(()) // an operation still holds it: its completion closes it (fd rule 3)
    };
    drop(fd);
    cancelled.and(closed)
}

/// Runs `op` to its completion without cancelling it (a cancel of the descriptor's
/// operations, a close: both end promptly), even in a cancelled task; `None` if it could
/// not start (the task is cancelled, the executor has no ring).
#[inline(always)] // the fiber's suspend must not straddle an out-of-line frame (arch doc)
pub(crate) fn run_to_end(f: &mut Fiber, op: RingOp) -> Option<IoResult> {
    let st = pin!(IoStatus::new());
    f.initiate::<RingDriver>(st.as_ref(), op).ok()?;
    while st.is_in_flight() {
        f.wait_io();
    }
    Some(st.result().unwrap_or(Err(Errno::EIO)))
}

/// fd rule 3 for fibers (`FiberFs::close`, `FiberNet::close_socket`): the cancel and the
/// close run to their completions even in a cancelled task; what cannot start (a
/// cancelled task starts no ring operation) is done without the ring: a synchronous
/// cancel, then close(2).
pub(crate) fn close_fiber(f: &mut Fiber, fd: SharedFd) -> Result<(), Errno> {
    let raw = fd.raw();
    // SAFETY: a cancel SQE references no memory; `fd` is held until `run_to_end` returns,
    // after the completion.
    let cancelled =
        match run_to_end(f, unsafe { RingOp::from_entry(crate::net::cancel_fd_sqe(crate::net::Sock::Fd(raw))) }) {
            Some(r) => crate::net::cancel_ok(r),
            None => {
                f.with_driver::<RingDriver, _>(|d| {
                    // SAFETY: keel-core driver rule 2: this crate's own state in the driver
                    // (and at most a cancel of an op it keeps itself); not replaced, no
                    // other code runs meanwhile.
                    let d = unsafe { d.get_mut() };
                    d.sync_cancel_fd(raw)
                });
                Ok(())
            }
        };
    let raw = match Fd::try_into_raw(fd) {
        Ok(raw) => raw,
        Err(shared) => {
            drop(shared); // an operation still holds it: its completion closes it (fd rule 3)
            return cancelled;
        }
    };
    let e = opcode::Close::new(types::Fd(raw)).build();
    // SAFETY: no memory is referenced.
    let closed = match run_to_end(f, unsafe { RingOp::from_entry(e) }) {
        Some(Ok(_)) => Ok(()),
        // Not run (it could not start, or the executor's final cancel reached it first).
        None | Some(Err(Errno::ECANCELED)) => {
            // SAFETY: we held the only reference and no operation names the descriptor.
            unsafe { rustix::io::close(raw) };
            Ok(())
        }
        Some(Err(e)) => Err(e), // the kernel ran close(2): the descriptor is gone either way
    };
    cancelled.and(closed)
}
