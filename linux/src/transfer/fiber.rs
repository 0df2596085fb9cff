//! Descriptor transfer for fiber tasks ([`FiberTransfer`]): blocking-style calls (the
//! `transfer` module's rules). Each operation pins its status block on the fiber's stack
//! and returns only after the completion, so the registration's index buffer and the
//! mailbox the message names outlive the kernel's use of them.
#![allow(unsafe_code)] // SQEs pointing at the stack; wrapping an installed descriptor

use super::inbox::{Look, mailbox_of};
use super::{FixedFd, INSTALL, Mailbox, SEND_FD, SendError, TransferError, TransferOp};
use super::{index_error, register_error, send_error, table_of};
use crate::fs::{FiberFs, FixedFile, close_fixed_fiber, run_to_end};
use crate::net::FixedSocket;
use crate::ring::{RingDriver, RingOp};
use core::time::Duration;
use io_uring::{opcode, types};
use keel_core::{Fiber, IoStatus};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::pin::pin;

/// Blocking-style descriptor transfer for fiber tasks (the `transfer` module doc).
pub trait FiberTransfer {
    /// Puts the open file of `fd` at a free index of this ring's fixed-file table (rule 1);
    /// `fd` stays the caller's and may be closed at once.
    fn register_fd(&mut self, fd: BorrowedFd<'_>) -> Result<FixedFd, TransferError>;
    /// A new process descriptor for the file at `fixed`'s index, close-on-exec if asked
    /// (rule 2); the index stays.
    fn install_fd(&mut self, fixed: &FixedFd, cloexec: bool) -> Result<OwnedFd, TransferError>;
    /// Sends `fixed` to the ring of `to`, announced by `key` (rule 4): its operations here
    /// are cancelled first, and its index here is closed once the target has it.
    fn send_fd(&mut self, fixed: FixedFd, to: &Mailbox, key: u32) -> Result<(), SendError>;
    /// Waits for a descriptor sent to this ring with `key` (rules 5-6), at most `timeout`
    /// (`None`: no limit; then `TimedOut`); several tasks may wait for one key, served
    /// oldest first. A cancelled wait returns `Cancelled` and leaves a later arrival for
    /// the next receive.
    fn receive_fd(&mut self, key: u32, timeout: Option<Duration>) -> Result<FixedFd, TransferError>;
    /// A descriptor sent with `key` that has arrived already, without waiting (one the
    /// executor has reaped: at its reaps while operations or receives are in flight, and
    /// when it parks).
    fn try_receive_fd(&mut self, key: u32) -> Result<Option<FixedFd>, TransferError>;
    /// Cancels the index's operations, then closes it through the ring (as
    /// `FiberFs::close_direct`). A handle of another ring is closed on its own ring when
    /// it drops here (rule 6) and this returns `WrongExecutor`.
    fn close_fd(&mut self, fixed: FixedFd) -> Result<(), TransferError>;
    /// This ring's mailbox (rule 7).
    fn mailbox(&mut self) -> Result<Mailbox, TransferError>;
    /// Makes a direct file of this ring a [`FixedFd`] (handed back if the executor has no ring).
    fn adopt_file(&mut self, file: FixedFile) -> Result<FixedFd, FixedFile>;
    /// Makes a direct socket of this ring a [`FixedFd`] (handed back if the executor has no ring).
    fn adopt_socket(&mut self, socket: FixedSocket) -> Result<FixedFd, FixedSocket>;
    /// Makes index `index` of this ring's table a [`FixedFd`] (for callers that keep
    /// indices as integers, such as the C API); `NotOnRing` if the executor has no ring.
    ///
    /// # Safety
    ///
    /// The caller owns the index: nothing else closes it or holds it as a handle, now or
    /// later (the `FixedFd` closes it when dropped, and the number could by then name
    /// another file of the table), as with `std::os::fd::FromRawFd`.
    unsafe fn adopt_index(&mut self, index: u32) -> Result<FixedFd, TransferError>;
}

/// Rule 4(a): the checks before a send, in order.
pub(crate) fn send_check(d: &RingDriver, fixed: &FixedFd, to: &Mailbox) -> Result<(), TransferError> {
    if !fixed.is_of(&d.shared) {
        return Err(TransferError::WrongExecutor);
    }
    let mut inbox = d.shared.inbox().ok_or(TransferError::NotOnRing)?;
    if to.0.id == inbox.id {
        return Err(TransferError::SameExecutor);
    }
    if !inbox.supports(d, false) {
        return Err(SEND_FD);
    }
    if !to.is_alive() {
        return Err(TransferError::TargetGone);
    }
    Ok(())
}

/// Rule 2's checks before an install.
pub(crate) fn install_check(d: &RingDriver, fixed: &FixedFd) -> Result<(), TransferError> {
    if !fixed.is_of(&d.shared) {
        return Err(TransferError::WrongExecutor);
    }
    let mut inbox = d.shared.inbox().ok_or(TransferError::NotOnRing)?;
    if !inbox.supports(d, true) {
        return Err(INSTALL);
    }
    Ok(())
}

/// What a send's message result means (rule 4(d)): `Ok` (delivered: close ours), or the
/// error with the handle if it is still the sender's.
pub(crate) enum Sent {
    Delivered,
    /// Delivered, the target not told (its CQ overflowed): close ours, report it.
    Untold,
    Refused(TransferError, bool),
}

pub(crate) fn sent(r: Result<u32, keel_core::Errno>) -> Sent {
    match r {
        Ok(_) => Sent::Delivered,
        Err(e) if e.0 == libc::EOVERFLOW => Sent::Untold,
        Err(e) => {
            let err = send_error(e);
            Sent::Refused(err, err != TransferError::BadSlot)
        }
    }
}

impl FiberTransfer for Fiber {
    fn register_fd(&mut self, fd: BorrowedFd<'_>) -> Result<FixedFd, TransferError> {
        let shared = self.with_driver::<RingDriver, _>(|d| table_of(d)).ok_or(TransferError::NotOnRing)??;
        let mut out: i32 = fd.as_raw_fd();
        let p = &raw mut out;
        // SAFETY: `out` lives on this frame until `run_op` returns, after the completion;
        // `fd` is borrowed (open) for the whole call.
        let r = self.run_op(unsafe { RingOp::from_entry(TransferOp::Register { fd: fd.as_raw_fd(), out: p }.sqe()) });
        match r {
            // SAFETY: the kernel wrote the index there before posting the completion.
            Ok(1) => Ok(FixedFd::new(unsafe { p.read() } as u32, &shared)),
            Ok(_) => Err(TransferError::BadDescriptor),
            Err(e) => Err(register_error(e)),
        }
    }

    fn install_fd(&mut self, fixed: &FixedFd, cloexec: bool) -> Result<OwnedFd, TransferError> {
        self.with_driver::<RingDriver, _>(|d| install_check(d, fixed)).ok_or(TransferError::NotOnRing)??;
        // SAFETY: the SQE references no memory.
        let r = self.run_op(unsafe { RingOp::from_entry(TransferOp::Install { index: fixed.index(), cloexec }.sqe()) });
        match r {
            // SAFETY: the kernel made this descriptor for this call; nothing else knows it.
            Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
            Err(e) => Err(index_error(e)),
        }
    }

    fn send_fd(&mut self, fixed: FixedFd, to: &Mailbox, key: u32) -> Result<(), SendError> {
        let back = |error, fixed| Err(SendError { error, fixed: Some(fixed) });
        match self.with_driver::<RingDriver, _>(|d| send_check(d, &fixed, to)) {
            None => return back(TransferError::NotOnRing, fixed),
            Some(Err(e)) => return back(e, fixed),
            Some(Ok(())) => {}
        }
        let sock = crate::net::Sock::Fixed(fixed.index());
        // Rule 4(b). SAFETY: a cancel SQE references no memory.
        if run_to_end(self, unsafe { RingOp::from_entry(crate::net::cancel_fd_sqe(sock)) }).is_none() {
            return back(TransferError::Cancelled, fixed);
        }
        let op = TransferOp::SendFd { ring_fd: to.0.ring.as_raw_fd(), index: fixed.index(), key };
        // Rule 4(c). SAFETY: the SQE references no memory; `to` (and so the ring's
        // duplicate it names) is borrowed until `run_to_end` returns, after the completion.
        let Some(r) = run_to_end(self, unsafe { RingOp::from_entry(op.sqe()) }) else {
            return back(TransferError::Cancelled, fixed);
        };
        match sent(r) {
            Sent::Delivered => {
                let _ = close_fixed_fiber(self, fixed.into_index()); // rule 4(d): closed whatever it returns
                Ok(())
            }
            Sent::Untold => {
                let _ = close_fixed_fiber(self, fixed.into_index());
                Err(SendError { error: TransferError::Os(keel_core::Errno(libc::EOVERFLOW)), fixed: None })
            }
            Sent::Refused(error, true) => back(error, fixed),
            Sent::Refused(error, false) => {
                let _ = fixed.into_index(); // the index is empty: nothing to close
                Err(SendError { error, fixed: None })
            }
        }
    }

    #[inline(always)] // the fiber's suspend must not straddle an out-of-line frame (arch doc)
    fn receive_fd(&mut self, key: u32, timeout: Option<Duration>) -> Result<FixedFd, TransferError> {
        let me = self.task();
        let ts = timeout.map(|t| types::Timespec::from(t.min(Duration::from_secs(i64::MAX as u64))));
        let timer = pin!(IoStatus::new());
        let (mut waiting, mut armed) = (None, false);
        let out = loop {
            let r = self.with_driver::<RingDriver, _>(|d| {
                let got = super::inbox::look(&d.shared, key, Some(me), waiting);
                got.map(|l| match l {
                    Look::Got(index) => Ok(FixedFd::new(index, &d.shared)),
                    Look::Waiting(t) => Err(Some(t)),
                    Look::Nothing => Err(None), // only for a look without a task: not this one
                })
            });
            match r {
                None => break Err(TransferError::NotOnRing),
                Some(Err(e)) => break Err(e),
                Some(Ok(Ok(fixed))) => {
                    waiting = None; // taken: `look` left the queue
                    break Ok(fixed);
                }
                Some(Ok(Err(Some(t)))) => waiting = Some(t),
                Some(Ok(Err(None))) => break Err(TransferError::NotOnRing), // never queued: do not wait
            }
            if let Some(ts) = &ts {
                if !armed {
                    // SAFETY: `ts` and `timer` live on this frame, which waits the timer
                    // out below before it returns.
                    let op = unsafe { RingOp::from_entry(opcode::Timeout::new(ts).build()) };
                    if self.initiate::<RingDriver>(timer.as_ref(), op).is_err() {
                        break Err(TransferError::Cancelled); // a cancelled task starts nothing
                    }
                    armed = true;
                } else if !timer.is_in_flight() {
                    break Err(TransferError::TimedOut); // the inbox was looked at first
                }
            }
            if self.wait().is_err() {
                break Err(TransferError::Cancelled);
            }
        };
        if let Some(t) = waiting {
            // Rule 6: leave; an arrival handed to it goes to the next receive.
            self.with_driver::<RingDriver, _>(|d| super::inbox::leave(&d.shared, t));
        }
        if armed && timer.is_in_flight() {
            self.cancel_io(timer.as_ref());
            while timer.is_in_flight() {
                self.wait_io();
            }
        }
        out
    }

    fn try_receive_fd(&mut self, key: u32) -> Result<Option<FixedFd>, TransferError> {
        self.with_driver::<RingDriver, _>(|d| {
            let got = super::inbox::look(&d.shared, key, None, None);
            got.map(|l| match l {
                Look::Got(index) => Some(FixedFd::new(index, &d.shared)),
                Look::Waiting(_) | Look::Nothing => None,
            })
        })
        .ok_or(TransferError::NotOnRing)?
    }

    fn close_fd(&mut self, fixed: FixedFd) -> Result<(), TransferError> {
        match self.with_driver::<RingDriver, _>(|d| fixed.is_of(&d.shared)) {
            None => Err(TransferError::NotOnRing), // dropped: closed on its ring (rule 6)
            Some(false) => Err(TransferError::WrongExecutor),
            Some(true) => close_fixed_fiber(self, fixed.into_index()).map_err(index_error),
        }
    }

    fn mailbox(&mut self) -> Result<Mailbox, TransferError> {
        self.with_driver::<RingDriver, _>(|d| mailbox_of(crate::ring::lent_mut(d)))
            .ok_or(TransferError::NotOnRing)?
            .map_err(super::mailbox_error)
    }

    fn adopt_file(&mut self, file: FixedFile) -> Result<FixedFd, FixedFile> {
        match self.with_driver::<RingDriver, _>(|d| d.shared.clone()) {
            Some(shared) => Ok(FixedFd::new(file.index(), &shared)),
            None => Err(file),
        }
    }

    unsafe fn adopt_index(&mut self, index: u32) -> Result<FixedFd, TransferError> {
        let shared = self.with_driver::<RingDriver, _>(|d| d.shared.clone()).ok_or(TransferError::NotOnRing)?;
        Ok(FixedFd::new(index, &shared))
    }

    fn adopt_socket(&mut self, socket: FixedSocket) -> Result<FixedFd, FixedSocket> {
        match self.with_driver::<RingDriver, _>(|d| d.shared.clone()) {
            Some(shared) => Ok(FixedFd::new(socket.index(), &shared)),
            None => Err(socket),
        }
    }
}
