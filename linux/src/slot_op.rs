//! `SlotOp`: the one future for an operation whose result the driver slot keeps for the
//! task that submitted it (slot rule 3 in `ring/slots.rs`). The owned-buffer file and
//! socket calls (`fs::OwnedOp`, `net::future`) and the buffer-select receives all await
//! it; they differ only in what they make of the raw result.
//!
//! - First poll: submits through keel-core's admission (`keel_core::try_submit`: queued
//!   by I/O priority while there is no room, within `max_io_in_flight`), or fails at once
//!   with `EBUSY` for [`SlotOp::new_nowait`].
//! - Later polls: take the result, CQE flags and buffer from the slot once completed.
//! - Cancelled task: the future asks the driver to cancel the op (once) and keeps waiting
//!   for the op's own completion, which it returns as it is: `ECANCELED` if the cancel
//!   won, the real result (bytes read, a descriptor or index the kernel made, with the
//!   buffer) if the kernel had completed it first, even with its CQE not reaped yet. A
//!   cancel never loses a completion; the task decides what to do with it. (A deadline is
//!   the kernel's cancel, not the future's: `deadline` rule 3.)
//! - Dropped in flight: the op is left to its slot (`abandon`: cancelled there, its buffer
//!   kept until the completion, whatever it yields given back, completion rule 3), through the
//!   driver's shared state (shared rule 2 in `ring/shared.rs`): the future holds an `Rc` of
//!   it, not a pointer to the driver, so it may be moved out of its task and dropped
//!   anywhere on the thread, after the executor too (then the driver has already cancelled
//!   and reaped the operation). Only a dropped future loses its result, by construction.
//! - An operation on a registered buffer (`holding_fixed`) keeps its `FixedBuf` in the
//!   future, submits only on the buffer's own ring (else `EXDEV`), and, dropped in flight,
//!   abandons the op with the buffer, which the slot releases at the completion (shared
//!   rule 2, regbuf rule 5).
//! - Polled in another executor's task than the one it was submitted in: `EXDEV` (the
//!   operation stays with its own driver and is abandoned when the future goes).
//! - Moved to another task of the same executor (or kept for a later run of its own
//!   task) and polled there: each poll that finds the op not done points its wake token
//!   at the polling task (wake-token rule 3 in the `ring` module doc), so its completion
//!   wakes whoever waits for it now. The task that submitted it was never held by it: a
//!   body that returns while its future lives elsewhere completes at once (io_status
//!   rule 5 in keel-core).

use crate::buf::RawBuf;
use crate::fd::SharedFd;
use crate::ring::shared::Shared;
use crate::ring::{RingDriver, RingOp};
use keel_core::{Errno, OpId};
use keel_core::{SubmitRefused, TaskCx};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// What a kept operation ended with: the raw CQE result (a negative errno on failure,
/// including failures to submit), its CQE flags (0 if it never completed), and the
/// operation's buffer back.
pub(crate) type SlotOpResult = (i32, u32, Option<RawBuf>);

/// The future of one operation whose result its driver slot keeps (see the module doc).
pub(crate) struct SlotOp {
    op: Option<RingOp>,
    wait: bool,
    id: Option<OpId>,
    /// The driver was asked to cancel the op: the task was cancelled (module doc).
    cancel_sent: bool,
    /// The driver's shared state while the operation is submitted (shared rule 2).
    shared: Option<Rc<Shared>>,
    /// The descriptor the operation names, handed to its slot at submission (fd rule 1).
    fd: Option<SharedFd>,
    /// The operation is the `IORING_OP_CLOSE` of `fd` (slot rule 4).
    closes: bool,
    /// The registered buffer the operation uses: kept here, given to the slot if the
    /// future is dropped in flight (shared rule 2), taken back by the caller at the end.
    fixed: Option<crate::regbuf::FixedBuf>,
}

impl SlotOp {
    /// A kept operation that waits for room to submit.
    pub(crate) fn new(op: RingOp) -> Self {
        Self::with_wait(op, true)
    }

    /// A kept operation that fails with `EBUSY` instead of waiting when there is no room
    /// (every slot taken, the SQ full, or the in-flight limit reached).
    pub(crate) fn new_nowait(op: RingOp) -> Self {
        Self::with_wait(op, false)
    }

    fn with_wait(op: RingOp, wait: bool) -> Self {
        SlotOp { op: Some(op), wait, id: None, cancel_sent: false, shared: None, fd: None, closes: false, fixed: None }
    }

    /// Holds `fd` (if any) open until the operation's last CQE is reaped (fd rule 1): the
    /// future keeps it until submission, the slot from then on.
    pub(crate) fn holding(mut self, fd: Option<&SharedFd>) -> Self {
        self.closes = self.op.as_ref().is_some_and(|op| op.opcode() == io_uring::opcode::Close::CODE);
        self.fd = fd.cloned();
        self
    }

    /// The operation uses registered buffer `buf` (regbuf rules 1 and 5): submitted only on the
    /// buffer's own ring (else `EXDEV`), and never released while the kernel may use it.
    pub(crate) fn holding_fixed(mut self, buf: crate::regbuf::FixedBuf) -> Self {
        self.fixed = Some(buf);
        self
    }

    /// The registered buffer back, once the future has returned.
    pub(crate) fn take_fixed(&mut self) -> Option<crate::regbuf::FixedBuf> {
        debug_assert!(self.id.is_none(), "keel bug: a fixed buffer taken back while its op is in flight");
        self.fixed.take()
    }

    fn poll_taken(&mut self, tcx: Option<TaskCx<'_>>, id: OpId) -> Poll<SlotOpResult> {
        // Outside any task (rt rule 2 in keel-core): `EPERM`.
        let Some(tcx) = tcx else { return Poll::Ready((-Errno::EPERM.0, 0, None)) };
        let cancel = !self.cancel_sent && tcx.is_cancelled();
        let mine = self.shared.as_ref().map_or(core::ptr::null(), Rc::as_ptr);
        let r = tcx.with_driver::<RingDriver, _>(|d| {
            let d = crate::ring::lent_mut(d);
            if !core::ptr::eq(Rc::as_ptr(&d.shared), mine) {
                return Err(()); // another executor's driver: `id` means nothing there
            }
            let done = d.take_full(id);
            if done.is_none() {
                if cancel {
                    keel_core::Driver::cancel(d, id);
                }
                // Wake-token rule 3: the task polling it now is the one to wake (it may
                // have been moved out of the task that submitted it).
                d.rewake(id, tcx.task());
            }
            Ok(done)
        });
        match r {
            Some(Err(())) => Poll::Ready((-crate::errno::EXDEV.0, 0, None)),
            Some(Ok(Some(done))) => {
                self.id = None;
                self.shared = None;
                Poll::Ready(done)
            }
            Some(Ok(None)) => {
                // Cancelled or not, the op's own completion ends the wait (module doc).
                self.cancel_sent |= cancel;
                tcx.waiting_for_io();
                Poll::Pending
            }
            // Another driver type, or the driver is lent.
            None => Poll::Ready((-Errno::EINVAL.0, 0, None)),
        }
    }
}

impl Unpin for SlotOp {}

impl Future for SlotOp {
    type Output = SlotOpResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SlotOpResult> {
        // The task context, resolved once for this poll.
        let tcx = TaskCx::of(cx);
        if let Some(id) = self.id {
            return self.poll_taken(tcx, id);
        }
        assert!(self.op.is_some(), "SlotOp polled after completion");
        if let Some(buf) = &self.fixed {
            // Regbuf rule 1: its index means another buffer on another ring.
            let mine = tcx.and_then(|tcx| tcx.with_driver::<RingDriver, _>(|d| buf.is_of(&d.shared)));
            if mine == Some(false) {
                return Poll::Ready((-crate::errno::EXDEV.0, 0, None));
            }
        }
        // From the future's state straight into the SQ (one copy).
        let wait = self.wait;
        let Some(tcx) = tcx else {
            // Outside any task (rt rule 2 in keel-core).
            return Poll::Ready((-Errno::EPERM.0, 0, self.op.take().and_then(|op| op.buf)));
        };
        // Deadline scopes (scope rule 2): one thread-local load while none is open.
        if let Some(at) = crate::deadline::scope::deadline_of(|| keel_core::rt::current_task(cx)) {
            self.op = self.op.take().map(|op| op.scoped(at));
        }
        match tcx.try_submit_from::<RingDriver>(&mut self.op, wait) {
            Ok(id) => {
                self.id = Some(id);
                let (fd, closes) = (self.fd.take(), self.closes);
                self.shared = tcx.with_driver::<RingDriver, _>(|d| {
                    let d = crate::ring::lent_mut(d);
                    if let Some(fd) = fd {
                        d.hold_fd(id, fd, closes); // same poll as the submission: no enter between
                    }
                    d.shared.clone()
                });
                tcx.waiting_for_io();
                Poll::Pending
            }
            Err(SubmitRefused::Wait) => Poll::Pending,
            Err(SubmitRefused::Failed(e)) => Poll::Ready((-e.0, 0, self.op.take().and_then(|op| op.buf))),
        }
    }
}

impl Drop for SlotOp {
    fn drop(&mut self) {
        if let (Some(id), Some(shared)) = (self.id, &self.shared) {
            match self.fixed.take() {
                Some(buf) => shared.abandon_holding(id, buf), // released at the completion
                None => shared.abandon(id),                   // shared rule 2; a no-op once the driver is gone
            }
        }
    }
}
