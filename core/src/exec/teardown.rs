//! `Executor::shutdown` and the executor's drop.
//!
//! Teardown (the executor's drop; `shutdown` does rules 1-3), cited as "teardown rule N":
//! 1. No new work comes in (handle unbound, dispatcher left, inbox drained), then every
//!    attached task is cancelled: a future's body, or a fiber's that has not started, is
//!    dropped where it is (its in-flight statuses orphaned and their operations
//!    cancelled, io_status rule 4); a started fiber gets the cancel flag and is woken, or
//!    its i/o cancelled, so it resumes with `Cancelled` (fiber rules 2 and 5).
//! 2. Then at most [`TEARDOWN_ROUNDS`] rounds: have the driver cancel every operation
//!    still in flight (`Driver::cancel_all`: also those whose owner was moved out of its
//!    task) and reap until none is (or the driver stalls), resume each ready fiber once,
//!    and cancel again what suspended again. Fibers unwind: their destructors run
//!    (descriptors closed) and their stacks go back to the pool. New i/o a fiber starts
//!    while cancelled is refused, and what is in flight is drained again each round.
//! 3. A task still attached after the rounds (a fiber that ignores `Cancelled`, or one
//!    whose i/o the driver never completes) is leaked on purpose: never resumed again,
//!    its stack and all its frames own never reused or freed, its statuses detached from
//!    the slot. It completes as `Cancelled` and is counted by id ([`Shutdown`],
//!    [`leaked_fibers`]).
//! 4. Once nothing is in flight (the rounds end with one more cancel-all and drain),
//!    every owned task is released (its owner cleared, its notify word closed: wake
//!    rule 6), wakers still inside are waited for, and spare stacks go back.
//! 5. A body `Drop` that panics during rules 1-3 completes its task as `Panicked` (body
//!    rule 1); a guard then runs the teardown again during the unwind, from where it
//!    stopped (each step skips what is done), so every task is still released and no
//!    task names the freed executor; then the panic propagates out of the drop.
//!

use crate::acct::Accounting;
use crate::driver::Driver;
use crate::exec::Executor;
use crate::exec::sched::Sched;
use crate::mailbox::inbox::Recheck;
use crate::stack::StackProvider;
use crate::task::header::SlotPtr;
use core::pin::Pin;

impl<D: Driver, S: StackProvider, A: Accounting> Drop for Executor<D, S, A> {
    /// Teardown rules 1-5: cancels every attached task (future bodies dropped, started
    /// fibers unwound through `Cancelled`, i/o cancelled and drained, for a bounded number
    /// of rounds; what is left leaked and counted in [`leaked_fibers`]), then gives every
    /// task up, waiting for wakes in flight to this executor (wake rule 6).
    ///
    /// A body `Drop` that panics: the task completes as `Panicked`, the rest of the
    /// teardown still runs (every task is released), then the panic propagates out of the
    /// drop (teardown rule 5).
    fn drop(&mut self) {
        // SAFETY: `Executor` is `!Unpin`, so once pinned it is dropped in place; if it was
        // never pinned, nothing can name it and initialising it here is harmless.
        let this = unsafe { Pin::new_unchecked(&*self) };
        // Registry rule 1 (exec/debug.rs): off the debuggers' list before teardown.
        crate::exec::debug::unregister(this.sched());
        /// Teardown rule 5: finishes the teardown while a body's panic unwinds.
        struct Finish<'a, D: Driver, S: StackProvider, A: Accounting>(Pin<&'a Executor<D, S, A>>);
        impl<D: Driver, S: StackProvider, A: Accounting> Drop for Finish<'_, D, S, A> {
            fn drop(&mut self) {
                self.0.teardown();
            }
        }
        this.close_doors();
        let finish = Finish(this);
        this.teardown();
        core::mem::forget(finish);
    }
}

/// Rounds of cancellation an executor's teardown gives started fibers before it leaks
/// what is left (teardown rule 3).
pub const TEARDOWN_ROUNDS: usize = 64;

/// How many leaked task ids a [`Shutdown`] lists.
pub const LEAK_IDS: usize = 8;

/// What [`Executor::shutdown`] did (teardown rules 1-3).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Shutdown {
    /// Tasks cancelled (bodies dropped, or fibers resumed with `Cancelled`).
    pub cancelled: usize,
    /// Started fibers still attached after [`TEARDOWN_ROUNDS`] rounds (they ignored
    /// `Cancelled`): each stack, and whatever its frames own (descriptors, buffers), is
    /// leaked on purpose, never resumed, reused or freed under them. Their tasks complete
    /// as `Cancelled`.
    pub leaked_fibers: usize,
    /// The task ids of the first [`LEAK_IDS`] of them (0 past `leaked_fibers`).
    pub leaked_ids: [u32; LEAK_IDS],
}

impl Shutdown {
    pub(super) fn note_leak(&mut self, id: u32) {
        if let Some(slot) = self.leaked_ids.get_mut(self.leaked_fibers) {
            *slot = id;
        }
        self.leaked_fibers += 1;
    }
}

/// Fibers leaked by executor drops in this process (teardown rule 3), for code that has
/// no executor left to ask: how many, and the task id of the latest.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeakedFibers {
    /// Fibers leaked so far.
    pub count: usize,
    /// The task id of the latest (0: none).
    pub last_id: u32,
}

// Plain `core` atomics, also under loom: statistics, nothing is published through them.
static LEAKED_COUNT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
static LEAKED_LAST: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Fibers leaked by executor drops in this process so far (teardown rule 3).
pub fn leaked_fibers() -> LeakedFibers {
    // Relaxed: counters read for reporting; they order nothing.
    LeakedFibers {
        count: LEAKED_COUNT.load(core::sync::atomic::Ordering::Relaxed),
        last_id: LEAKED_LAST.load(core::sync::atomic::Ordering::Relaxed),
    }
}

impl<D: Driver, S: StackProvider, A: Accounting> Executor<D, S, A> {
    /// Cancels every attached task and winds it down, as the executor's drop does
    /// (teardown rules 1-3), leaving the tasks owned and completed (their results
    /// readable) and the executor usable. Every operation in flight is cancelled, also one
    /// whose owner was moved out of its task (it completes, usually with `ECANCELED`).
    /// Returns what it did, leaked fibers included. `Err(Reentrant)` from inside `run`.
    ///
    /// # Panics
    /// As `cancel`: a body `Drop` that panics completes its task as `Panicked` and the
    /// panic propagates (the tasks not yet reached stay attached).
    pub fn shutdown(self: Pin<&Self>) -> Result<Shutdown, crate::error::RunError> {
        let sched = self.sched();
        if sched.running.replace(true) {
            return Err(crate::error::RunError::Reentrant);
        }
        struct Running<'a>(&'a Sched);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.running.set(false);
            }
        }
        let _running = Running(sched);
        // Spawn rule 3: no spawns while winding down; the executor is usable afterwards
        // (also after a body's panic: the guard reopens it).
        struct Closing<'a>(&'a Sched, bool);
        impl Drop for Closing<'_> {
            fn drop(&mut self) {
                self.0.closing.set(self.1);
            }
        }
        let _closing = Closing(sched, sched.closing.replace(true));
        Ok(self.wind_down())
    }

    /// Teardown rule 1's first half: no new work comes in. Runs no task code (so it
    /// cannot panic out half done) and runs once. The dispatcher stays named: tasks it
    /// dispatched still count their completion there (dispatch rule 3).
    pub(super) fn close_doors(self: Pin<&Self>) {
        let sched = self.sched();
        // Spawn rule 3: no task spawns from here on.
        sched.closing.set(true);
        // Remote rule 1: no new attaches; wait for attachers inside. Dispatch rule 4: no
        // submitter may unpark us any more.
        if let Some(slot) = sched.handle_slot.take() {
            slot.unbind();
        }
        if let Some((dispatcher, slot)) = sched.dispatcher.get() {
            dispatcher.unregister(slot);
        }
        // Take in every attach and wake already pushed, so every task we own is listed.
        // Inbox rule 3: a push in progress is waited for here (cold, blocking).
        while sched.mailbox.inbox.recheck() != Recheck::Empty {
            sched.drain_inbox(usize::MAX);
            crate::sync::spin_loop();
        }
    }

    /// The rest of the executor's drop (teardown rules 1-4); also run again by its guard
    /// while a body's panic unwinds, so each step skips what is done (teardown rule 5).
    pub(super) fn teardown(self: Pin<&Self>) {
        let sched = self.sched();
        let report = self.wind_down();
        if report.leaked_fibers > 0 {
            // Relaxed: statistics (see `leaked_fibers`).
            LEAKED_COUNT.fetch_add(report.leaked_fibers, core::sync::atomic::Ordering::Relaxed);
            let last = report.leaked_ids[report.leaked_fibers.min(LEAK_IDS) - 1];
            LEAKED_LAST.store(last, core::sync::atomic::Ordering::Relaxed);
        }
        // Nothing is in flight any more: wind_down ended with `cancel_and_drain`, which
        // also cancels operations whose owner left its task (moved into `main`).
        while let Some(task) = sched.owned.front() {
            // Teardown rule 4. Every task is completed or idle here (wind_down leaks what
            // is left), so it can be given up. Completions for its orphans can no longer
            // arrive (the driver goes with the executor): its next run, on any executor,
            // must not wait for them.
            // SAFETY: `'static` header.
            task.trailer().orphans.set(0);
            // Wake rule 6: a waker mid-push holds QUEUED; wait for its node to arrive.
            let mut spins: u64 = 0;
            while !sched.release(task) {
                spins += 1;
                crate::sync::spin_loop();
                debug_assert!(spins < 1 << 40, "keel bug: a wake never arrived");
            }
        }
        // Park rule 4: wait for wakers still inside (unparking us).
        sched.mailbox.park.wait_quiet();
        sched.stacks.release_all();
    }

    /// Reaps until no operation is in flight (cancellations were requested already), or
    /// the driver says nothing more can complete.
    pub(super) fn drain_all_io(self: Pin<&Self>) {
        let sched = self.sched();
        let driver = self.driver_ptr();
        loop {
            // Driver rule 3: a poisoned executor routes no completion any more.
            if sched.driver_state.get() != 0 {
                return;
            }
            // SAFETY: sched rule 3: not lent, so no other reference to the driver is live.
            if unsafe { (*driver).in_flight() } == 0 {
                return;
            }
            #[cfg(debug_assertions)]
            sched.reaping.set(true);
            // SAFETY: sched rule 3: not lent, so this is the only reference; the sink
            // reaches no driver (user code in it runs with the flag set).
            let reaped =
                unsafe { &mut *driver }.reap(sched.cfg.reap_batch, &mut |tok, res| sched.complete_io(tok, res));
            #[cfg(debug_assertions)]
            sched.reaping.set(false);
            sched.apply_held_back();
            if reaped == 0 {
                let deadline = sched.now().saturating_add(core::time::Duration::from_millis(1));
                // SAFETY: as above (not lent: the reap's flag was cleared).
                if let Ok(crate::driver::Park::Stalled) = unsafe { &mut *driver }.park(Some(deadline)) {
                    return;
                }
            }
        }
    }

    /// Has the driver cancel every operation in flight, then reaps until none is.
    pub(super) fn cancel_and_drain(self: Pin<&Self>) {
        // Driver rule 1: not while it is lent (a fiber suspended inside a closure); driver
        // rule 3: a poisoned executor reaps nothing. `drain_all_io` checks the same.
        if self.sched().driver_state.get() == 0 {
            // SAFETY: sched rule 3: not lent, so no other reference to the driver is live.
            unsafe { &mut *self.driver_ptr() }.cancel_all();
        }
        self.drain_all_io();
    }

    /// Teardown rules 1-3: cancel, unwind started fibers for at most `TEARDOWN_ROUNDS`
    /// rounds, leak what is left.
    pub(super) fn wind_down(self: Pin<&Self>) -> Shutdown {
        let sched = self.sched();
        let mut report = Shutdown::default();
        for _ in 0..TEARDOWN_ROUNDS {
            sched.drain_inbox(sched.cfg.inbox_batch);
            // Teardown rule 1 (and again each round, for fibers that suspended again).
            let mut cur = sched.owned.front();
            while let Some(task) = cur {
                // SAFETY: `task` is linked in `owned`. The next is read first: completing
                // `task` may release it (remote rule 4), which unlinks only `task`.
                cur = unsafe { sched.owned.next_of(task) };
                if sched.abandon(task) {
                    report.cancelled += 1;
                }
            }
            // Teardown rule 2: reap what the cancels (and orphaned statuses) left in
            // flight, then resume each fiber that is ready once. The driver cancels
            // everything first: an operation whose owner was moved out of its task (into
            // `main`) is no task's to cancel, and would hold the drain until it completes.
            self.cancel_and_drain();
            let ready = sched.ready.len();
            if ready == 0 {
                // Nothing left to resume: every task is done, or waits for i/o the driver
                // never completes (drain_all_io waited until it stalled).
                break;
            }
            for _ in 0..ready {
                let Some(task) = sched.ready.pop() else { break };
                // Sched rule 6: nothing held here; a yielding task is queued.
                let _ = sched.resume::<A>(task, false);
            }
        }
        self.cancel_and_drain();
        // Teardown rule 3: what is still attached ignored `Cancelled` (or waits for i/o the
        // driver never completes).
        let mut cur = sched.owned.front();
        while let Some(task) = cur {
            // SAFETY: as above.
            cur = unsafe { sched.owned.next_of(task) };
            // SAFETY: `'static` header.
            let header = unsafe { task.as_ref() };
            if header.state.get().is_attached() {
                sched.leak(task);
                report.note_leak(task.trailer().id());
            }
        }
        report
    }
}
