//! The run loop.
//!
//! One pass: reap completions if any operation is in flight (at most `reap_batch`; for
//! the ring this is the pass's one `io_uring_enter`, which also submits what the tasks
//! queued), fire expired timers if any is armed (at most `timer_batch`), then resume as
//! many tasks as were ready at that point (at most `resume_batch` while i/o is in
//! flight; one with none, as there is nothing to batch), each time the oldest of the
//! highest ready priority, taking wakes off the inbox (at most `inbox_batch`) before each. So tasks
//! that stay busy (yielding) still let completions in once per pass, and a pass over
//! many ready tasks batches all their submissions into one enter (one enter per resumed
//! task cost the echo server two thirds of its throughput: 1.6 SQEs per enter).
//! A pass that finds nothing ready parks the driver until the next timer's deadline
//! (or the run's timeout) — unless work was done already, in which case `run` returns.
//!
//! Before parking it announces and re-checks (park rule 2). A re-check that finds a
//! foreign push half done (inbox rule 3) does not park at once: the producer is usually
//! nanoseconds from its link store, so the loop passes again, with a spin hint, at most
//! [`INBOX_BUSY_SPINS`](super::INBOX_BUSY_SPINS) times in a row; after that it parks,
//! and the producer's own unpark check (park rule 2) ends the park. So no pass loop
//! here is unbounded: each pass either does an item, parks, times out, or is one of at
//! most `INBOX_BUSY_SPINS` busy re-checks between two parks.
//!
//! The clock is read only when a timer is armed or when the loop is about to park or
//! time out: a yield-only workload never reads it.

use super::Executor;
use crate::driver::{Driver, Park};
use crate::error::RunError;
use crate::mailbox::inbox::Recheck;
use crate::task::header::Header;
use core::pin::Pin;
use core::ptr::NonNull;
use core::time::Duration;

impl<D: Driver, S: crate::stack::StackProvider, A: crate::acct::Accounting> Executor<D, S, A> {
    /// Does at most `max_items` items of work (a task resumed, or completed, is one),
    /// highest CPU priority first, FIFO within a priority. Waits for work when there is
    /// none, up to `timeout` (`None`: no limit). Returns how many items it did;
    /// `Err(TimedOut)` if the timeout passed with none done, `Err(Stalled)` if nothing
    /// could ever wake a task.
    pub fn run(self: Pin<&Self>, max_items: usize, timeout: Option<Duration>) -> Result<usize, RunError> {
        if max_items == 0 {
            return Err(RunError::ZeroMaxItems);
        }
        let sched = self.sched();
        if sched.running.replace(true) {
            return Err(RunError::Reentrant);
        }
        // Resets `running` even if a task body panics through `run`.
        struct Running<'a>(&'a super::sched::Sched);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.running.set(false);
            }
        }
        let _running = Running(sched);
        // Driver rule 1: called from inside a `with_driver` closure (outside any task);
        // driver rule 3: poisoned.
        if sched.driver_state.get() != 0 {
            return Err(if sched.is_poisoned() { RunError::Poisoned } else { RunError::DriverBusy });
        }
        if !A::ON {
            return self.run_loop(sched, max_items, timeout);
        }
        let entry = A::read();
        sched.times.last.set(entry);
        let result = self.run_loop(sched, max_items, timeout);
        crate::acct::ExecTimes::add(&sched.times.in_run, A::read().saturating_sub(entry));
        result
    }

    fn run_loop(
        self: Pin<&Self>,
        sched: &super::sched::Sched,
        max_items: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, RunError> {
        let cfg = sched.cfg;
        let mut deadline = None;
        // Items still allowed (`max_items` minus those done): counted down, so each item
        // costs one decrement and a test for zero.
        let mut left = max_items;
        // Tasks this pass still resumes before the next reap (bounded by the ready count
        // at the pass's start).
        let mut pass_left = 0usize;
        // Consecutive re-checks that found a push in progress (inbox rule 3).
        let mut busy = 0u32;
        loop {
            sched.drain_inbox(cfg.inbox_batch);
            if pass_left > 0
                && let Some(task) = sched.ready.pop()
            {
                pass_left -= 1;
                let _ = sched.resume::<A>(task, false);
                left -= 1;
                if left == 0 {
                    return Ok(max_items);
                }
                continue;
            }
            // Sched rule 3: each driver call below forms its own short-lived reference,
            // with the lend flag clear (a fiber suspended inside a `with_driver` closure
            // leaves it set: then this pass keeps off the driver).
            let driver = self.driver_ptr();
            // Poisoned (driver rule 3): never reap again either.
            let lent = sched.driver_state.get() != 0;
            // SAFETY: sched rule 3: not lent, so no other reference is live.
            let io = !lent && unsafe { (*driver).in_flight() } > 0;
            if io {
                if cfg.trim_spare_stacks_after.is_some() {
                    // The stamp for stacks pooled inside the reap (sched rule 3).
                    sched.read_clock();
                }
                // A completion can complete a draining task (one item each): reap no more
                // than the items left, so `left` never goes below zero.
                let before = sched.stats.completed.get();
                #[cfg(debug_assertions)]
                sched.reaping.set(true);
                // SAFETY: sched rule 3: not lent, so this is the only reference; the sink
                // reaches no driver (user code in it runs with the flag set).
                unsafe { &mut *driver }.reap(cfg.reap_batch.min(left), &mut |tok, res| sched.complete_io(tok, res));
                #[cfg(debug_assertions)]
                sched.reaping.set(false);
                sched.apply_held_back();
                left -= (sched.stats.completed.get() - before) as usize;
                if left == 0 {
                    return Ok(max_items);
                }
            }
            if !lent && sched.submit_queue_busy() {
                // SAFETY: sched rule 3, as above.
                let (cap, in_flight) = unsafe { ((*driver).submit_capacity(), (*driver).in_flight()) };
                let mut room = cap;
                if let Some(limit) = cfg.max_io_in_flight {
                    room = room.min(limit.saturating_sub(in_flight));
                }
                sched.grant_submit(room);
            }
            if !sched.timers.is_empty() {
                sched.fire_timers(sched.read_clock(), cfg.timer_batch);
            }
            if let Some(task) = sched.ready.pop() {
                // With nothing in flight there is nothing to batch: look at everything
                // again after each task (what a yield- or spawn-only workload wants).
                pass_left = if io { sched.ready.len().min(cfg.resume_batch - 1) } else { 0 };
                let held = sched.resume::<A>(task, !io);
                left -= 1;
                if let Some(task) = held {
                    // Sched rule 6 (out of line: the pass keeps its registers).
                    left = self.lone_yielder(sched, task, left);
                }
                if left == 0 {
                    return Ok(max_items);
                }
                continue;
            }
            // No work of our own: take the dispatcher's highest-priority waiting task.
            if sched.take_dispatched() {
                continue;
            }
            if left < max_items {
                return Ok(max_items - left);
            }
            // Nothing done in this pass: wait for work (out of line, so that the passes
            // above keep their registers).
            if let Some(out) = self.idle(sched, lent, driver, timeout, &mut deadline, &mut busy) {
                return out;
            }
        }
    }

    /// Sched rule 6: a lone yielder's passes, while each finds nothing else to do (inbox
    /// drained, driver not lent, no i/o in flight, no room waiter, no timer, no higher
    /// level queued): the task runs again at once. When a check finds work, or no item is
    /// left, the task goes back to the front of its level (the full pass goes on, or `run`
    /// returns). Returns the items left. Bounded by `left`.
    #[inline(never)]
    fn lone_yielder(self: Pin<&Self>, sched: &super::sched::Sched, task: NonNull<Header>, mut left: usize) -> usize {
        let driver = self.driver_ptr();
        // SAFETY: `'static` header.
        let level = unsafe { task.as_ref() }.prio.get().cpu.index();
        let mut held = Some(task);
        while let Some(task) = held {
            if left > 0 {
                sched.drain_inbox(sched.cfg.inbox_batch);
                // SAFETY: sched rule 3: the driver is called only when not lent
                // (short-circuit), for a count.
                let quiet = sched.driver_state.get() == 0
                    && unsafe { (*driver).in_flight() } == 0
                    && !sched.submit_queue_busy()
                    && sched.timers.is_empty()
                    && sched.ready.empty_above(level);
                if quiet {
                    held = sched.resume::<A>(task, true);
                    left -= 1;
                    continue;
                }
            }
            // SAFETY: a held task is in no run list.
            unsafe { sched.ready.push_front(task) };
            break;
        }
        left
    }

    /// A pass that found no work and did none: quit, time out, re-check or park (park
    /// rule 2). `None`: pass again.
    #[inline(never)]
    fn idle(
        self: Pin<&Self>,
        sched: &super::sched::Sched,
        lent: bool,
        driver: *mut D,
        timeout: Option<Duration>,
        deadline: &mut Option<Option<crate::Instant>>,
        busy: &mut u32,
    ) -> Option<Result<usize, RunError>> {
        // A fiber suspended inside a `with_driver` closure holds the driver: nothing
        // here may park it (driver rule 1).
        if lent {
            return Some(Err(if sched.is_poisoned() { RunError::Poisoned } else { RunError::DriverBusy }));
        }
        // Dispatch rule 5: quit only when idle, and only if nothing waits in the
        // dispatcher (`take_quit` looks again after loading the tokens).
        if let Some((dispatcher, _)) = sched.dispatcher.get()
            && sched.attached.get() == 0
            && dispatcher.take_quit()
        {
            return Some(Err(RunError::Quit));
        }
        let now = sched.read_clock();
        let until = *deadline.get_or_insert_with(|| timeout.map(|t| now.saturating_add(t)));
        if until.is_some_and(|u| now >= u) {
            return Some(Err(RunError::TimedOut));
        }
        let wake_at = match (sched.timers.next_deadline(), until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(age) = sched.cfg.trim_spare_stacks_after {
            let age = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
            sched.stacks.trim(crate::Instant::from_nanos(now.as_nanos().saturating_sub(age)));
        }
        // Park rule 2: announce, then re-check the inbox before sleeping.
        let dispatched = sched.announce_and_recheck();
        match sched.mailbox.inbox.recheck() {
            Recheck::Items => {
                sched.running_again();
                return None;
            }
            // Inbox rule 3: a producer is between its swap and its link. Pass again,
            // a bounded number of times; then park, which that producer ends.
            Recheck::Busy if *busy < super::INBOX_BUSY_SPINS => {
                *busy += 1;
                sched.running_again();
                crate::sync::spin_loop();
                return None;
            }
            Recheck::Busy | Recheck::Empty if dispatched => {
                sched.running_again();
                return None;
            }
            Recheck::Busy | Recheck::Empty => {}
        }
        *busy = 0;
        sched.stats.parks.set(sched.stats.parks.get() + 1);
        let before = A::read();
        // SAFETY: sched rule 3: not lent (checked above; nothing ran since).
        let parked = unsafe { &mut *driver }.park(wake_at);
        sched.running_again();
        if A::ON {
            let after = A::read();
            crate::acct::ExecTimes::add(&sched.times.parked, after.saturating_sub(before));
            sched.times.last.set(after);
        }
        match parked {
            Ok(Park::Woke) => {}
            Ok(Park::Stalled) => return Some(Err(RunError::Stalled)),
            Err(err) => return Some(Err(RunError::Driver(err))),
        }
        None
    }
}

#[cfg(all(test, not(keel_loom)))]
mod tests {
    use super::super::{Config, Executor, INBOX_BUSY_SPINS, Unparker};
    use crate::driver::{Driver, IoResult, IoToken, OpId, Park};
    use crate::exec::sched::Sched;
    use crate::mailbox::inbox::{Inbox, InboxNode};
    use crate::task::body::FutureBody;
    use crate::task::claim::claim_and_place;
    use crate::task::header::flag;
    use crate::{Errno, Instant, TaskAttrs, TaskSlot};
    use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// The state of one half-done foreign push, and what the driver saw.
    static SCHED: AtomicUsize = AtomicUsize::new(0);
    static PREV: AtomicUsize = AtomicUsize::new(0);
    static NODE: AtomicUsize = AtomicUsize::new(0);
    static PASSES: AtomicUsize = AtomicUsize::new(0);
    static PARKS: AtomicUsize = AtomicUsize::new(0);
    static UNPARKED: AtomicBool = AtomicBool::new(false);
    static RAN: AtomicBool = AtomicBool::new(false);

    /// A driver whose `park` plays the producer finishing its push (its link, then its
    /// unpark check), as a preempted producer's thread does once it runs again.
    struct MidPush;

    fn unpark(_: usize) {
        UNPARKED.store(true, Ordering::Relaxed);
    }

    // SAFETY: it accepts no operation (its `Op` is uninhabited); its unparker only stores
    // to a static.
    unsafe impl Driver for MidPush {
        type Op = core::convert::Infallible;
        fn now(&self) -> Instant {
            // Read once per pass that found no work: counts the passes.
            let pass = PASSES.fetch_add(1, Ordering::Relaxed);
            assert!(pass < 10_000, "the run loop spun without bound on a push in progress");
            Instant::ZERO
        }
        fn submit(&mut self, op: Self::Op, _: IoToken) -> Result<OpId, (Self::Op, Errno)> {
            match op {}
        }
        fn cancel(&mut self, _: OpId) {}
        fn retarget(&mut self, _: OpId, _: IoToken) {}
        fn reap<F: FnMut(IoToken, IoResult)>(&mut self, _: usize, _: &mut F) -> usize {
            0
        }
        fn in_flight(&self) -> usize {
            0
        }
        fn park(&mut self, _: Option<Instant>) -> Result<Park, Errno> {
            PARKS.fetch_add(1, Ordering::Relaxed);
            let prev = PREV.swap(0, Ordering::Relaxed) as *mut InboxNode;
            if !prev.is_null() {
                // SAFETY: the executor outlives its run; `prev`/`node` are one swap's.
                let sched = unsafe { &*(SCHED.load(Ordering::Relaxed) as *const Sched) };
                // SAFETY: as above.
                unsafe { Inbox::push_link(prev, NODE.load(Ordering::Relaxed) as *mut InboxNode) };
                sched.mailbox.park.after_push();
            }
            // A real park returns only if unparked: the producer must have seen PARKED.
            Ok(if UNPARKED.swap(false, Ordering::Relaxed) { Park::Woke } else { Park::Stalled })
        }
        fn unparker(&mut self, _: *const u32) -> Option<Unparker> {
            Some(Unparker { ctx: 0, unpark })
        }
    }

    /// Inbox rule 3 and park rule 2: an executor with nothing else to do, facing a
    /// foreign attach stopped between its swap and its link, makes at most
    /// `INBOX_BUSY_SPINS` extra passes, then parks; the producer's unpark check ends the
    /// park and the task runs (nothing lost, no unbounded spin).
    #[test]
    fn inbox_rule_3_a_push_in_progress_costs_bounded_passes_then_one_park() {
        static T: TaskSlot = TaskSlot::new();
        let ex = core::pin::pin!(Executor::new(MidPush, Config::default()).unwrap());
        let ex = ex.into_ref();
        let sched = ex.sched();
        SCHED.store(sched as *const Sched as usize, Ordering::Relaxed);
        // A foreign attach's steps (remote rules 2-3), stopped after the inbox swap.
        let owner = sched.owner_id();
        let body = async {
            RAN.store(true, Ordering::Relaxed);
        };
        fn vtable_of<F: core::future::Future>(_: &F) -> &'static crate::task::body::BodyVTable
        where
            F::Output: crate::task::body::IntoTaskResult,
        {
            &FutureBody::<F>::VTABLE
        }
        let vtable = vtable_of(&body);
        let run =
            claim_and_place(owner, T.create(TaskAttrs::default()).unwrap(), body, vtable, flag::RELEASE_ON_COMPLETE)
                .ok()
                .unwrap();
        // SAFETY: `'static` slot, claimed for `ex`.
        let header = unsafe { run.header().as_ref() };
        header.notify.mark_attach();
        // Provenance rule 3: the whole slot's (the owner steps back to the header).
        let node = crate::task::header::SlotPtr::inbox_node(run.header()).as_ptr();
        NODE.store(node as usize, Ordering::Relaxed);
        // SAFETY: remote rule 3: the node is ours to push; the driver links it.
        PREV.store(unsafe { sched.mailbox.inbox.push_swap(node) } as usize, Ordering::Relaxed);
        assert_eq!(ex.run(1, None), Ok(1));
        assert!(RAN.load(Ordering::Relaxed), "the task attached mid-push was lost");
        assert_eq!(PARKS.load(Ordering::Relaxed), 1, "one park, ended by the producer's unpark");
        let passes = PASSES.load(Ordering::Relaxed);
        assert!(passes <= INBOX_BUSY_SPINS as usize + 1, "{passes} idle passes on one push in progress");
    }
}
