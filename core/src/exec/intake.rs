//! What other threads hand the executor, taken on its own thread: wakes and attaches
//! from the inbox (wake rule 5, remote rules 2 and 4), and tasks from a dispatcher it
//! serves (dispatch rules 2 and 4).

use crate::exec::sched::{Sched, hdr, step};
use crate::exec::work_source::WorkSource;
use crate::mailbox::inbox::Pop;
use crate::sync::Ordering;
use crate::task::header::{Header, flag};
use crate::task::state::{TaskEvent as E, TaskState as S};
use core::ptr::NonNull;

impl Sched {
    /// Takes at most `max` wakes off the inbox (wake rule 5, sched rule 4).
    #[inline(always)]
    pub(crate) fn drain_inbox(&self, max: usize) {
        if self.mailbox.inbox.looks_empty() {
            return;
        }
        for _ in 0..max {
            let Pop::Item(node) = self.mailbox.inbox.pop() else { return };
            // SAFETY: only task headers' inbox nodes are pushed (wake rule 3), each made by
            // `SlotPtr::inbox_node` (provenance rule 3).
            let task = unsafe { Header::from_inbox(node) };
            let header = hdr(task);
            self.stats.inbox_taken.set(self.stats.inbox_taken.get() + 1);
            if header.notify.attach_pending() {
                // Remote rule 2: a foreign attach, whole now (our pop acquired it): we are
                // its owner from here, before `take` opens it to wakers (which load
                // `owner` after their CAS on the word acquires `take`'s Release).
                // Relaxed: ordered before wakers by `take`; our own thread reads it after.
                header.owner.store(self.owner_id(), Ordering::Relaxed);
            }
            let (woken, attach, join) = header.notify.take();
            if attach {
                self.finish_remote_attach(task);
            } else if woken == header.generation.load(Ordering::Relaxed) {
                // Relaxed above: owner-written generation.
                self.wake_local(task);
            }
            if join {
                // Wake rule 8.
                self.joins_announced(task);
            }
            if header.has_flag(flag::RELEASE_PENDING) && header.state.get() == S::Completed {
                header.clear_flag(flag::RELEASE_PENDING);
                self.release_completed(task);
            }
        }
    }

    /// Dispatch rule 2: with no work of our own, take the highest-priority dispatched task.
    /// Inlined up to the test for a dispatcher (the run loop's idle pass without one).
    #[inline(always)]
    pub(crate) fn take_dispatched(&self) -> bool {
        match self.dispatcher.get() {
            Some((dispatcher, _)) => self.take_dispatched_from(dispatcher),
            None => false,
        }
    }

    /// [`take_dispatched`](Self::take_dispatched) for an executor that serves a dispatcher.
    #[inline(never)]
    fn take_dispatched_from(&self, dispatcher: &'static dyn WorkSource) -> bool {
        let Some(task) = dispatcher.pop() else { return false };
        if !dispatcher.claim(task, self.owner_id()) {
            // Unreachable while dispatch rule 1's tag holds: a header is on a level stack
            // only from its submit's push (owner = the sentinel, dispatch rule 2) to the one
            // pop that takes it, and only that popper's claim changes the owner; pops are
            // linearised by the tagged CAS. So a failed claim means the stack handed
            // this task out twice (an ABA past the tag). The other taker owns it: pushing
            // it back would run it twice, so report it (debug: panic) and take nothing.
            dispatcher.note_double_take();
            debug_assert!(false, "keel bug: a dispatched task was taken twice (ABA past the tag, dispatch rule 1)");
            return false;
        }
        // The submitter's writes are visible (claim's Acquire); the notify word still holds
        // QUEUED from the task's release: open it to wakes now that we own it.
        let join = hdr(task).notify.open();
        self.finish_remote_attach(task);
        if join {
            // Wake rule 8: joins that announced themselves while it waited in the dispatcher.
            self.joins_announced(task);
        }
        true
    }

    /// Park rule 2 with dispatch rule 4: a worker counts itself idle with its dispatcher,
    /// then announces PARKED (fence) and re-checks the dispatcher (`dispatcher_recheck`).
    /// The caller calls `running_again` when it runs again, whatever it found.
    #[inline]
    pub(crate) fn announce_and_recheck(&self) -> bool {
        #[cfg(keel_loom)]
        return self.announce_and_recheck_with::<crate::sync::Strong>();
        #[cfg(not(keel_loom))]
        self.announce_and_recheck_with()
    }

    /// `announce_and_recheck`, with the idle count a loom model may take after the
    /// re-check (`sync::Weaken::IDLE_BEFORE_RECHECK`).
    #[inline(always)]
    pub(crate) fn announce_and_recheck_with<#[cfg(keel_loom)] W: crate::sync::Weaken>(&self) -> bool {
        #[cfg(not(keel_loom))]
        use crate::sync::Strong as W;
        let dispatcher = self.dispatcher.get();
        if W::IDLE_BEFORE_RECHECK
            && let Some((dispatcher, _)) = dispatcher
        {
            dispatcher.idle_enter();
        }
        self.mailbox.park.announce();
        let found = self.dispatcher_recheck();
        if !W::IDLE_BEFORE_RECHECK
            && let Some((dispatcher, _)) = dispatcher
        {
            dispatcher.idle_enter();
        }
        found
    }

    /// The executor runs again after `announce_and_recheck` (parked or not): RUNNING,
    /// and out of its dispatcher's idle count (dispatch rule 4).
    #[inline]
    pub(crate) fn running_again(&self) {
        self.mailbox.park.running();
        if let Some((dispatcher, _)) = self.dispatcher.get() {
            dispatcher.idle_leave();
        }
    }

    /// Dispatch rule 4, the worker's re-check after its announce (park rule 2): whether
    /// the dispatcher has something for us: a waiting task, or a quit token we could take
    /// now (dispatch rule 5: only an idle worker takes one; a worker with tasks of its
    /// own parks until they wake it, rather than passing again and again).
    pub(crate) fn dispatcher_recheck(&self) -> bool {
        let idle = self.attached.get() == 0;
        self.dispatcher
            .get()
            .is_some_and(|(dispatcher, _)| dispatcher.has_work() || (idle && dispatcher.quit_pending()))
    }

    /// Remote rule 2, the owner's half: the task a foreign thread claimed and placed a body
    /// in is now ours: own it, attach it, queue it.
    pub(super) fn finish_remote_attach(&self, task: NonNull<Header>) {
        let header = hdr(task);
        self.reset_counts(task);
        if self.times.on.get() {
            self.reset_times(task);
        }
        // SAFETY: a claimed task was unowned, so it is in no executor's owned list.
        unsafe { self.owned.push_back(task) };
        step(header, E::Attach);
        self.attached.set(self.attached.get() + 1);
        // SAFETY: an attached, not-started task is in no run list.
        unsafe { self.ready.push(task) };
    }

    /// Remote rule 4: give up a completed task attached from another thread.
    pub(super) fn release_completed(&self, task: NonNull<Header>) {
        let header = hdr(task);
        // Relaxed: owner-written.
        if header.notify.close(header.generation.load(Ordering::Relaxed)) {
            step(header, E::Release);
            // SAFETY: owned tasks are in `owned`.
            unsafe { self.owned.remove(task) };
            // Release: the last access; pairs with the next claimer's Acquire.
            header.owner.store(core::ptr::null_mut(), Ordering::Release);
        } else {
            // A wake is in flight to us: release when its node is taken (drain_inbox).
            header.set_flag(flag::RELEASE_PENDING);
        }
    }
}
