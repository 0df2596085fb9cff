//! Descriptor transfer for future tasks: the future forms of [`FiberTransfer`]'s calls
//! (the `transfer` module's rules). Operations run in driver slots (`slot_op.rs`): a
//! future dropped in flight abandons its operation, and what the kernel made for it
//! anyway (a registered index, an installed descriptor) is closed (completion rule 3).
//!
//! [`FiberTransfer`]: super::FiberTransfer
#![allow(unsafe_code)] // SQEs pointing into the slot's owned buffer; wrapping an installed descriptor

use super::fiber::{Sent, install_check, send_check, sent};
use super::inbox::{Look, Ticket, mailbox_of};
use super::{FixedFd, Mailbox, SendError, TransferError, TransferOp, index_error, register_error, table_of};
use crate::buf::RawBuf;
use crate::fs::{FixedFile, OwnedOp, close_fixed_shared};
use crate::net::FixedSocket;
use crate::ring::shared::Shared;
use crate::ring::{RingDriver, RingOp, lent_mut};
use crate::slot_op::SlotOp;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use keel_core::Errno;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::rc::Rc;

/// Runs `f` on the task's ring driver once; `NotOnRing` outside a ring task.
async fn with_ring<R>(f: impl FnOnce(&mut RingDriver) -> R) -> Result<R, TransferError> {
    let mut f = Some(f);
    core::future::poll_fn(|cx| {
        let f = f.take().expect("polled once: it is ready at once");
        Poll::Ready(keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| f(lent_mut(d))))
    })
    .await
    .ok_or(TransferError::NotOnRing)
}

/// Puts the open file of `fd` at a free index of this ring's table (transfer rule 1):
/// the future form of [`FiberTransfer::register_fd`](super::FiberTransfer::register_fd).
/// A future dropped before the ring was entered leaves the SQE naming `fd`'s number;
/// should that number be closed and reused meanwhile, the abandoned registration holds
/// the new file for a moment and its index is closed at once (completion rule 3).
pub async fn register(fd: BorrowedFd<'_>) -> Result<FixedFd, TransferError> {
    let shared = with_ring(|d| table_of(d)).await??;
    let raw = RawBuf::from_vec(fd.as_raw_fd().to_ne_bytes().to_vec());
    let e = TransferOp::Register { fd: fd.as_raw_fd(), out: raw.ptr() as *mut i32 }.sqe();
    // SAFETY: the SQE's only memory reference is into `raw`, which the slot keeps.
    let (r, raw) = OwnedOp::new(unsafe { RingOp::owned(e, Some(raw)) }).await;
    match r {
        Ok(1) => {
            let v = raw.map(|b| b.into_vec(4)).unwrap_or_default();
            let index = i32::from_ne_bytes(v.get(..4).and_then(|b| b.try_into().ok()).unwrap_or([0xff; 4]));
            if index < 0 {
                return Err(TransferError::Os(Errno::EIO)); // keel bug guard: the kernel wrote no index
            }
            Ok(FixedFd::new(index as u32, &shared))
        }
        Ok(_) => Err(TransferError::BadDescriptor),
        Err(e) => Err(register_error(e)),
    }
}

/// A process descriptor for the file at `fixed`'s index (transfer rule 2): the future
/// form of [`FiberTransfer::install_fd`](super::FiberTransfer::install_fd).
pub async fn install(fixed: &FixedFd, cloexec: bool) -> Result<OwnedFd, TransferError> {
    with_ring(|d| install_check(d, fixed)).await??;
    let e = TransferOp::Install { index: fixed.index(), cloexec }.sqe();
    // SAFETY: the SQE references no memory.
    match OwnedOp::new(unsafe { RingOp::owned(e, None) }).await.0 {
        // SAFETY: the kernel made this descriptor for this call; nothing else knows it.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => Err(index_error(e)),
    }
}

/// Sends `fixed` to the ring of `to`, announced by `key` (transfer rule 4): the future
/// form of [`FiberTransfer::send_fd`](super::FiberTransfer::send_fd). The message holds
/// a duplicate of the target's descriptor until its completion (rule 8).
pub async fn send(fixed: FixedFd, to: &Mailbox, key: u32) -> Result<(), SendError> {
    let back = |error, fixed| Err(SendError { error, fixed: Some(fixed) });
    match with_ring(|d| send_check(d, &fixed, to)).await {
        Err(e) | Ok(Err(e)) => return back(e, fixed),
        Ok(Ok(())) => {}
    }
    let sock = crate::net::Sock::Fixed(fixed.index());
    // Rule 4(b). SAFETY: a cancel SQE references no memory.
    let quiesced = OwnedOp::new(unsafe { RingOp::owned(crate::net::cancel_fd_sqe(sock), None) }).await.0;
    if matches!(quiesced, Err(Errno::ECANCELED) | Err(Errno::EPERM)) {
        return back(TransferError::Cancelled, fixed); // it did not run
    }
    let ring = match rustix::io::fcntl_dupfd_cloexec(&to.0.ring, 0) {
        Ok(dup) => crate::fd::Fd::from_owned(dup),
        Err(e) => return back(TransferError::Os(Errno(e.raw_os_error())), fixed),
    };
    let op = TransferOp::SendFd { ring_fd: ring.raw(), index: fixed.index(), key };
    // Rule 4(c). SAFETY: the SQE references no memory; the slot holds `ring` (the number it
    // names) until the completion (fd rule 1).
    let r = OwnedOp::new(unsafe { RingOp::owned(op.sqe(), None) }).holding(Some(&ring)).await.0;
    drop(ring);
    match sent(r) {
        Sent::Delivered => {
            let _ = close_fixed_shared(fixed.into_index()).await; // rule 4(d): closed whatever it returns
            Ok(())
        }
        Sent::Untold => {
            let _ = close_fixed_shared(fixed.into_index()).await;
            Err(SendError { error: TransferError::Os(Errno(libc::EOVERFLOW)), fixed: None })
        }
        Sent::Refused(error, true) => back(error, fixed),
        Sent::Refused(error, false) => {
            let _ = fixed.into_index(); // the index is empty: nothing to close
            Err(SendError { error, fixed: None })
        }
    }
}

/// Waits for a descriptor sent to this ring with `key`, at most `timeout` (transfer
/// rules 5-6): the future form of
/// [`FiberTransfer::receive_fd`](super::FiberTransfer::receive_fd).
pub fn receive(key: u32, timeout: Option<Duration>) -> Receive {
    Receive { key, shared: None, waiting: None, timer: timeout.map(timer_op) }
}

/// The future of [`receive`]. Dropped while it waits, it leaves the inbox (rule 6) and
/// abandons its timer (cancelled in its slot).
#[must_use = "futures do nothing unless polled"]
pub struct Receive {
    key: u32,
    /// The ring's shared state while the wait is queued: `Drop` leaves through it.
    shared: Option<Rc<Shared>>,
    /// Its place among the key's waiters while it waits (rule 6).
    waiting: Option<Ticket>,
    /// The timeout's `IORING_OP_TIMEOUT` (rule 6), submitted at the first poll that waits.
    timer: Option<SlotOp>,
}

/// A kept `IORING_OP_TIMEOUT` of `d`, its timespec in a buffer the slot keeps until the
/// completion.
fn timer_op(d: Duration) -> SlotOp {
    let ts = io_uring::types::Timespec::from(d.min(Duration::from_secs(i64::MAX as u64)));
    let mut v = vec![0u8; core::mem::size_of::<io_uring::types::Timespec>()];
    // SAFETY: `v` has room for one `Timespec`, written unaligned (the kernel copies it
    // with copy_from_user, which needs no alignment).
    unsafe { v.as_mut_ptr().cast::<io_uring::types::Timespec>().write_unaligned(ts) };
    let raw = RawBuf::from_vec(v);
    let e = io_uring::opcode::Timeout::new(raw.ptr() as *const io_uring::types::Timespec).build();
    // SAFETY: the SQE references only `raw`, which the slot keeps until completion.
    SlotOp::new(unsafe { RingOp::owned(e, Some(raw)) })
}

impl Future for Receive {
    type Output = Result<FixedFd, TransferError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(tcx) = keel_core::TaskCx::of(cx) else { return Poll::Ready(Err(TransferError::NotOnRing)) };
        let (key, waiting, cancelled) = (self.key, self.waiting, tcx.is_cancelled());
        let me = (!cancelled).then(|| tcx.task());
        let r = tcx.with_driver::<RingDriver, _>(|d| {
            if let Some(s) = &self.shared
                && !Rc::ptr_eq(s, &d.shared)
            {
                return Err(TransferError::WrongExecutor); // `Drop` leaves its own inbox
            }
            let got = super::inbox::look(&d.shared, key, me, waiting)?;
            if let (Look::Nothing, Some(t)) = (&got, waiting) {
                super::inbox::leave(&d.shared, t); // cancelled: an arrival handed to it goes on
            }
            Ok((got, d.shared.clone()))
        });
        match r {
            None => Poll::Ready(Err(TransferError::NotOnRing)),
            Some(Err(e)) => Poll::Ready(Err(e)),
            Some(Ok((Look::Got(index), shared))) => {
                self.waiting = None; // taken: `look` left the queue
                Poll::Ready(Ok(FixedFd::new(index, &shared)))
            }
            Some(Ok((Look::Nothing, _))) => {
                self.waiting = None;
                Poll::Ready(Err(TransferError::Cancelled))
            }
            Some(Ok((Look::Waiting(t), shared))) => {
                self.waiting = Some(t);
                self.shared = Some(shared);
                // Rule 6: the inbox was looked at first; the timer decides only if empty.
                if let Some(timer) = self.timer.as_mut()
                    && let Poll::Ready((res, _, _)) = Pin::new(timer).poll(cx)
                {
                    self.timer = None;
                    if res == -libc::ETIME {
                        super::inbox::leave(self.shared.as_ref().expect("set above"), t);
                        self.waiting = None;
                        return Poll::Ready(Err(TransferError::TimedOut));
                    }
                    // Any other end (refused): the wait goes on without a limit.
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Receive {
    fn drop(&mut self) {
        if let (Some(t), Some(shared)) = (self.waiting, &self.shared)
            && shared.is_alive()
        {
            super::inbox::leave(shared, t);
        }
    }
}

/// Cancels the index's operations, then closes it through the ring: the future form of
/// [`FiberTransfer::close_fd`](super::FiberTransfer::close_fd).
pub async fn close(fixed: FixedFd) -> Result<(), TransferError> {
    match with_ring(|d| fixed.is_of(&d.shared)).await {
        Err(e) => Err(e), // dropped: closed on its ring (rule 6)
        Ok(false) => Err(TransferError::WrongExecutor),
        Ok(true) => close_fixed_shared(fixed.into_index()).await.map_err(index_error),
    }
}

/// This ring's mailbox (transfer rule 7).
pub async fn mailbox() -> Result<Mailbox, TransferError> {
    with_ring(mailbox_of).await?.map_err(|e| TransferError::Os(Errno(e.raw_os_error().unwrap_or(libc::EIO))))
}

/// Makes a direct file of this ring a [`FixedFd`] (handed back outside a ring task).
pub async fn adopt_file(file: FixedFile) -> Result<FixedFd, FixedFile> {
    match with_ring(|d| d.shared.clone()).await {
        Ok(shared) => Ok(FixedFd::new(file.index(), &shared)),
        Err(_) => Err(file),
    }
}

/// Makes a direct socket of this ring a [`FixedFd`] (handed back outside a ring task).
pub async fn adopt_socket(socket: FixedSocket) -> Result<FixedFd, FixedSocket> {
    match with_ring(|d| d.shared.clone()).await {
        Ok(shared) => Ok(FixedFd::new(socket.index(), &shared)),
        Err(_) => Err(socket),
    }
}

/// A descriptor sent with `key` that has arrived already, without waiting: the future
/// form of [`FiberTransfer::try_receive_fd`](super::FiberTransfer::try_receive_fd).
pub async fn try_receive(key: u32) -> Result<Option<FixedFd>, TransferError> {
    with_ring(|d| {
        let got = super::inbox::look(&d.shared, key, None, None);
        got.map(|l| match l {
            Look::Got(index) => Some(FixedFd::new(index, &d.shared)),
            Look::Waiting(_) | Look::Nothing => None,
        })
    })
    .await?
}

/// Makes index `index` of this ring's table a [`FixedFd`]: the future form of
/// [`FiberTransfer::adopt_index`](super::FiberTransfer::adopt_index).
///
/// # Safety
///
/// As for `adopt_index`: the caller owns the index (nothing else closes it or holds it
/// as a handle, now or later).
pub async unsafe fn adopt_index(index: u32) -> Result<FixedFd, TransferError> {
    let shared = with_ring(|d| d.shared.clone()).await?;
    Ok(FixedFd::new(index, &shared))
}
