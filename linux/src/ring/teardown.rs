//! The driver's `Drop` (shared rule 4): never frees memory the kernel may still write.
//! Invariants:
//! - Every operation still in flight is cancelled (`IORING_ASYNC_CANCEL_ANY`) and reaped,
//!   waiting at most [`DROP_WAIT`]; completions go nowhere, what they yield is given
//!   back (completion rule 3).
//! - If the kernel has not finished in time, the slots, the shared state and the eventfd
//!   buffer are leaked, never freed.
//! - The shared state is marked dead last: later drops of values do nothing.
#![allow(unsafe_code)] // pushing the cancel-all SQE is unsafe in the io-uring crate

use super::driver::RingDriver;
use super::slots::{CANCEL_TAG, Slots};
use crate::clock::monotonic_now;
use crate::notice::notice;
use io_uring::{opcode, types};
use keel_core::driver::IoToken;
use keel_core::{IoResult, OpId};
use std::rc::Rc;

/// How long a dropped driver waits for the kernel to finish the operations it cancels
/// (`Drop`); what has not completed by then is leaked, never freed.
pub const DROP_WAIT: core::time::Duration = core::time::Duration::from_secs(2);

impl RingDriver {
    /// Cancels every operation in flight (`IORING_ASYNC_CANCEL_ANY`) and reaps until none
    /// is left or `DROP_WAIT` has passed; whether none is left. Completions go nowhere
    /// (the executor is gone or going); what they yield is given back (completion rule 3).
    fn quiesce(&mut self) -> bool {
        self.closing = true;
        self.inject = None;
        let mut nothing = |_: IoToken, _: IoResult| {};
        self.take_abandoned();
        let pending = |d: &Self| d.ops_in_flight() + d.eventfd_armed as usize;
        if pending(self) == 0 && self.ring.sq_len() == 0 {
            return true;
        }
        // Queued SQEs go in first (and end an open link chain), then the cancel of all.
        self.submit_queued();
        let all = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(CANCEL_TAG);
        // SAFETY: a cancel SQE references no memory.
        let _ = unsafe { self.ring.push(&all) };
        let deadline = monotonic_now().saturating_add(DROP_WAIT);
        loop {
            self.drain(usize::MAX, &mut nothing);
            if pending(self) == 0 {
                return true;
            }
            if monotonic_now() >= deadline {
                return false;
            }
            let _ = self.enter(1, Some(deadline));
        }
    }
}

impl Drop for RingDriver {
    /// Never frees memory the kernel may still write (shared rule 4): cancels every
    /// operation still in flight (values moved out of their tasks, a driver dropped with no
    /// executor, a fiber stack the executor leaked) and waits for their completions, at most
    /// `DROP_WAIT`; gives back what results nobody took hold (descriptors closed, buffers
    /// returned and freed); then the ring, its buffers and the provided-buffer ring go.
    /// If the kernel has not finished in time, the slots (with their buffers and held
    /// descriptors), the registered and provided buffers and the eventfd buffer are
    /// leaked, and one line says how many operations were left.
    fn drop(&mut self) {
        let quiet = self.quiesce();
        if quiet {
            // Results nobody took (a kept op's future moved out of its task, a multishot's
            // queue): give back what they hold (completion rule 3).
            for ud in self.slots.in_use() {
                self.abandon(OpId(ud));
            }
            self.spill.clear();
        } else {
            notice!(
                warn,
                "the ring driver was dropped with {} operations the kernel did not finish within {:?}: their memory is leaked",
                self.ops_in_flight(),
                DROP_WAIT
            );
            core::mem::forget(core::mem::replace(&mut self.slots, Slots::new(0)));
            core::mem::forget(Rc::clone(&self.shared));
            core::mem::forget(core::mem::replace(&mut self.eventfd_buf, Box::new(0)));
        }
        // Transfer rule 7: a mailbox's duplicate of the ring's descriptor keeps the kernel's
        // ring alive after this driver; its fixed-file table goes now, not with the last
        // duplicate, so the files in it are closed when the driver goes, as without one.
        if quiet
            && self.shared.inbox().is_some_and(|i| i.has_mailbox())
            && let Some(ring) = self.ring.uring()
        {
            let _ = ring.submitter().unregister_files();
        }
        // Shared rule 4: later drops of values do nothing.
        self.shared.set_dead();
    }
}
