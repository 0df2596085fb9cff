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
//!    first: a `with_driver` closure (driver rule 1 in exec/mod.rs). The run loop's
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
//!
//! Waiting for room to submit (cited as "room rule N"). A body may poll any number of
//! keel futures in one poll (join, select), so waiting for room is not a suspension
//! reason of its own but a membership, kept apart from the task's state:
//! 1. A task is in its I/O priority's `submit_waiters` list exactly when its
//!    `QUEUED_FOR_ROOM` flag is set. The list has its own links (`submit_links`), so a
//!    task may wait for room while it is also ready, running, or suspended for any
//!    reason (a timer armed, i/o in flight); `reason` is only what its state reports.
//! 2. `wait_for_submit` (a refused initiator, future or fiber, status or wake token)
//!    sets `ASKED_ROOM` and links the task if it is not linked: asking twice in one poll
//!    (two initiates joined) queues it once, and a task that asks again keeps its place.
//! 3. When a poll returns `Pending`, a task still linked that did not ask in that poll
//!    (the asking future was dropped: a select took the other branch) leaves the list;
//!    one that asked stays, and `ASKED_ROOM` is cleared for the next poll. A grant not
//!    used in the poll it was for lapses (`GRANTED` is cleared).
//! 4. A grant unlinks the task before it wakes it (`wake_local` does nothing to a task
//!    that is not suspended), so granting never meets the same task twice.
//! 5. Every path that ends the run or cancels it unlinks it: `finish` (return, cancel of
//!    a queued task, executor drop), `wake_cancelled`, `cancel_io`, `abandon`. A wake for
//!    another reason leaves the task linked (its place kept): its next poll asks again or
//!    leaves by rule 3.

use crate::clock::Instant;
use crate::driver::{DriverVt, IoResult, IoToken};
use crate::error::{AttachError, TaskError, TaskResult};
use crate::exec::Config;
use crate::exec::run_queue::RunQueue;
use crate::exec::work_source::WorkSource;
use crate::io_status::block::IoStatus;
use crate::list::List;
use crate::mailbox::Mailbox;
use crate::mailbox::inbox::Pop;
use crate::stack::pool::StackPool;
use crate::sync::Ordering;
use crate::task::TaskHandle;
use crate::task::body::{BodyVTable, Step, place};
use crate::task::header::{Header, OwnedLink, SlotPtr, flag};
use crate::task::state::{TaskEvent as E, TaskState as S};
use crate::timer::TimerHeap;
use core::cell::Cell;
use core::ptr::NonNull;

/// Executor counters (owner-local).
#[derive(Default)]
pub(crate) struct StatsCells {
    pub(crate) resumed: Cell<u64>,
    pub(crate) completed: Cell<u64>,
    pub(crate) per_priority: [Cell<u64>; 3],
    pub(crate) timers_fired: Cell<u64>,
    pub(crate) inbox_taken: Cell<u64>,
    pub(crate) io_submitted: Cell<u64>,
    pub(crate) io_completed: Cell<u64>,
    pub(crate) parks: Cell<u64>,
    pub(crate) fp_control_restored: Cell<u64>,
}

/// Why claiming an unowned task failed.
pub(crate) enum Claim {
    /// The handle is stale or the task destroyed.
    Stale,
    /// Another executor claimed it first.
    Raced,
}

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
    driver: Cell<*mut ()>,
    driver_vt: Cell<Option<&'static DriverVt>>,
    /// Sched rule 3: `LENT` while a reference to the driver is live (lent to a closure,
    /// or reaping); `POISONED` once the executor may never reap again (driver rule 3).
    /// One byte, so the run loop's pass tests both with one load.
    pub(crate) driver_state: Cell<u8>,
    /// The run loop's last clock reading (what `now` answers while the driver is lent).
    clock: Cell<Instant>,
    /// What `now` calls, with what: the driver's clock, or while the driver is lent,
    /// `clock` (switched by `lend`, so `now` itself tests nothing).
    now_fn: Cell<unsafe fn(*mut ()) -> Instant>,
    now_ctx: Cell<*mut ()>,
    /// Cancels and retargets held back while the driver was lent (driver rule 3).
    deferred: [Cell<Option<Deferred>>; DEFERRED_DRIVER_OPS],
    deferred_len: Cell<usize>,
    /// Inside a reap's sink (debug builds check that it reaches no driver: sched rule 3).
    #[cfg(debug_assertions)]
    pub(crate) reaping: Cell<bool>,
    pub(crate) attached: Cell<usize>,
    /// Tasks waiting for room to submit, by I/O priority (room rule 1).
    pub(crate) submit_waiters: [List<Header, crate::task::header::SubmitLink>; 3],
    pub(crate) stacks: StackPool,
    pub(crate) cfg: Config,
    pub(crate) stats: StatsCells,
    pub(crate) times: crate::acct::ExecTimes,
    initialised: Cell<bool>,
    /// Inside `run` (a task calling `run` again is refused).
    pub(crate) running: Cell<bool>,
}

#[inline(always)]
fn hdr(h: NonNull<Header>) -> &'static Header {
    // Every header pointer the scheduler handles is into a `'static` TaskSlot; the
    // reference is for the header's own fields (provenance rule 2).
    h.hdr()
}

#[inline(always)]
fn step(h: &Header, event: E) {
    match h.state.get().on(event) {
        Ok(next) => h.state.set(next),
        Err(e) => panic!("keel bug: {e}"),
    }
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
            stacks: StackPool::new(cfg.max_spare_stacks),
            cfg,
            stats: StatsCells::default(),
            times: crate::acct::ExecTimes::default(),
            initialised: Cell::new(false),
            running: Cell::new(false),
        }
    }

    /// Sched rule 1: called on every entry through a pinned executor.
    #[inline(always)]
    pub(crate) fn ensure_init(
        &self,
        accounting: bool,
        driver: *mut (),
        vt: &'static DriverVt,
        stacks: *mut (),
        stacks_vt: &'static crate::stack::pool::ProviderVt,
    ) {
        if !self.initialised.get() {
            self.times.on.set(accounting);
            self.mailbox.inbox.init();
            self.stacks.init(stacks, stacks_vt);
            self.driver.set(driver);
            self.driver_vt.set(Some(vt));
            self.now_fn.set(vt.now);
            self.now_ctx.set(driver);
            let word = self.mailbox.park.park_word();
            // SAFETY: sched rule 3; park rule 3: set once, before publication.
            self.mailbox.park.set_unparker(unsafe { (vt.unparker)(driver, word) });
            self.initialised.set(true);
        }
    }

    fn vt(&self) -> &'static DriverVt {
        self.driver_vt.get().expect("keel bug: executor used before init")
    }

    /// The driver pointer if its type is `D`.
    pub(crate) fn driver_as<D: 'static>(&self) -> Option<*mut D> {
        (self.vt().type_id == core::any::TypeId::of::<D>()).then(|| self.driver.get() as *mut D)
    }

    /// The driver's clock; while the driver is lent, the run loop's last reading (sched
    /// rule 3).
    #[inline(always)]
    pub(crate) fn now(&self) -> Instant {
        // SAFETY: sched rule 3: not lent, this is the driver's `now` (no reference to
        // the driver is live, and it runs no user code); lent, it reads `clock`.
        unsafe { (self.now_fn.get())(self.now_ctx.get()) }
    }

    /// `now`, remembered as what `now` answers while the driver is lent: the run loop's
    /// own readings (timers, parking, before a reap that may pool a stack).
    pub(crate) fn read_clock(&self) -> Instant {
        let t = self.now();
        self.clock.set(t);
        t
    }

    pub(crate) fn driver_cancel(&self, id: crate::driver::OpId) {
        if self.is_lent() {
            return self.defer(Deferred::Cancel(id));
        }
        self.debug_not_reaping();
        // SAFETY: as in `now`.
        unsafe { (self.vt().cancel)(self.driver.get(), id) }
    }

    pub(crate) fn driver_retarget(&self, id: crate::driver::OpId, token: IoToken) {
        if self.is_lent() {
            return self.defer(Deferred::Retarget(id, token));
        }
        self.debug_not_reaping();
        // SAFETY: as in `now`.
        unsafe { (self.vt().retarget)(self.driver.get(), id, token) }
    }

    /// Driver rule 3: hold `op` back until the driver is no longer lent.
    #[cold]
    fn defer(&self, op: Deferred) {
        let n = self.deferred_len.get();
        match self.deferred.get(n) {
            Some(slot) => {
                slot.set(Some(op));
                self.deferred_len.set(n + 1);
            }
            // A retarget that cannot be held back leaves a token naming memory that may
            // be freed: never reap again (no completion is routed through it).
            None => self.driver_state.set(self.driver_state.get() | POISONED),
        }
    }

    /// Runs a driver crate's `f(driver, id)` through `tramp` now, or holds it back while
    /// the driver is lent (driver rule 3).
    pub(crate) fn driver_call(&self, tramp: DriverCall, f: *const (), id: crate::driver::OpId) {
        if self.is_lent() {
            return self.defer(Deferred::Call(tramp, f, id));
        }
        self.debug_not_reaping();
        // SAFETY: as in `now`; `tramp` was made for this driver's type with `f`
        // (`DriverPtr::call_or_defer`).
        unsafe { tramp(self.driver.get(), f, id) }
    }

    /// Sets the lend flag (sched rule 3) until the guard drops; `DriverBusy` if it is set.
    #[inline(always)]
    pub(crate) fn lend(&self) -> Result<Lent<'_>, crate::error::DriverBusy> {
        let st = self.driver_state.get();
        if st & LENT != 0 {
            return Err(crate::error::DriverBusy);
        }
        self.set_lent(st | LENT);
        Ok(Lent(self))
    }

    /// Sets `driver_state` and points `now` at the driver or, lent, at `clock`.
    #[inline(always)]
    pub(crate) fn set_lent(&self, st: u8) {
        self.driver_state.set(st);
        if st & LENT != 0 {
            self.now_fn.set(read_clock_cell);
            self.now_ctx.set(&self.clock as *const Cell<Instant> as *mut ());
        } else {
            self.now_fn.set(self.vt().now);
            self.now_ctx.set(self.driver.get());
        }
    }

    /// Whether the driver is lent (sched rule 3).
    #[inline(always)]
    pub(crate) fn is_lent(&self) -> bool {
        self.driver_state.get() & LENT != 0
    }

    /// Whether too much was held back (driver rule 3): never reap again.
    #[inline(always)]
    pub(crate) fn is_poisoned(&self) -> bool {
        self.driver_state.get() & POISONED != 0
    }

    /// Sched rule 3: a reap's sink reaches no driver (debug builds).
    #[inline(always)]
    fn debug_not_reaping(&self) {
        #[cfg(debug_assertions)]
        assert!(!self.reaping.get(), "keel bug: a reap's sink reached the driver (sched rule 3)");
    }

    /// Applies what was held back while the driver was lent, if anything (driver rule 3):
    /// after a reap whose sink held something back.
    #[inline(always)]
    pub(crate) fn apply_held_back(&self) {
        if self.deferred_len.get() != 0 && !self.is_lent() {
            self.apply_deferred();
        }
    }

    /// Applies what was held back while the driver was lent, in order (driver rule 3).
    #[cold]
    fn apply_deferred(&self) {
        let n = self.deferred_len.replace(0);
        for slot in &self.deferred[..n] {
            match slot.take() {
                Some(Deferred::Cancel(id)) => self.driver_cancel(id),
                Some(Deferred::Retarget(id, token)) => self.driver_retarget(id, token),
                Some(Deferred::Call(tramp, f, id)) => self.driver_call(tramp, f, id),
                None => {}
            }
        }
    }

    /// This executor's identity as a task's owner: its mailbox's address, cast from the
    /// whole scheduler's (the first field of a `#[repr(C)]` struct), so the pointer keeps
    /// the provenance `Sched::of_owner` steps back with.
    #[inline(always)]
    pub(crate) fn owner_id(&self) -> *mut Mailbox {
        (self as *const Sched).cast_mut().cast::<Mailbox>()
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

    /// The executor that owns the task at `h`, read on that executor's thread inside a
    /// resume of the task; `None` for a task with no owner.
    #[inline(always)]
    pub(crate) fn of_task<'a>(h: NonNull<Header>) -> Option<&'a Sched> {
        // Relaxed: on the owner's thread the owner wrote it.
        let owner = h.hdr().owner.load(Ordering::Relaxed);
        // SAFETY: a task being resumed is owned by the executor resuming it, which is
        // alive while it runs the task (header rule 2).
        (!owner.is_null()).then(|| unsafe { Sched::of_owner(owner) })
    }

    /// Attaches run `handle` of a task with `body`, returning the new run's handle.
    pub(crate) fn attach<B>(
        &self,
        handle: TaskHandle,
        body: B,
        vt: &'static BodyVTable,
    ) -> Result<TaskHandle, AttachError<B>> {
        let h = handle.header();
        let t = hdr(h);
        // Acquire: pairs with the Release that published a previous owner's release.
        let owner = t.owner.load(Ordering::Acquire);
        if owner.is_null() {
            match self.claim(handle) {
                Ok(()) => {}
                Err(Claim::Stale) => return Err(AttachError::Stale(body)),
                Err(Claim::Raced) => return Err(AttachError::OwnedElsewhere(body)),
            }
        } else if owner != self.owner_id() {
            return Err(AttachError::OwnedElsewhere(body));
        }
        // Relaxed: we are the owner, and the owner is the only writer (wake rule 2).
        let generation = t.generation.load(Ordering::Relaxed);
        if generation != handle.generation() {
            return Err(AttachError::Stale(body));
        }
        if t.state.get().is_attached() {
            return Err(AttachError::AlreadyAttached(body));
        }
        // SAFETY: we own the task and it is not attached, so its body bytes are free.
        unsafe { place(h, body)? };
        let next_gen = generation.wrapping_add(1);
        // Release: pairs with the Acquire generation check in `wake_by_gen`.
        t.generation.store(next_gen, Ordering::Release);
        t.body.set(Some(vt));
        t.flags.set(0);
        h.trailer().result.set(None);
        if self.times.on.get() {
            self.reset_times(h);
        }
        step(t, E::Attach);
        self.attached.set(self.attached.get() + 1);
        // SAFETY: an attached task that was Idle or Completed is in no run list.
        unsafe { self.ready.push(h) };
        Ok(TaskHandle::from_parts(h, next_gen))
    }

    /// Takes an unowned task for this executor (cold: one CAS). Fails if the handle is
    /// stale or the task was destroyed.
    pub(crate) fn claim(&self, handle: TaskHandle) -> Result<(), Claim> {
        let h = handle.header();
        let t = hdr(h);
        // AcqRel: Release publishes this executor's initialised inbox to wakers that load
        // `owner` with Acquire; Acquire sees the previous owner's last writes to the task.
        if t.owner
            .compare_exchange(core::ptr::null_mut(), self.owner_id(), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Claim::Raced);
        }
        // Acquire: pairs with destroy's Release of `live`.
        let live = h.trailer().live.load(Ordering::Acquire) != 0;
        if !live || t.generation.load(Ordering::Relaxed) != handle.generation() {
            // Release: hand it back exactly as we found it.
            t.owner.store(core::ptr::null_mut(), Ordering::Release);
            return Err(Claim::Stale);
        }
        t.notify.open();
        // SAFETY: an unowned task is in no executor's owned list.
        unsafe { self.owned.push_back(h) };
        Ok(())
    }

    /// Gives up an owned, unattached task (wake rule 6). Returns false while a wake is in
    /// flight to this executor.
    pub(crate) fn release(&self, h: NonNull<Header>) -> bool {
        let t = hdr(h);
        if t.state.get().is_attached() {
            return false;
        }
        for _ in 0..2 {
            // Relaxed: owner-written.
            if t.notify.close(t.generation.load(Ordering::Relaxed)) {
                step(t, E::Release);
                // SAFETY: owned tasks are in `owned`.
                unsafe { self.owned.remove(h) };
                // Release: pairs with the Acquire in a later claim.
                t.owner.store(core::ptr::null_mut(), Ordering::Release);
                return true;
            }
            self.drain_inbox(self.cfg.inbox_batch);
        }
        false
    }

    /// Wake rule 1, on the owner's thread: no atomics.
    #[inline(always)]
    pub(crate) fn wake_local(&self, h: NonNull<Header>) {
        let t = hdr(h);
        match t.state.get() {
            S::Suspended(_) => {
                if self.times.on.get() {
                    // Stamped with the latest read (acct.rs): no clock read here.
                    let tt = &h.trailer().times;
                    let now = self.times.last.get();
                    crate::acct::ExecTimes::add(&tt.suspended, now.saturating_sub(tt.since.get()));
                    tt.since.set(now);
                }
                self.disarm(h);
                // Room rule 5: a task waiting for room stays linked (its place kept).
                step(t, E::Wake);
                // SAFETY: a suspended task is in no run list.
                unsafe { self.ready.push(h) };
            }
            S::Running => t.set_flag(flag::WOKEN_WHILE_RUNNING),
            _ => {}
        }
    }

    /// Resumes one ready task: one item of work. With accounting (`A::ON`), one clock read
    /// at the end: it closes this run and starts the next (acct.rs).
    #[inline(always)]
    pub(crate) fn resume<A: crate::acct::Accounting>(&self, h: NonNull<Header>) {
        let t = hdr(h);
        let start = self.times.last.get();
        if A::ON {
            let tt = &h.trailer().times;
            crate::acct::ExecTimes::add(&tt.ready_wait, start.saturating_sub(tt.since.get()));
        }
        step(t, if t.state.get() == S::Attached { E::Start } else { E::Resume });
        t.reason.set(crate::task::state::SuspendReason::Wait);
        let stats = &h.trailer().stats;
        stats.resumptions.set(stats.resumptions.get() + 1);
        let level = &self.stats.per_priority[t.prio.get().cpu.index()];
        level.set(level.get() + 1);
        self.stats.resumed.set(self.stats.resumed.get() + 1);
        let vt = t.body.get().expect("keel bug: resuming a task with no body");
        let guard = PanicGuard { sched: self, h };
        // SAFETY: the body bytes hold the body `vt` was made for (installed together at
        // attach), and no borrow of scheduler or driver state is live (sched rule 3).
        let outcome = unsafe { (vt.resume)(h) };
        core::mem::forget(guard);
        if A::ON {
            let end = A::read();
            self.times.last.set(end);
            let ran = end.saturating_sub(start);
            let tt = &h.trailer().times;
            crate::acct::ExecTimes::add(&tt.running, ran);
            crate::acct::ExecTimes::add(&self.times.task, ran);
            if ran > tt.longest_run.get() {
                tt.longest_run.set(ran);
            }
            tt.since.set(end);
        }
        match outcome {
            Step::Pending => {
                if t.flags.get() & (flag::QUEUED_FOR_ROOM | flag::GRANTED) != 0 {
                    self.after_poll_room(h);
                }
                if t.has_flag(flag::WOKEN_WHILE_RUNNING) {
                    t.clear_flag(flag::WOKEN_WHILE_RUNNING);
                    step(t, E::Yield);
                    // SAFETY: a running task is in no run list.
                    unsafe { self.ready.push(h) };
                } else {
                    step(t, E::Suspend(t.reason.get()));
                }
            }
            Step::Done(result) => {
                // The switcher cleared the vtable (body rule 1).
                debug_assert!(t.body.get().is_none(), "keel bug: a returned body is still installed");
                self.finish(h, E::Return, result);
            }
        }
    }

    /// The body is gone (returned or dropped): complete, or drain its i/o first.
    fn finish(&self, h: NonNull<Header>, event: E, result: TaskResult) {
        let t = hdr(h);
        self.disarm(h);
        // Room rule 5 (a lingering `GRANTED` goes with the flags at the next attach).
        self.leave_submit_queue(h);
        h.trailer().result.set(Some(result));
        if h.io_in_flight() > 0 {
            let mut s = h.trailer().initiated.front();
            while let Some(st) = s {
                // SAFETY: linked statuses are valid (io_status rule 2).
                let st_ref = unsafe { st.as_ref() };
                self.driver_cancel(st_ref.op_id());
                // SAFETY: `st` is linked in `initiated`.
                s = unsafe { h.trailer().initiated.next_of(st) };
            }
            step(t, if event == E::Return { E::ReturnWithIo } else { E::CancelQueuedWithIo });
        } else {
            step(t, event);
            self.completed(h, false);
        }
    }

    /// Dispatch rule 4, the worker's re-check after its announce (park rule 2): whether
    /// the dispatcher has something for us: a waiting task, or a quit token we could take
    /// now (dispatch rule 5: only an idle worker takes one; a worker with tasks of its
    /// own parks until they wake it, rather than passing again and again).
    pub(crate) fn dispatcher_recheck(&self) -> bool {
        let idle = self.attached.get() == 0;
        self.dispatcher.get().is_some_and(|(d, _)| d.has_work() || (idle && d.quit_pending()))
    }

    /// Dispatch rule 2: with no work of our own, take the highest-priority dispatched task.
    pub(crate) fn take_dispatched(&self) -> bool {
        let Some((d, _)) = self.dispatcher.get() else { return false };
        let Some(h) = d.pop() else { return false };
        if !d.claim(h, self.owner_id()) {
            // Unreachable while dispatch rule 1's tag holds: a header is on a level stack
            // only from its submit's push (owner = the sentinel, rule 2) to the one pop
            // that takes it, and only that popper's claim changes the owner; pops are
            // linearised by the tagged CAS. So a failed claim means the stack handed
            // this task out twice (an ABA past the tag). The other taker owns it: pushing
            // it back would run it twice, so report it (debug: panic) and take nothing.
            d.note_double_take();
            debug_assert!(false, "keel bug: a dispatched task was taken twice (ABA past the tag, dispatch rule 1)");
            return false;
        }
        // The submitter's writes are visible (claim's Acquire); the notify word still holds
        // QUEUED from the task's release: open it to wakes now that we own it.
        hdr(h).notify.open();
        self.finish_remote_attach(h);
        true
    }

    /// Remote rule 2, the owner's half: the task a foreign thread claimed and placed a body
    /// in is now ours: own it, attach it, queue it.
    fn finish_remote_attach(&self, h: NonNull<Header>) {
        let t = hdr(h);
        if self.times.on.get() {
            self.reset_times(h);
        }
        // SAFETY: a claimed task was unowned, so it is in no executor's owned list.
        unsafe { self.owned.push_back(h) };
        step(t, E::Attach);
        self.attached.set(self.attached.get() + 1);
        // SAFETY: an attached, not-started task is in no run list.
        unsafe { self.ready.push(h) };
    }

    /// A new run starts its accounting from zero, ready since the latest clock read.
    fn reset_times(&self, h: NonNull<Header>) {
        // SAFETY: a header is 64-byte aligned (it is `#[repr(align(64))]`). The hint gives
        // the optimiser what a `&Header` argument did (these stores merge aligned).
        unsafe { core::hint::assert_unchecked(h.as_ptr().is_aligned()) };
        let tt = &h.trailer().times;
        for c in [&tt.running, &tt.suspended, &tt.ready_wait, &tt.longest_run] {
            c.set(0);
        }
        tt.since.set(self.times.last.get());
        let st = &h.trailer().stats;
        for c in [&st.resumptions, &st.io_initiated, &st.io_completed] {
            c.set(0);
        }
    }

    /// Remote rule 4: give up a completed task attached from another thread.
    fn release_completed(&self, h: NonNull<Header>) {
        let t = hdr(h);
        // Relaxed: owner-written.
        if t.notify.close(t.generation.load(Ordering::Relaxed)) {
            step(t, E::Release);
            // SAFETY: owned tasks are in `owned`.
            unsafe { self.owned.remove(h) };
            // Release: the last access; pairs with the next claimer's Acquire.
            t.owner.store(core::ptr::null_mut(), Ordering::Release);
        } else {
            // A wake is in flight to us: release when its node is taken (drain_inbox).
            t.set_flag(flag::RELEASE_PENDING);
        }
    }

    /// The run ended. `in_reap`: called from a reap's sink (sched rule 3).
    fn completed(&self, h: NonNull<Header>, in_reap: bool) {
        let t = hdr(h);
        // Statuses completed but never taken are marked reaped as they leave the list
        // (io_status rule 1): one that outlives the run (kept outside the body) must not
        // unlink itself later from a list it is no longer in.
        if !h.trailer().completed.is_empty() {
            crate::io_status::block::take_completed(h.trailer(), usize::MAX);
        }
        if let Some(stack) = h.trailer().pending_stack.take() {
            self.pool_stack(stack, in_reap);
        }
        self.attached.set(self.attached.get() - 1);
        self.stats.completed.set(self.stats.completed.get() + 1);
        if t.has_flag(flag::DISPATCHED)
            && let Some((d, _)) = self.dispatcher.get()
        {
            d.note_completed();
        }
        if t.has_flag(flag::RELEASE_ON_COMPLETE) {
            // Last: after this the task may belong to another thread.
            self.release_completed(h);
        }
    }

    /// Gives a finished fiber's stack back to the pool (cold: a fiber that drained).
    #[cold]
    fn pool_stack(&self, stack: crate::stack::Stack, in_reap: bool) {
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
        let st = self.driver_state.get();
        self.set_lent(st | LENT);
        #[cfg(debug_assertions)]
        let was = self.reaping.replace(false);
        // SAFETY: fiber rule 4: the fiber has exited and its i/o has been reaped, so
        // nothing uses the stack any more.
        unsafe { self.stacks.put(stack, at) };
        #[cfg(debug_assertions)]
        self.reaping.set(was);
        self.set_lent(self.driver_state.get() & !LENT | (st & LENT));
        if !in_reap {
            self.apply_held_back();
        }
    }

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
            let h = unsafe { Header::from_inbox(node) };
            let t = hdr(h);
            self.stats.inbox_taken.set(self.stats.inbox_taken.get() + 1);
            if t.notify.attach_pending() {
                // Remote rule 2: a foreign attach, whole now (our pop acquired it): we are
                // its owner from here, before `take` opens it to wakers (which load
                // `owner` after their CAS on the word acquires `take`'s Release).
                // Relaxed: ordered before wakers by `take`; our own thread reads it after.
                t.owner.store(self.owner_id(), Ordering::Relaxed);
            }
            let (woken, attach) = t.notify.take();
            if attach {
                self.finish_remote_attach(h);
            } else if woken == t.generation.load(Ordering::Relaxed) {
                // Relaxed above: owner-written generation.
                self.wake_local(h);
            }
            if t.has_flag(flag::RELEASE_PENDING) && t.state.get() == S::Completed {
                t.clear_flag(flag::RELEASE_PENDING);
                self.release_completed(h);
            }
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

    /// Removes a queued or suspended body without resuming it (cancel, executor drop, a
    /// panicking resume). Returns false, keeping the body, if it cannot be dropped (a
    /// started fiber). The body is taken before its `Drop` runs (body rule 1): if that
    /// `Drop` panics, no body is installed any more, and the caller's [`DropGuard`]
    /// completes the task.
    pub(crate) fn drop_body(&self, h: NonNull<Header>) -> bool {
        let t = hdr(h);
        let Some(vt) = t.body.get() else { return true };
        t.body.set(None);
        // SAFETY: the body bytes hold the body `vt` was made for; it is not running, and
        // with its vtable cleared nothing else can drop or resume it.
        if unsafe { (vt.drop)(h) } {
            return true;
        }
        // Not droppable (fiber rule 2): `drop` touched nothing; put the vtable back.
        t.body.set(Some(vt));
        false
    }

    /// Whether the task's body is a fiber that has started (fiber rule 2: it cannot be
    /// dropped, only resumed with `Cancelled` until it returns). A fiber starts at its
    /// first resume, which is also when its task leaves `Attached`.
    pub(crate) fn is_started_fiber(t: &Header) -> bool {
        t.state.get() != S::Attached && t.body.get().is_some_and(|vt| vt.kind != crate::switch::SwitcherKind::Stackless)
    }

    /// Drops the body of queued task `h` (`Attached` or `Ready`, not a started fiber) and
    /// completes it as cancelled (edge 8, or 15 with i/o in flight). `queued`: it is in the
    /// run queue. A body `Drop` that panics completes the task as `Panicked` instead, and
    /// the panic goes on (body rule 1).
    pub(crate) fn cancel_queued(&self, h: NonNull<Header>, queued: bool) {
        if queued {
            // SAFETY: the caller says it is in the run queue.
            unsafe { self.ready.remove(h) };
        }
        let guard = DropGuard { sched: self, h };
        if !self.drop_body(h) {
            panic!("keel bug: a started fiber's body was dropped");
        }
        core::mem::forget(guard);
        self.finish_cancelled(h);
    }

    /// The time for the stack pool's bookkeeping: read only if trimming is configured
    /// (not inside a reap: `pool_stack`).
    #[inline(always)]
    pub(crate) fn now_if_trimming(&self) -> Instant {
        if self.cfg.trim_spare_stacks_after.is_some() { self.now() } else { Instant::ZERO }
    }

    pub(crate) fn finish_cancelled(&self, h: NonNull<Header>) {
        self.finish(h, E::CancelQueued, Err(TaskError::Cancelled));
    }
}

/// Cancels and retargets an executor holds back while its driver is lent, at most
/// (driver rule 3 in exec/mod.rs).
pub const DEFERRED_DRIVER_OPS: usize = 16;

/// `now` before initialisation (sched rule 1: never reached).
///
/// # Safety
/// None; unsafe only to fit `now_fn`.
unsafe fn not_initialised(_: *mut ()) -> Instant {
    panic!("keel bug: executor used before init")
}

/// `now` while the driver is lent: the run loop's last reading, in the `Cell` at `p`.
///
/// # Safety
/// `p` is a live `Cell<Instant>` of this thread.
unsafe fn read_clock_cell(p: *mut ()) -> Instant {
    // SAFETY: the caller's contract (`set_lent` passes the scheduler's `clock`).
    unsafe { (*(p as *const Cell<Instant>)).get() }
}

/// `driver_state` bits.
pub(crate) const LENT: u8 = 1;
pub(crate) const POISONED: u8 = 2;

/// A driver call held back while the driver was lent.
#[derive(Copy, Clone)]
enum Deferred {
    Cancel(crate::driver::OpId),
    Retarget(crate::driver::OpId, IoToken),
    Call(DriverCall, *const (), crate::driver::OpId),
}

/// A driver crate's call on its driver, type-erased: `(driver, f, id)` runs `f` (a
/// `fn(&mut D, OpId)` for the driver's type `D`) on the driver.
pub(crate) type DriverCall = unsafe fn(*mut (), *const (), crate::driver::OpId);

/// The lend flag, set (sched rule 3); clearing it applies what was held back.
pub(crate) struct Lent<'a>(&'a Sched);

impl Drop for Lent<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.set_lent(self.0.driver_state.get() & !LENT);
        if self.0.deferred_len.get() != 0 {
            self.0.apply_deferred();
        }
    }
}

/// Ends a run whose body panicked out of `resume` (only with unwinding panics), in its
/// poll or in its `Drop` after it returned `Ready`: the task completes as `Panicked` and
/// its body is dropped if it is still there (body rule 1: once), so the executor stays
/// usable and its drop does not meet a task stuck in Running. The panic goes on out of
/// `run`. Costs nothing unless a panic unwinds.
struct PanicGuard<'a> {
    sched: &'a Sched,
    h: NonNull<Header>,
}

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        let t = hdr(self.h);
        let why = if t.body.get().is_some() {
            // The poll panicked. A future can always be dropped; a fiber cannot panic out
            // of its stack. A `Drop` that panics here, during the unwind, aborts (Rust's
            // rule for a panic while panicking).
            let _ = self.sched.drop_body(self.h);
            "the task body panicked while being resumed"
        } else {
            // The body returned and its `Drop` panicked; it was taken first (body rule 1).
            "the task body panicked while being dropped"
        };
        self.sched.finish(self.h, E::Return, Err(TaskError::Panicked(why)));
    }
}

/// Completes a queued task whose body `Drop` panicked (body rule 1): armed around
/// `drop_body` by cancel and executor drop, with the task out of every queue and in
/// `Attached` or `Ready`. The task completes as `Panicked` (its slot reusable, its i/o
/// drained first as for any cancel); the panic goes on. Costs nothing unless a panic
/// unwinds.
pub(crate) struct DropGuard<'a> {
    pub(crate) sched: &'a Sched,
    pub(crate) h: NonNull<Header>,
}

impl Drop for DropGuard<'_> {
    fn drop(&mut self) {
        self.sched.finish(
            self.h,
            E::CancelQueued,
            Err(TaskError::Panicked("the task body panicked while being dropped")),
        );
    }
}

impl Sched {
    /// Whether the executor's `max_io_in_flight` is reached.
    #[inline(always)]
    pub(crate) fn at_io_limit<D: crate::Driver>(&self, driver: *mut D) -> bool {
        // SAFETY: sched rule 3: the driver pointer is valid and unborrowed here.
        self.cfg.max_io_in_flight.is_some_and(|l| unsafe { (*driver).in_flight() } >= l)
    }

    /// Whether `n` more operations may be submitted at once with no waiting: nobody is
    /// queued for room, the driver has room for `n`, and `max_io_in_flight` allows `n` more.
    pub(crate) fn room_for<D: crate::Driver>(&self, driver: *mut D, n: usize) -> bool {
        // SAFETY: sched rule 3: the driver pointer is valid and unborrowed here.
        let (cap, in_flight) = unsafe { ((*driver).submit_capacity(), (*driver).in_flight()) };
        !self.submit_queue_busy() && cap >= n && self.cfg.max_io_in_flight.is_none_or(|l| in_flight + n <= l)
    }

    /// Whether tasks are queued for submission room (new initiators queue behind them).
    #[inline(always)]
    pub(crate) fn submit_queue_busy(&self) -> bool {
        self.submit_waiters.iter().any(|l| !l.is_empty())
    }

    /// Queues the running task `h` for submission room (room rule 2: once, however many
    /// of its suspension points ask); if it suspends now it reports `SqSlot`.
    pub(crate) fn wait_for_submit(&self, h: NonNull<Header>) {
        let t = hdr(h);
        t.reason.set(crate::task::state::SuspendReason::SqSlot);
        let f = t.flags.get();
        t.flags.set(f | flag::ASKED_ROOM | flag::QUEUED_FOR_ROOM);
        if f & flag::QUEUED_FOR_ROOM == 0 {
            // SAFETY: room rule 1: not linked in any waiter list; `'static` header.
            unsafe { self.submit_waiters[t.prio.get().io.index()].push_back(h) };
        }
    }

    /// Unlinks `h` from the waiters for room if it is linked (room rule 1).
    pub(crate) fn leave_submit_queue(&self, h: NonNull<Header>) {
        let t = hdr(h);
        if t.has_flag(flag::QUEUED_FOR_ROOM) {
            t.clear_flag(flag::QUEUED_FOR_ROOM | flag::ASKED_ROOM);
            // SAFETY: room rule 1: the flag says it is linked in its I/O priority's list
            // (priorities do not change while a task is attached).
            unsafe { self.submit_waiters[t.prio.get().io.index()].remove(h) };
        }
    }

    /// Room rule 3, after a poll that returned `Pending` with the task queued or granted.
    #[cold]
    fn after_poll_room(&self, h: NonNull<Header>) {
        let t = hdr(h);
        let f = t.flags.get();
        if f & flag::QUEUED_FOR_ROOM != 0 && f & flag::ASKED_ROOM == 0 {
            self.leave_submit_queue(h);
        }
        t.clear_flag(flag::ASKED_ROOM | flag::GRANTED);
    }

    /// Wakes up to `room` waiters, highest I/O priority first, FIFO within a level
    /// (bounded by `room` and the waiters). Room rule 4: each is unlinked first.
    pub(crate) fn grant_submit(&self, room: usize) {
        let mut room = room;
        for list in &self.submit_waiters {
            while room > 0 {
                let Some(h) = list.pop_front() else { break };
                let t = hdr(h);
                t.clear_flag(flag::QUEUED_FOR_ROOM | flag::ASKED_ROOM);
                t.set_flag(flag::GRANTED);
                self.wake_local(h);
                room -= 1;
            }
        }
    }
}
