//! `Kept`: the one future for an operation whose result the driver slot keeps for the
//! task that submitted it (slot rule 3 in `ring/slots.rs`). The owned-buffer file and
//! socket calls (`fs::OwnedOp`, `net::future`) and the buffer-select receives all await
//! it; they differ only in what they make of the raw result.
//!
//! - First poll: submits through keel-core's admission (`keel_core::try_submit`: queued
//!   by I/O priority while there is no room, within `max_io_in_flight`), or fails at once
//!   with `EBUSY` for [`Kept::new_nowait`].
//! - Later polls: take the result, CQE flags and buffer from the slot once completed.
//! - Cancelled task: the future asks the driver to cancel the op (once) and keeps waiting
//!   for the op's own completion, which it returns as it is: `ECANCELED` if the cancel
//!   won, the real result (bytes read, a descriptor or index the kernel made, with the
//!   buffer) if the kernel had completed it first, even with its CQE not reaped yet. A
//!   cancel never loses a completion; the task decides what to do with it.
//! - Dropped in flight: the op is left to its slot (`abandon`: cancelled there, its buffer
//!   kept until the completion, whatever it yields given back, driver rule 3). Only a
//!   dropped future loses its result, by construction.
#![allow(unsafe_code)] // Drop reaches the driver through the pointer the executor handed out

use crate::buf::RawBuf;
use crate::ring::{RingDriver, RingOp};
use keel_core::SubmitRefused;
use keel_core::{Errno, OpId};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What a kept operation ended with: the raw CQE result (a negative errno on failure,
/// including failures to submit), its CQE flags (0 if it never completed), and the
/// operation's buffer back.
pub(crate) type KeptResult = (i32, u32, Option<RawBuf>);

/// A future for one driver-kept operation (see the module doc).
pub(crate) struct Kept {
    op: Option<RingOp>,
    wait: bool,
    id: Option<OpId>,
    /// The task was cancelled and the driver asked to cancel the op (module doc).
    cancel_sent: bool,
    driver: *mut RingDriver,
}

impl Kept {
    /// A kept operation that waits for room to submit.
    pub(crate) fn new(op: RingOp) -> Self {
        Kept { op: Some(op), wait: true, id: None, cancel_sent: false, driver: core::ptr::null_mut() }
    }

    /// A kept operation that fails with `EBUSY` instead of waiting when there is no room
    /// (every slot taken, the SQ full, or the in-flight limit reached).
    pub(crate) fn new_nowait(op: RingOp) -> Self {
        Kept { op: Some(op), wait: false, id: None, cancel_sent: false, driver: core::ptr::null_mut() }
    }

    fn poll_taken(&mut self, cx: &mut Context<'_>, id: OpId) -> Poll<KeptResult> {
        let cancel = !self.cancel_sent && keel_core::rt::is_cancelled(cx);
        let r = keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| {
            let done = d.take_full(id);
            if done.is_none() && cancel {
                keel_core::Driver::cancel(d, id);
            }
            done
        });
        match r {
            Some(Some(done)) => {
                self.id = None;
                Poll::Ready(done)
            }
            Some(None) => {
                // Cancelled or not, the op's own completion ends the wait (module doc).
                self.cancel_sent |= cancel;
                keel_core::io_status::waiting_for_io(cx);
                Poll::Pending
            }
            None => Poll::Ready((-Errno::EINVAL.0, 0, None)),
        }
    }
}

impl Unpin for Kept {}

impl Future for Kept {
    type Output = KeptResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<KeptResult> {
        if let Some(id) = self.id {
            return self.poll_taken(cx, id);
        }
        assert!(self.op.is_some(), "Kept polled after completion");
        // From the future's state straight into the SQ (one copy).
        let wait = self.wait;
        match keel_core::try_submit_from::<RingDriver>(cx, &mut self.op, wait) {
            Ok(id) => {
                self.id = Some(id);
                self.driver = keel_core::io_status::driver_ptr::<RingDriver>(cx).unwrap_or(core::ptr::null_mut());
                keel_core::io_status::waiting_for_io(cx);
                Poll::Pending
            }
            Err(SubmitRefused::Wait) => Poll::Pending,
            Err(SubmitRefused::Failed(e)) => Poll::Ready((-e.0, 0, self.op.take().and_then(|op| op.buf))),
        }
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let (Some(id), false) = (self.id, self.driver.is_null()) {
            // SAFETY: the driver outlives every task body on its executor, and a body is
            // dropped on the executor's thread with no other borrow of the driver live
            // (keel-core sched rule 3).
            unsafe { (*self.driver).abandon(id) };
        }
    }
}
