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
    pub(crate) fn arm(&self, h: NonNull<Header>, deadline: Instant) {
        let node = h.timer();
        let tn = &h.trailer().timer;
        if tn.is_armed() {
            if tn.deadline() <= deadline {
                return;
            }
            // SAFETY: armed in our heap (timer rule 1).
            unsafe { self.timers.remove(node) };
        }
        // SAFETY: the node is in a `'static` trailer and unarmed.
        unsafe { self.timers.insert(node, deadline) };
    }

    pub(crate) fn disarm(&self, h: NonNull<Header>) {
        if h.trailer().timer.is_armed() {
            // SAFETY: armed in our heap (timer rule 1).
            unsafe { self.timers.remove(h.timer()) };
        }
    }

    /// Fires expired timers, at most `max` (sched rule 4).
    pub(crate) fn fire_timers(&self, now: Instant, max: usize) {
        for _ in 0..max {
            let Some(node) = self.timers.pop_expired(now) else { return };
            self.stats.timers_fired.set(self.stats.timers_fired.get() + 1);
            self.wake_local(Header::from_timer(node));
        }
    }

    /// Routes one completion (io_status rules 3-4).
    pub(crate) fn complete_io(&self, token: IoToken, result: IoResult) {
        self.stats.io_completed.set(self.stats.io_completed.get() + 1);
        let mut wake = true;
        let h = if token.addr & IoToken::ORPHAN != 0 {
            // SAFETY: orphan tokens are task headers (io_status rule 4), with the whole
            // slot's provenance exposed when the token was made (header provenance rule 5).
            let h = unsafe { NonNull::new_unchecked((token.addr & !IoToken::ORPHAN) as *mut Header) };
            let o = &h.trailer().orphans;
            o.set(o.get() - 1);
            h
        } else if token.addr & IoToken::WAKE != 0 {
            // SAFETY: wake tokens are task headers (`IoToken::wake`), `'static`, with the
            // whole slot's provenance exposed when the token was made (header provenance
            // rule 5).
            let h = unsafe { NonNull::new_unchecked((token.addr & !IoToken::WAKE) as *mut Header) };
            // Relaxed: owner-written generation. A completion for an earlier run wakes nothing.
            if hdr(h).generation.load(Ordering::Relaxed) != token.generation {
                return;
            }
            h
        } else {
            // SAFETY: status tokens name status blocks that are linked and alive (io_status
            // rule 4: a status that goes away retargets its token first).
            let st = unsafe { &*(token.addr as *const IoStatus) };
            wake = st.wakes();
            st.complete(result)
        };
        let t = hdr(h);
        let s = &h.trailer().stats.io_completed;
        s.set(s.get() + 1);
        match t.state.get() {
            S::Suspended(_) if wake => self.wake_local(h),
            S::Cancelling => {
                step(t, E::IoDone);
                // SAFETY: a cancelling task is in no run list.
                unsafe { self.ready.push(h) };
            }
            S::Draining if h.io_in_flight() == 0 => {
                step(t, E::Drained);
                self.completed(h, true);
            }
            _ => {}
        }
    }
}
