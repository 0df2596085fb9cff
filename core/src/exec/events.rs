//! What makes a task ready besides a wake: its timer firing and its i/o completing
//! (completion routing by token: io_status rules 3-5).

use crate::clock::Instant;
use crate::driver::{IoResult, IoToken};
use crate::exec::sched::{Sched, hdr, step};
use crate::io_status::block::IoStatus;
use crate::sync::Ordering;
use crate::task::header::{Header, SlotPtr};
use crate::task::state::{TaskEvent as E, TaskState as S};
use core::ptr::NonNull;

impl Sched {
    /// Arms the task's timer for `deadline`, keeping an earlier deadline already armed.
    pub(crate) fn arm(&self, task: NonNull<Header>, deadline: Instant) {
        let node = task.timer();
        let timer = &task.trailer().timer;
        if timer.is_armed() {
            if timer.deadline() <= deadline {
                return;
            }
            // SAFETY: armed in our heap (timer rule 1).
            unsafe { self.timers.remove(node) };
        }
        // SAFETY: the node is in a `'static` trailer and unarmed.
        unsafe { self.timers.insert(node, deadline) };
    }

    pub(crate) fn disarm(&self, task: NonNull<Header>) {
        if task.trailer().timer.is_armed() {
            // SAFETY: armed in our heap (timer rule 1).
            unsafe { self.timers.remove(task.timer()) };
        }
    }

    /// Fires expired timers, at most `max` (sched rule 4).
    pub(crate) fn fire_timers(&self, now: Instant, max: usize) {
        // A planted bug for the fuzz target `sim_program` (off in every normal build):
        // timers due within the next microsecond fire early.
        #[cfg(keel_planted = "sim_program")]
        let now = now.saturating_add(core::time::Duration::from_micros(1));
        for _ in 0..max {
            let Some(node) = self.timers.pop_expired(now) else { return };
            self.stats.timers_fired.set(self.stats.timers_fired.get() + 1);
            self.wake_local(Header::from_timer(node));
        }
    }

    /// Routes one completion (io_status rules 3-4). Inlined into the reap loop's sink: a
    /// completion is one call less (two per skip pair).
    #[inline(always)]
    pub(crate) fn complete_io(&self, token: IoToken, result: IoResult) {
        self.stats.io_completed.set(self.stats.io_completed.get() + 1);
        let mut wake = true;
        let task = if token.addr & IoToken::ORPHAN != 0 {
            // SAFETY: orphan tokens are task headers (io_status rule 4), with the whole
            // slot's provenance exposed when the token was made (provenance rule 5).
            let task = unsafe { NonNull::new_unchecked((token.addr & !IoToken::ORPHAN) as *mut Header) };
            let orphans = &task.trailer().orphans;
            orphans.set(orphans.get() - 1);
            task
        } else if token.addr & IoToken::WAKE != 0 {
            // SAFETY: wake tokens are task headers (`IoToken::wake`), `'static`, with the
            // whole slot's provenance exposed when the token was made (header provenance
            // rule 5).
            let task = unsafe { NonNull::new_unchecked((token.addr & !IoToken::WAKE) as *mut Header) };
            // Relaxed: owner-written generation. A completion for an earlier run wakes nothing.
            if hdr(task).generation.load(Ordering::Relaxed) != token.generation {
                return;
            }
            task
        } else {
            // SAFETY: status tokens name status blocks that are linked and alive (io_status
            // rule 4: a status that goes away retargets its token first).
            let status = unsafe { &*(token.addr as *const IoStatus) };
            wake = status.wakes();
            status.complete(result)
        };
        let header = hdr(task);
        let completed = &task.trailer().stats.io_completed;
        completed.set(completed.get() + 1);
        match header.state.get() {
            S::Suspended(_) if wake => self.wake_local(task),
            S::Cancelling => {
                step(header, E::IoDone);
                // SAFETY: a cancelling task is in no run list.
                unsafe { self.ready.push(task) };
            }
            S::Draining if task.io_in_flight() == 0 => {
                step(header, E::Drained);
                self.completed(task, true);
            }
            _ => {}
        }
    }
}
