//! The executor's driver-independent state and the operations on it: attach, resume,
//! wake, timers, i/o completion. `Executor<D>` wraps it with a driver; task-side
//! primitives reach it through their task's header.
//!
//! Rules (cited as "sched rule N"):
//! 1. A `Sched` lives inside a pinned `Executor` and never moves once a task names it.
//! 2. Everything but `inbox` is touched only on the executor's thread, through `Cell`s;
//!    there is never a `&mut Sched`.
//! 3. The driver is reached through a raw pointer, and a reference to it is formed only
//!    while the lend flag (`LENT` in `driver_state`) is clear, for one driver call that runs no user code.
//!    Whoever holds a reference across code that could reach the driver sets the flag
//!    first: a `with_driver` closure (driver rule 1, exec/lend.rs). The run loop's
//!    `reap` holds one across its sink, `complete_io`, which reaches no driver (debug
//!    builds assert it): it stamps a pooled stack with the clock read before the reap,
//!    and around the one piece of user code it runs (the stack provider taking a drained
//!    fiber's stack back) it sets the flag; what that held back is applied after the
//!    reap. While the flag is set every other path keeps off the driver: `now` answers
//!    the run loop's last clock reading, cancels and retargets are held back and applied when the flag
//!    clears (driver rule 3), submission, `run` and a nested `with_driver` are refused
//!    with typed errors.
//! 4. Every loop here is bounded by a configuration value or by a structure's size:
//!    inbox drain by `inbox_batch`, timer firing by `timer_batch`, completion reaping
//!    by `reap_batch`, run-queue pop by the three levels.
//! 5. A lifecycle step whose starting state the structure guarantees is stored without
//!    re-reading the state in release builds ([`step_known`]; debug builds check the
//!    edge as every other step does): a task popped from `ready` is Attached or Ready
//!    (only those edges queue it: attach, wake, yield, a cancel's or an i/o's
//!    requeue), a task whose `resume` returned is Running (nothing but its own
//!    resume moves a Running task: a cancel only flags it), and a task that `attach`
//!    found not attached is Idle or Completed (attach runs on the owner's thread, which
//!    alone moves the task's state: header rule 2).
//! 6. The run loop may hold one yielding task off `ready` between its resume and the
//!    next, when at the yield no task was queued at its level or above (a push would
//!    have made it the head of the queue). It stays Ready. The loop then makes the
//!    pass's checks (inbox, lend flag, i/o in flight, room waiters, timers, a higher
//!    level queued meanwhile); only if none has work does it resume the task again at
//!    once. Otherwise, and before `run` returns, the task goes back to the front of its
//!    level (ahead of any task of its level queued after its yield: the order a push
//!    would have given) and the full pass goes on. Between the yield and either end,
//!    only keel's inbox drain and the driver's `in_flight` count run, and a wake of a
//!    Ready task changes nothing (wake rule 1).
//!
//!
//! Submission room (room rules) is in `submit.rs`, the driver (driver rules) in `lend.rs`.

use crate::clock::Instant;
use crate::driver::DriverVt;
use crate::error::{TaskError, TaskResult};
use crate::exec::Config;
use crate::exec::lend::{DEFERRED_DRIVER_OPS, Deferred, LENT, not_initialised};
use crate::exec::run_queue::RunQueue;
use crate::exec::stats::StatsCells;
use crate::exec::work_source::WorkSource;
use crate::list::List;
use crate::mailbox::Mailbox;
use crate::stack::pool::StackPool;
use crate::sync::Ordering;
use crate::task::body::Step;
use crate::task::header::{Header, OwnedLink, SlotPtr, flag};
use crate::task::state::{TaskEvent as E, TaskState as S};
use crate::timer::TimerHeap;
use core::cell::Cell;
use core::ptr::NonNull;

#[repr(C)]
pub(crate) struct Sched {
    /// First (`#[repr(C)]`): the only fields other threads touch, and the executor's
    /// identity as a task's owner (`Sched::owner_id`).
    pub(crate) mailbox: Mailbox,
    /// The dispatcher this executor serves and its worker slot (dispatch rule 4).
    pub(crate) dispatcher: Cell<Option<(&'static dyn WorkSource, usize)>>,
    /// The handle slot bound to this executor, if any (cleared on drop).
    pub(crate) handle_slot: Cell<Option<&'static crate::mailbox::HandleSlot>>,
    pub(crate) ready: RunQueue,
    pub(crate) timers: TimerHeap,
    pub(crate) owned: List<Header, OwnedLink>,
    pub(super) driver: Cell<*mut ()>,
    pub(super) driver_vt: Cell<Option<&'static DriverVt>>,
    /// Sched rule 3: `LENT` while a reference to the driver is live (lent to a closure,
    /// or reaping); `POISONED` once the executor may never reap again (driver rule 3).
    /// One byte, so the run loop's pass tests both with one load.
    pub(crate) driver_state: Cell<u8>,
    /// The run loop's last clock reading (what `now` answers while the driver is lent).
    pub(super) clock: Cell<Instant>,
    /// What `now` calls, with what: the driver's clock, or while the driver is lent,
    /// `clock` (switched by `lend`, so `now` itself tests nothing).
    pub(super) now_fn: Cell<unsafe fn(*mut ()) -> Instant>,
    pub(super) now_ctx: Cell<*mut ()>,
    /// Cancels and retargets held back while the driver was lent (driver rule 3).
    pub(super) deferred: [Cell<Option<Deferred>>; DEFERRED_DRIVER_OPS],
    pub(super) deferred_len: Cell<usize>,
    /// Inside a reap's sink (debug builds check that it reaches no driver: sched rule 3).
    #[cfg(debug_assertions)]
    pub(crate) reaping: Cell<bool>,
    pub(crate) attached: Cell<usize>,
    /// Tasks waiting for room to submit, by I/O priority (room rule 1).
    pub(crate) submit_waiters: [List<Header, crate::task::header::SubmitLink>; 3],
    /// The tasks in `submit_waiters` (room rule 1).
    pub(crate) room_waiters: Cell<usize>,
    pub(crate) stacks: StackPool,
    pub(crate) cfg: Config,
    pub(crate) stats: StatsCells,
    pub(crate) times: crate::acct::ExecTimes,
    pub(super) initialised: Cell<bool>,
    /// Inside `run` (a task calling `run` again is refused).
    pub(crate) running: Cell<bool>,
    /// Tearing down: inside `shutdown`, or dropped (spawn rule 3 refuses spawns).
    pub(crate) closing: Cell<bool>,
    /// The driver's self-description, for debuggers only (`driver_debug`): copied once,
    /// by the first `ensure_init`.
    pub(crate) driver_debug: Cell<crate::driver_debug::DriverDebug>,
}

#[inline(always)]
pub(crate) fn hdr(task: NonNull<Header>) -> &'static Header {
    // Every header pointer the scheduler handles is into a `'static` TaskSlot; the
    // reference is for the header's own fields (provenance rule 2).
    task.hdr()
}

#[inline(always)]
pub(crate) fn step(header: &Header, event: E) {
    match header.state.get().on(event) {
        Ok(next) => header.state.set(next),
        Err(err) => panic!("keel bug: {err}"),
    }
}

/// Sched rule 5: `event`'s edge from a state the caller's structure guarantees, to
/// `next`. Debug builds check the edge as [`step`] does; release builds store `next`.
#[inline(always)]
pub(crate) fn step_known(header: &Header, event: E, next: S) {
    #[cfg(debug_assertions)]
    match header.state.get().on(event) {
        Ok(got) => assert_eq!(got, next, "keel bug: {event:?} leads to {got:?}, not {next:?}"),
        Err(err) => panic!("keel bug: {err}"),
    }
    #[cfg(not(debug_assertions))]
    let _ = event;
    header.state.set(next);
}

impl Sched {
    pub(crate) fn new(cfg: Config) -> Self {
        Sched {
            mailbox: Mailbox::new(),
            handle_slot: Cell::new(None),
            dispatcher: Cell::new(None),
            ready: RunQueue::new(),
            timers: TimerHeap::new(),
            owned: List::new(),
            driver: Cell::new(core::ptr::null_mut()),
            driver_vt: Cell::new(None),
            driver_state: Cell::new(0),
            clock: Cell::new(Instant::ZERO),
            now_fn: Cell::new(not_initialised),
            now_ctx: Cell::new(core::ptr::null_mut()),
            deferred: [const { Cell::new(None) }; DEFERRED_DRIVER_OPS],
            deferred_len: Cell::new(0),
            #[cfg(debug_assertions)]
            reaping: Cell::new(false),
            attached: Cell::new(0),
            submit_waiters: [List::new(), List::new(), List::new()],
            room_waiters: Cell::new(0),
            stacks: StackPool::new(cfg.max_spare_stacks),
            cfg,
            stats: StatsCells::default(),
            times: crate::acct::ExecTimes::default(),
            initialised: Cell::new(false),
            running: Cell::new(false),
            closing: Cell::new(false),
            driver_debug: Cell::new(crate::driver_debug::DriverDebug::NONE),
        }
    }

    /// Sched rule 1: called on every entry through a pinned executor.
    #[inline(always)]
    pub(crate) fn ensure_init(
        &self,
        clock: Option<fn() -> u64>,
        driver: *mut (),
        driver_vt: &'static DriverVt,
        stacks: *mut (),
        stacks_vt: &'static crate::stack::pool::ProviderVt,
    ) {
        if !self.initialised.get() {
            self.init(clock, driver, driver_vt, stacks, stacks_vt);
        }
    }

    /// Sched rule 1's first entry (cold: once per executor).
    #[cold]
    #[inline(never)]
    fn init(
        &self,
        clock: Option<fn() -> u64>,
        driver: *mut (),
        driver_vt: &'static DriverVt,
        stacks: *mut (),
        stacks_vt: &'static crate::stack::pool::ProviderVt,
    ) {
        // With accounting (`clock`), the first run's ready time counts from here, not
        // from a zero reading.
        self.times.on.set(clock.is_some());
        if let Some(read) = clock {
            self.times.last.set(read());
        }
        self.mailbox.inbox.init();
        self.stacks.init(stacks, stacks_vt);
        self.driver.set(driver);
        self.driver_vt.set(Some(driver_vt));
        self.now_fn.set(driver_vt.now);
        self.now_ctx.set(driver);
        let word = self.mailbox.park.park_word();
        // SAFETY: sched rule 3; park rule 3: set once, before publication.
        self.mailbox.park.set_unparker(unsafe { (driver_vt.unparker)(driver, word) });
        // SAFETY: sched rule 3: the driver is not lent before the first entry.
        self.driver_debug.set(unsafe { (driver_vt.debug)(driver) });
        self.initialised.set(true);
        // Registry rule 1 (exec/debug.rs): pinned from here on (sched rule 1).
        crate::exec::debug::register(self);
    }

    /// This executor's identity as a task's owner: its mailbox's address, cast from the
    /// whole scheduler's (the first field of a `#[repr(C)]` struct), so the pointer keeps
    /// the provenance `Sched::of_owner` steps back with.
    #[inline(always)]
    pub(crate) fn owner_id(&self) -> *mut Mailbox {
        Self::owner_id_of(NonNull::from(self))
    }

    /// [`owner_id`](Self::owner_id) of a scheduler that may be gone: an address
    /// computation, no reference formed (the mailbox is the first field, `repr(C)`).
    pub(crate) fn owner_id_of(sched: NonNull<Sched>) -> *mut Mailbox {
        sched.as_ptr().cast::<Mailbox>()
    }

    /// The executor owning a task, from the task's `owner` (read on that executor's
    /// thread, inside a resume of the task or in the executor's own code).
    ///
    /// # Safety
    /// `owner` is a task's owner that an executor published (not null, `CLAIMING` or a
    /// dispatcher's sentinel), and that executor is alive for `'a`.
    #[inline(always)]
    pub(crate) unsafe fn of_owner<'a>(owner: *mut Mailbox) -> &'a Sched {
        // SAFETY: the caller's duty: an executor's `owner_id`, which points at the start
        // of a live `Sched` with its whole provenance.
        unsafe { &*owner.cast::<Sched>() }
    }

    /// The executor that owns `task`, read on that executor's thread inside a
    /// resume of the task; `None` for a task with no owner.
    #[inline(always)]
    pub(crate) fn of_task<'a>(task: NonNull<Header>) -> Option<&'a Sched> {
        // Relaxed: on the owner's thread the owner wrote it.
        let owner = task.hdr().owner.load(Ordering::Relaxed);
        // SAFETY: a task being resumed is owned by the executor resuming it, which is
        // alive while it runs the task (header rule 2).
        (!owner.is_null()).then(|| unsafe { Sched::of_owner(owner) })
    }

    /// Wake rule 1, on the owner's thread: no atomics.
    #[inline(always)]
    pub(crate) fn wake_local(&self, task: NonNull<Header>) {
        let header = hdr(task);
        match header.state.get() {
            state @ S::Suspended(_) => {
                if self.times.on.get() {
                    // Stamped with the latest read (acct.rs): no clock read here.
                    let times = &task.trailer().times;
                    let now = self.times.last.get();
                    crate::acct::ExecTimes::add(&times.suspended, now.saturating_sub(times.since.get()));
                    times.since.set(now);
                }
                self.disarm(task);
                // Room rule 5: a task waiting for room stays linked (its place kept).
                // The lifecycle's edge (Suspended, Wake) -> Ready, set without `step`'s
                // check: the state was just read as `Suspended`, and disarming its timer
                // does not change it.
                debug_assert_eq!(state.on(E::Wake), Ok(S::Ready));
                header.state.set(S::Ready);
                // SAFETY: a suspended task is in no run list.
                unsafe { self.ready.push(task) };
            }
            S::Running => header.set_flag(flag::WOKEN_WHILE_RUNNING),
            _ => {}
        }
    }

    /// Resumes one ready task: one item of work. With accounting (`A::ON`), one clock read
    /// at the end: it closes this run and starts the next (acct.rs).
    ///
    /// `hold`: the caller takes a yielding task back instead of its run-queue entry when
    /// it would be the next one popped anyway (sched rule 6): `Some(task)`, Ready and
    /// unqueued.
    #[inline(always)]
    pub(crate) fn resume<A: crate::acct::Accounting>(
        &self,
        task: NonNull<Header>,
        hold: bool,
    ) -> Option<NonNull<Header>> {
        let header = hdr(task);
        let start = self.times.last.get();
        if A::ON {
            let times = &task.trailer().times;
            crate::acct::ExecTimes::add(&times.ready_wait, start.saturating_sub(times.since.get()));
        }
        // Sched rule 5: popped from `ready`, so Attached (Start) or Ready (Resume).
        #[cfg(debug_assertions)]
        step(header, if header.state.get() == S::Attached { E::Start } else { E::Resume });
        #[cfg(not(debug_assertions))]
        step_known(header, E::Resume, S::Running);
        header.reason.set(crate::task::state::SuspendReason::Wait);
        let stats = &task.trailer().stats;
        stats.resumptions.set(stats.resumptions.get() + 1);
        let level = &self.stats.per_priority[header.prio.get().cpu.index()];
        level.set(level.get() + 1);
        self.stats.resumed.set(self.stats.resumed.get() + 1);
        let vtable = header.body.get().expect("keel bug: resuming a task with no body");
        let guard = PanicGuard { sched: self, task };
        let outcome = match vtable.exited {
            // SAFETY: as below; `exited` is set only in the vtable of a started fiber on
            // keel's own switch (fiber rule 9).
            Some(exited) => unsafe { crate::fiber::resume_inline(task, exited) },
            // SAFETY: the body bytes hold the body `vtable` was made for (installed
            // together at attach), and no borrow of scheduler or driver state is live
            // (sched rule 3).
            None => unsafe { (vtable.resume)(task) },
        };
        core::mem::forget(guard);
        if A::ON {
            let end = A::read();
            self.times.last.set(end);
            let ran = end.saturating_sub(start);
            let times = &task.trailer().times;
            crate::acct::ExecTimes::add(&times.running, ran);
            crate::acct::ExecTimes::add(&self.times.task, ran);
            if ran > times.longest_run.get() {
                times.longest_run.set(ran);
            }
            times.since.set(end);
        }
        match outcome {
            Step::Pending => {
                if header.flags.get() & (flag::QUEUED_FOR_ROOM | flag::GRANTED) != 0 {
                    self.after_poll_room(task);
                }
                if header.has_flag(flag::WOKEN_WHILE_RUNNING) {
                    header.clear_flag(flag::WOKEN_WHILE_RUNNING);
                    // Sched rule 5: its resume returned, so it is Running.
                    step_known(header, E::Yield, S::Ready);
                    // Sched rule 6: no task waits at its level or above, so a push would
                    // queue it at the head of the queue: the caller holds it instead.
                    if hold && self.ready.empty_down_to(header.prio.get().cpu.index()) {
                        return Some(task);
                    }
                    // SAFETY: a running task is in no run list.
                    unsafe { self.ready.push(task) };
                } else {
                    let reason = header.reason.get();
                    // Sched rule 5, as above.
                    step_known(header, E::Suspend(reason), S::Suspended(reason));
                }
            }
            Step::Done(result) => {
                // The switcher cleared the vtable (body rule 1).
                debug_assert!(header.body.get().is_none(), "keel bug: a returned body is still installed");
                // Inlined with its event known: the lifecycle step folds to a store.
                self.finish_inline(task, E::Return, result);
            }
        }
        None
    }

    /// The body is gone (returned or dropped): complete, or drain its i/o first.
    pub(super) fn finish(&self, task: NonNull<Header>, event: E, result: TaskResult) {
        self.finish_inline(task, event, result);
    }

    /// [`finish`](Self::finish), inlined where the event is a constant (a body's return in
    /// `resume`).
    #[inline(always)]
    fn finish_inline(&self, task: NonNull<Header>, event: E, result: TaskResult) {
        let header = hdr(task);
        self.disarm(task);
        // Room rule 5 (a lingering `GRANTED` goes with the flags at the next attach).
        self.leave_submit_queue(task);
        // Join rule 2: the words now, `done` when the run completes (after draining).
        task.trailer().record.stage(crate::task::join::Outcome::Done(result));
        if task.io_in_flight() > 0 {
            let mut cursor = task.trailer().initiated.front();
            while let Some(status_ptr) = cursor {
                // SAFETY: linked statuses are valid (io_status rule 2).
                let status = unsafe { status_ptr.as_ref() };
                self.driver_cancel(status.op_id());
                // SAFETY: `status_ptr` is linked in `initiated`.
                cursor = unsafe { task.trailer().initiated.next_of(status_ptr) };
            }
            step(header, if event == E::Return { E::ReturnWithIo } else { E::CancelQueuedWithIo });
        } else {
            if event == E::Return {
                // Sched rule 5: a body returns (or panics) only inside its resume, so the
                // task is Running.
                step_known(header, E::Return, S::Completed);
            } else {
                step(header, event);
            }
            self.completed_inline(task, false);
        }
    }

    /// A new run starts its accounting from zero, ready since the latest clock read.
    pub(super) fn reset_times(&self, task: NonNull<Header>) {
        // SAFETY: a header is 64-byte aligned (it is `#[repr(align(64))]`). The hint gives
        // the optimiser what a `&Header` argument did (these stores merge aligned).
        unsafe { core::hint::assert_unchecked(task.as_ptr().is_aligned()) };
        let times = &task.trailer().times;
        for counter in [&times.running, &times.suspended, &times.ready_wait, &times.longest_run] {
            counter.set(0);
        }
        times.since.set(self.times.last.get());
    }

    /// A new run counts its resumptions and i/o from zero, with or without accounting
    /// (`Executor::task_times` reports the run it names).
    #[inline(always)]
    pub(super) fn reset_counts(&self, task: NonNull<Header>) {
        let stats = &task.trailer().stats;
        for counter in [&stats.resumptions, &stats.io_initiated, &stats.io_completed] {
            counter.set(0);
        }
    }

    /// The run ended. `in_reap`: called from a reap's sink (sched rule 3).
    pub(super) fn completed(&self, task: NonNull<Header>, in_reap: bool) {
        self.completed_inline(task, in_reap);
    }

    /// [`completed`](Self::completed), inlined into `finish` (a body's return).
    #[inline(always)]
    fn completed_inline(&self, task: NonNull<Header>, in_reap: bool) {
        let header = hdr(task);
        // Join rules 2-3: before the release below, after which the task may be another's.
        self.complete_joiners(task);
        // Statuses completed but never taken are marked reaped as they leave the list
        // (io_status rule 1): one that outlives the run (kept outside the body) must not
        // unlink itself later from a list it is no longer in.
        if !task.trailer().completed.is_empty() {
            crate::io_status::block::take_completed(task.trailer(), usize::MAX);
        }
        if let Some(stack) = task.trailer().pending_stack.take() {
            self.pool_stack(stack, in_reap);
        }
        self.attached.set(self.attached.get() - 1);
        self.stats.completed.set(self.stats.completed.get() + 1);
        if header.has_flag(flag::DISPATCHED | flag::RELEASE_ON_COMPLETE) {
            core::hint::cold_path();
            self.completed_elsewhere(task);
        }
    }

    /// The end of a run that came from a dispatcher or another thread (cold).
    #[inline(never)]
    fn completed_elsewhere(&self, task: NonNull<Header>) {
        let header = hdr(task);
        if header.has_flag(flag::DISPATCHED)
            && let Some((dispatcher, _)) = self.dispatcher.get()
        {
            dispatcher.note_completed();
        }
        if header.has_flag(flag::RELEASE_ON_COMPLETE) {
            // Last: after this the task may belong to another thread.
            self.release_completed(task);
        }
    }

    /// Gives a finished fiber's stack back to the pool (cold: a fiber that drained).
    #[cold]
    pub(super) fn pool_stack(&self, stack: crate::stack::Stack, in_reap: bool) {
        // Inside a reap the driver is borrowed: stamp with the reading taken before it.
        let at = if in_reap && self.cfg.trim_spare_stacks_after.is_some() {
            self.clock.get()
        } else if in_reap {
            Instant::ZERO
        } else {
            self.now_if_trimming()
        };
        // The provider is user code: while it runs the driver counts as lent (sched rule
        // 3; inside a reap a reference to it is live). What it holds back is applied
        // after the reap (`apply_held_back`), or here outside one.
        let state = self.driver_state.get();
        self.set_lent(state | LENT);
        #[cfg(debug_assertions)]
        let was = self.reaping.replace(false);
        // SAFETY: fiber rule 4: the fiber has exited and its i/o has been reaped, so
        // nothing uses the stack any more.
        unsafe { self.stacks.put(stack, at) };
        #[cfg(debug_assertions)]
        self.reaping.set(was);
        self.set_lent(self.driver_state.get() & !LENT | (state & LENT));
        if !in_reap {
            self.apply_held_back();
        }
    }

    /// The time for the stack pool's bookkeeping: read only if trimming is configured
    /// (not inside a reap: `pool_stack`).
    #[inline(always)]
    pub(crate) fn now_if_trimming(&self) -> Instant {
        if self.cfg.trim_spare_stacks_after.is_some() { self.now() } else { Instant::ZERO }
    }
}

/// Ends a run whose body panicked out of `resume` (only with unwinding panics), in its
/// poll or in its `Drop` after it returned `Ready`: the task completes as `Panicked` and
/// its body is dropped if it is still there (body rule 1: once), so the executor stays
/// usable and its drop does not meet a task stuck in Running. The panic goes on out of
/// `run`. Costs nothing unless a panic unwinds.
struct PanicGuard<'a> {
    sched: &'a Sched,
    task: NonNull<Header>,
}

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        let header = hdr(self.task);
        let why = if header.body.get().is_some() {
            // The poll panicked. A future can always be dropped; a fiber cannot panic out
            // of its stack. A `Drop` that panics here, during the unwind, aborts (Rust's
            // rule for a panic while panicking).
            let _ = self.sched.drop_body(self.task);
            "the task body panicked while being resumed"
        } else {
            // The body returned and its `Drop` panicked; it was taken first (body rule 1).
            "the task body panicked while being dropped"
        };
        self.sched.finish(self.task, E::Return, Err(TaskError::Panicked(why)));
    }
}
