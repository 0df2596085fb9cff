//! The executor: a driver, the scheduler state, and the run loop.
//!
//! An executor is pinned before use (tasks and wakers hold its address), then used
//! through `Pin<&Executor<D>>`, which is `Copy`:
//!
//! ```
//! use core::pin::pin;
//! use keel_core::{Executor, Config, TaskSlot, TaskAttrs, sim::SimDriver};
//! static TASK: TaskSlot = TaskSlot::new();
//! let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
//! let ex = ex.into_ref();
//! let run = ex.attach(TASK.create(TaskAttrs::default()).unwrap(), async { 7u64 }).unwrap();
//! assert_eq!(ex.run(10, None), Ok(1));
//! assert_eq!(ex.result(run), Ok(Some(Ok(7))));
//! ```
//!
//! Same-thread only: every method here. The executor is `!Send` and `!Sync`; what
//! other threads may do is wake tasks through `TaskHandle::wake` and wakers.
//!
//! A body's panic, in its poll or in its `Drop`, propagates out of the call that ran it
//! (`run`, `cancel`, `shutdown`, the executor's drop) after the task has completed as
//! `TaskError::Panicked` with its body dropped exactly once (body rule 1); the executor
//! stays usable. A second panic while one unwinds aborts, as anywhere in Rust.
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
//! # The driver (cited as "driver rule N")
//!
//! 1. The driver is *lent* to one closure at a time (`Executor::with_driver`,
//!    `io_status::with_driver`, `Fiber::with_driver`): a flag in the scheduler, set for
//!    the closure's whole call, and a nested call gets `DriverBusy` (never a second
//!    reference). While it is set, no keel path forms a reference to the driver (sched
//!    rule 3): `now` answers the run loop's last clock reading, initiating is refused
//!    (`InitiateError::DriverBusy`), `run` is refused, and a run loop that meets it (a
//!    fiber suspended inside a closure) keeps off the driver and does not park.
//! 2. The closure gets a [`DriverMut`], never `&mut D`: it reads as `&D`, and mutation
//!    is the driver's own methods on it (the simulated driver's scripting) or, for driver
//!    crates, the `unsafe` [`DriverMut::get_mut`]. So safe code cannot replace the
//!    driver, with or without operations in flight: not only would in-flight operations
//!    name memory the old driver frees, but the unparker other threads call was taken
//!    from this driver once (park rule 3) and values of driver crates point into it.
//!    A check after the closure would come too late (the old driver already dropped),
//!    so replacement is ruled out by type instead.
//! 3. A keel value dropped inside such a closure (an in-flight `IoStatus` orphaning its
//!    operation, a cancel of a task, a driver crate's value calling through
//!    `DriverPtr::call_or_defer`) cannot wait: its cancel, retarget or call is held back,
//!    at most [`DEFERRED_DRIVER_OPS`] of them, and applied in order when the flag clears,
//!    before any reap can deliver a completion. More than that in one closure poisons the
//!    executor: a retarget it could not apply leaves a token naming freed memory, so it
//!    never reaps again (`RunError::Poisoned`; its drop does not drain), which is sound,
//!    if unhelpful.
//!
//! Cost: one flag load on each path that reaches the driver (submit, `now`, cancel), a
//! store on each side of a reap, nothing per completion.

mod attach;
pub mod remote;
mod run;
pub(crate) mod run_queue;
pub(crate) mod sched;
mod submit;
pub(crate) mod work_source;

pub use crate::mailbox::{HandleSlot, Unparker};
pub use remote::ExecutorHandle;
pub use sched::DEFERRED_DRIVER_OPS;

use crate::acct::{Accounting, NoAccounting};
use crate::clock::Instant;
use crate::driver::{Driver, DriverMut, VtFor};
use crate::error::{AttachError, CancelError, ConfigError, DestroyError, DriverBusy, StaleHandle, TaskResult};
use crate::fiber::{Fiber, FiberAttrs};
use crate::mailbox::inbox::Recheck;
use crate::stack::{NoStacks, StackProvider, StackStats};
use crate::switch::FiberSwitch;
use crate::sync::Ordering;
use crate::sync::UnsafeCell;
use crate::task::TaskHandle;
use crate::task::body::{FutureBody, IntoTaskResult};
use crate::task::header::{Header, SlotPtr, flag};
use crate::task::state::{SuspendReason, TaskEvent, TaskState};
use core::future::Future;
use core::marker::PhantomPinned;
use core::pin::Pin;
use core::ptr::NonNull;
use sched::Sched;

/// How many run-loop passes in a row may find a foreign push half done (inbox rule 3)
/// before the executor parks anyway; the producer's unpark check then ends the park (park
/// rule 2). Each such pass costs a spin hint. Zero under loom, so the models park on
/// every push in progress they reach.
#[cfg(not(keel_loom))]
pub const INBOX_BUSY_SPINS: u32 = 64;
/// See the non-loom definition: zero under loom.
#[cfg(keel_loom)]
pub const INBOX_BUSY_SPINS: u32 = 0;

/// Executor settings: bounds on the run loop's inner loops (sched rule 4, each at least
/// 1), and the fiber stack pool.
#[derive(Copy, Clone, Debug)]
pub struct Config {
    /// Wakes taken off the inbox per run-loop pass.
    pub inbox_batch: usize,
    /// Timers fired per pass.
    pub timer_batch: usize,
    /// Completions reaped per pass.
    pub reap_batch: usize,
    /// Tasks resumed per pass while i/o is in flight: between two reaps (for the ring, two
    /// `io_uring_enter`s). Larger batches more submissions into one enter; smaller lets
    /// completions in sooner (16: an echo server's p99 improved over one pass per ready
    /// set, its throughput did not move).
    pub resume_batch: usize,
    /// Spare fiber stacks kept for reuse; more go back to the provider (0: keep none).
    pub max_spare_stacks: usize,
    /// Spares unused for this long are decommitted (`madvise`d away) when the executor
    /// parks. `None`: never (and no clock read when a stack is pooled).
    pub trim_spare_stacks_after: Option<core::time::Duration>,
    /// At most this many operations in flight on the executor; initiators beyond it
    /// wait, in I/O-priority order, for completions to make room. `None`: no limit.
    pub max_io_in_flight: Option<usize>,
    /// Catches a panic in a fiber body at its first frame (keel-linux provides one).
    /// `None`: a panic there aborts the process (it must not unwind across a switch).
    pub fiber_panics: Option<crate::fiber::PanicCatcher>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            inbox_batch: 64,
            timer_batch: 64,
            reap_batch: 256,
            resume_batch: 16,
            max_spare_stacks: 64,
            trim_spare_stacks_after: None,
            max_io_in_flight: None,
            fiber_panics: None,
        }
    }
}

impl Config {
    fn validate(self) -> Result<Self, ConfigError> {
        let limit = self.max_io_in_flight.unwrap_or(1);
        for (name, v) in [
            ("inbox_batch", self.inbox_batch),
            ("timer_batch", self.timer_batch),
            ("reap_batch", self.reap_batch),
            ("resume_batch", self.resume_batch),
            ("max_io_in_flight", limit),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(self)
    }
}

/// What `cancel` did.
///
/// A task whose body has been polled (or a fiber that has run) is never dropped by
/// `cancel`: it is resumed, and every keel suspension point it reaches returns
/// `Cancelled`, while an operation that completed before the cancel reached it still
/// reports its completion (the bytes read, the descriptor accepted): the task decides
/// what to do with it. Only a task that never ran is removed at once.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was attached and had not started: removed, and it completed as cancelled
    /// without its body ever running.
    Completed,
    /// It was ready (woken, or yielding) or suspended: it resumes (ready: where it is in
    /// the run queue; suspended: now) and its suspension points return `Cancelled`.
    Resumes,
    /// It was suspended on i/o: that i/o is being cancelled; it resumes once it completes.
    CancellingIo,
    /// It is running: its next suspension point returns `Cancelled`.
    AtNextSuspension,
    /// A cancel was already under way.
    AlreadyCancelling,
}

/// A snapshot of an executor's counters.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Task resumptions (items of work that ran a body).
    pub resumed: u64,
    /// Runs completed.
    pub completed: u64,
    /// Resumptions per CPU priority, high first.
    pub per_priority: [u64; 3],
    /// Timers that fired.
    pub timers_fired: u64,
    /// Wakes taken from other threads (or from wakers).
    pub inbox_taken: u64,
    /// Operations submitted to the driver.
    pub io_submitted: u64,
    /// Completions reaped.
    pub io_completed: u64,
    /// Times the executor parked.
    pub parks: u64,
    /// Times a fiber switched back to the executor with MXCSR or the x87 control word
    /// changed and the executor loaded its own again (fiber rule 6; counted where the
    /// check is built: debug builds, or the `fp-check` feature).
    pub fp_control_restored: u64,
    /// Tasks attached right now.
    pub attached: usize,
    /// Ready tasks per CPU priority right now.
    pub ready: [usize; 3],
    /// Timers armed right now.
    pub timers_armed: usize,
}

/// A single-threaded executor over driver `D`, with fiber stacks from `S`, accounting
/// time as `A` says (`NoAccounting`: no clock reads on the hot path; `TscAccounting`).
pub struct Executor<D: Driver, S: StackProvider = NoStacks, A: Accounting = NoAccounting> {
    sched: Sched,
    driver: UnsafeCell<D>,
    stacks: UnsafeCell<S>,
    _pinned: PhantomPinned,
    _acct: core::marker::PhantomData<A>,
}

impl<D: Driver> Executor<D, NoStacks> {
    /// An executor over `driver` that runs stackless tasks only. Expensive calls end
    /// here; pin it, then attach and run.
    pub fn new(driver: D, config: Config) -> Result<Self, ConfigError> {
        Self::with_stacks(driver, NoStacks, config)
    }
}

impl<D: Driver, S: StackProvider> Executor<D, S> {
    /// An executor over `driver` whose fibers take stacks from `stacks`.
    pub fn with_stacks(driver: D, stacks: S, config: Config) -> Result<Self, ConfigError> {
        Ok(Executor {
            sched: Sched::new(config.validate()?),
            driver: UnsafeCell::new(driver),
            stacks: UnsafeCell::new(stacks),
            _pinned: PhantomPinned,
            _acct: core::marker::PhantomData,
        })
    }

    /// The same executor, accounting time as `A2` (before it is pinned and used).
    pub fn with_accounting<A2: Accounting>(self) -> Executor<D, S, A2> {
        let me = core::mem::ManuallyDrop::new(self);
        // SAFETY: the fields are moved out exactly once and `me` is never dropped; the
        // executor has not been used (an executor is only usable once pinned, and this
        // takes it by value), so nothing names its address yet.
        unsafe {
            Executor {
                sched: core::ptr::read(&me.sched),
                driver: core::ptr::read(&me.driver),
                stacks: core::ptr::read(&me.stacks),
                _pinned: PhantomPinned,
                _acct: core::marker::PhantomData,
            }
        }
    }
}

impl<D: Driver, S: StackProvider, A: Accounting> Executor<D, S, A> {
    /// Per-task accounting of run `task` (times zero without accounting).
    pub fn task_times(self: Pin<&Self>, task: TaskHandle) -> Result<crate::acct::TaskTimesSnapshot, StaleHandle> {
        self.owned(task).map_err(|_| StaleHandle)?;
        let scale = self.sched().times.scale.get().unwrap_or(crate::acct::TickScale::IDENTITY);
        let tr = task.header().trailer();
        let (tt, st) = (&tr.times, &tr.stats);
        Ok(crate::acct::TaskTimesSnapshot {
            running_ns: scale.to_ns(tt.running.get()),
            suspended_ns: scale.to_ns(tt.suspended.get()),
            ready_wait_ns: scale.to_ns(tt.ready_wait.get()),
            longest_run_ns: scale.to_ns(tt.longest_run.get()),
            resumptions: st.resumptions.get(),
            io_initiated: st.io_initiated.get(),
            io_completed: st.io_completed.get(),
        })
    }

    /// The executor's accounting (times zero without accounting).
    pub fn exec_times(self: Pin<&Self>) -> crate::acct::ExecTimesSnapshot {
        let s = self.sched();
        let scale = s.times.scale.get().unwrap_or(crate::acct::TickScale::IDENTITY);
        let (task, parked, in_run) = (s.times.task.get(), s.times.parked.get(), s.times.in_run.get());
        crate::acct::ExecTimesSnapshot {
            task_ns: scale.to_ns(task),
            loop_ns: scale.to_ns(in_run.saturating_sub(task).saturating_sub(parked)),
            parked_ns: scale.to_ns(parked),
            per_priority: [s.stats.per_priority[0].get(), s.stats.per_priority[1].get(), s.stats.per_priority[2].get()],
            submissions: s.stats.io_submitted.get(),
            completions: s.stats.io_completed.get(),
        }
    }

    /// How to turn clock ticks into nanoseconds (keel-linux's TSC calibration gives it).
    pub fn set_tick_scale(self: Pin<&Self>, scale: crate::acct::TickScale) {
        self.sched().times.scale.set(Some(scale));
    }

    #[inline(always)]
    pub(crate) fn sched(self: Pin<&Self>) -> &Sched {
        let s = &self.get_ref().sched;
        s.ensure_init(
            A::ON,
            self.driver_ptr() as *mut (),
            &VtFor::<D>::VT,
            self.stacks.with_mut(|p| p as *mut ()),
            &crate::stack::pool::VtFor::<S>::VT,
        );
        s
    }

    /// Attaches a fiber on keel's own switch: `body` runs on a stack from the pool and
    /// may call the blocking-style operations of [`Fiber`].
    pub fn attach_fiber<F, R>(
        self: Pin<&Self>,
        task: TaskHandle,
        attrs: FiberAttrs,
        body: F,
    ) -> Result<TaskHandle, AttachError<F>>
    where
        F: FnOnce(&mut Fiber) -> R + 'static,
        R: IntoTaskResult,
    {
        self.sched().attach_fiber::<crate::arch::AsmSwitch, F, R>(task, attrs, body)
    }

    /// Attaches a fiber on switcher `Sw` (runtime-pluggable: each task names its own).
    pub fn attach_fiber_with<Sw, F, R>(
        self: Pin<&Self>,
        task: TaskHandle,
        attrs: FiberAttrs,
        body: F,
    ) -> Result<TaskHandle, AttachError<F>>
    where
        Sw: FiberSwitch,
        F: FnOnce(&mut Fiber) -> R + 'static,
        R: IntoTaskResult,
    {
        self.sched().attach_fiber::<Sw, F, R>(task, attrs, body)
    }

    /// A handle for attaching tasks from other threads, named through `slot` (which must
    /// not be bound to another live executor: `None` then).
    pub fn handle(self: Pin<&Self>, slot: &'static HandleSlot) -> Option<ExecutorHandle> {
        let s = self.sched();
        if s.handle_slot.get().is_some() {
            return None;
        }
        let epoch = slot.bind(s.owner_id())?;
        s.handle_slot.set(Some(slot));
        Some(ExecutorHandle::new(slot, epoch))
    }

    /// The stack pool's counters.
    pub fn stack_stats(self: Pin<&Self>) -> StackStats {
        self.sched().stacks.stats()
    }

    /// Decommits spare stacks pooled for longer than `age` (also done when parking, if
    /// `Config::trim_spare_stacks_after` is set).
    pub fn trim_stacks(self: Pin<&Self>, age: core::time::Duration) {
        let s = self.sched();
        let now = s.now().as_nanos();
        let age = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
        s.stacks.trim(Instant::from_nanos(now.saturating_sub(age)));
    }

    #[inline(always)]
    fn driver_ptr(&self) -> *mut D {
        self.driver.with_mut(|p| p)
    }

    /// The switcher kind of run `task`'s body, `None` if it has none now.
    pub fn switcher(self: Pin<&Self>, task: TaskHandle) -> Result<Option<crate::task::SwitcherKind>, StaleHandle> {
        let t = self.owned(task).map_err(|_| StaleHandle)?;
        Ok(t.body.get().map(|vt| vt.kind))
    }

    /// Lends the driver to `f` (driver rules 1-2): to read its state, or script a
    /// simulated driver between runs. `Err(DriverBusy)` if it is lent already (a nested
    /// call, or from inside a task's own `with_driver`).
    ///
    /// `f` gets a [`DriverMut`], which reads as `&D` and cannot replace the driver:
    ///
    /// ```compile_fail
    /// # use core::pin::pin;
    /// # use keel_core::{Executor, Config, sim::SimDriver};
    /// let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    /// ex.as_ref().with_driver(|d| **d = SimDriver::new()).unwrap();
    /// ```
    ///
    /// ```compile_fail
    /// # use core::pin::pin;
    /// # use keel_core::{Executor, Config, sim::SimDriver};
    /// let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    /// let mut other = SimDriver::new();
    /// ex.as_ref().with_driver(|d| core::mem::swap(&mut **d, &mut other)).unwrap();
    /// ```
    ///
    /// Nor can a `DriverMut` leave its closure (here: swapped with another executor's,
    /// which would outlive that executor's lend):
    ///
    /// ```compile_fail
    /// # use core::pin::pin;
    /// # use keel_core::{Executor, Config, sim::SimDriver};
    /// let a = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    /// let b = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    /// let (a, b) = (a.into_ref(), b.into_ref());
    /// a.with_driver(|da| b.with_driver(|db| core::mem::swap(da, db)).unwrap()).unwrap();
    /// ```
    pub fn with_driver<R>(self: Pin<&Self>, f: impl FnOnce(&mut DriverMut<'_, D>) -> R) -> Result<R, DriverBusy> {
        let s = self.sched();
        let _lent = s.lend()?;
        // SAFETY: driver rule 1: lent (the flag set) until `_lent` drops, after `f`.
        let mut d = unsafe { DriverMut::lend(self.driver_ptr()) };
        Ok(f(&mut d))
    }

    /// Attaches a future as the next run of `task`. Same thread, no atomic
    /// read-modify-write once the task belongs to this executor, no allocation.
    pub fn attach<F>(self: Pin<&Self>, task: TaskHandle, body: F) -> Result<TaskHandle, AttachError<F>>
    where
        F: Future + 'static,
        F::Output: IntoTaskResult,
    {
        self.sched().attach(task, body, &FutureBody::<F>::VTABLE)
    }

    /// The state of run `task`.
    pub fn state(self: Pin<&Self>, task: TaskHandle) -> Result<TaskState, StaleHandle> {
        let t = self.owned(task).map_err(|_| StaleHandle)?;
        Ok(t.state.get())
    }

    /// The result of run `task`: `None` until it has completed.
    pub fn result(self: Pin<&Self>, task: TaskHandle) -> Result<Option<TaskResult>, StaleHandle> {
        let t = self.owned(task).map_err(|_| StaleHandle)?;
        Ok(if t.state.get() == TaskState::Completed { task.header().trailer().result.get() } else { None })
    }

    /// The header of `task` if this executor owns it and the handle is current.
    fn owned(self: Pin<&Self>, task: TaskHandle) -> Result<&'static Header, Owned> {
        let s = self.sched();
        // SAFETY: `'static` slot.
        let t: &'static Header = unsafe { &*task.header().as_ptr() };
        // Relaxed: comparing with our own address; if it is ours, we wrote it.
        let owner = t.owner.load(Ordering::Relaxed);
        if owner != s.owner_id() {
            return Err(if owner.is_null() { Owned::Unowned } else { Owned::Elsewhere });
        }
        // Relaxed: owner-written.
        if t.generation.load(Ordering::Relaxed) != task.generation() {
            return Err(Owned::Stale);
        }
        Ok(t)
    }

    /// Wakes `task` on this thread (wake rule 7: no atomics). Stale: a no-op.
    pub fn wake(self: Pin<&Self>, task: TaskHandle) {
        if self.owned(task).is_ok() {
            self.sched().wake_local(task.header());
        }
    }

    /// Cancels run `task`, whatever its state (see [`CancelOutcome`]).
    ///
    /// # Panics
    /// If a queued body's `Drop` panics, the task completes as
    /// `TaskError::Panicked` (its body dropped once, its slot reusable), then the panic
    /// propagates out of `cancel`, as a body's panic does out of `run`. The executor stays
    /// usable.
    pub fn cancel(self: Pin<&Self>, task: TaskHandle) -> Result<CancelOutcome, CancelError> {
        let t = self.owned(task).map_err(|o| match o {
            Owned::Elsewhere => CancelError::OwnedElsewhere,
            Owned::Unowned => CancelError::NotAttached,
            Owned::Stale => CancelError::Stale,
        })?;
        let s = self.sched();
        let h = task.header();
        use SuspendReason as R;
        Ok(match t.state.get() {
            TaskState::Idle => return Err(CancelError::NotAttached),
            TaskState::Draining | TaskState::Completed => return Err(CancelError::TooLate),
            TaskState::Ready => {
                // Started (a task leaves `Attached` only by running): a future or a fiber.
                // Its body may hold what a completion already delivered (a woken owned-
                // buffer operation, an accepted descriptor), which a drop would lose: a
                // cancel reports a completion it lost the race to. It stays queued and its next poll sees `Cancelled`
                // at keel's suspension points (fiber rule 2 for fibers, the same for
                // futures), while its operations report their own completions.
                t.set_flag(flag::CANCEL);
                CancelOutcome::Resumes
            }
            TaskState::Attached => {
                // Never polled: nothing of its body has run, so nothing can be lost; it
                // is in the run queue. A body `Drop` that panics completes the task as
                // `Panicked`, and the panic goes on out of `cancel` (body rule 1).
                s.cancel_queued(h, true);
                CancelOutcome::Completed
            }
            TaskState::Suspended(R::Timer | R::Wait | R::SqSlot) => {
                t.set_flag(flag::CANCEL);
                s.wake_cancelled(h, TaskEvent::CancelSuspended);
                CancelOutcome::Resumes
            }
            TaskState::Suspended(R::Io) => {
                t.set_flag(flag::CANCEL);
                s.cancel_io(h);
                CancelOutcome::CancellingIo
            }
            TaskState::Running => {
                t.set_flag(flag::CANCEL);
                CancelOutcome::AtNextSuspension
            }
            TaskState::Cancelling => CancelOutcome::AlreadyCancelling,
        })
    }

    /// Destroys the task: every handle to it becomes stale and its slot can be created
    /// again. Fails while it is attached. The slot must belong to this executor or to none.
    pub fn destroy(self: Pin<&Self>, task: TaskHandle) -> Result<(), DestroyError> {
        let s = self.sched();
        let h = task.header();
        let t = match self.owned(task) {
            Ok(t) => t,
            Err(Owned::Stale) => return Err(DestroyError::Stale),
            Err(Owned::Elsewhere) => return Err(DestroyError::OwnedElsewhere),
            Err(Owned::Unowned) => {
                s.claim(task).map_err(|c| match c {
                    sched::Claim::Stale => DestroyError::Stale,
                    sched::Claim::Raced => DestroyError::OwnedElsewhere,
                })?;
                // SAFETY: `'static` slot.
                unsafe { &*h.as_ptr() }
            }
        };
        if t.state.get().is_attached() {
            return Err(DestroyError::Attached);
        }
        // Relaxed: owner-written. Bump first so every handle is stale before the slot frees.
        let g = t.generation.load(Ordering::Relaxed).wrapping_add(1);
        // Release: pairs with wakers' Acquire generation check.
        t.generation.store(g, Ordering::Release);
        if !s.release(h) {
            return Err(DestroyError::WakeInFlight);
        }
        // Release: pairs with `create`'s Acquire CAS, publishing the released slot.
        h.trailer().live.store(0, Ordering::Release);
        Ok(())
    }

    /// Gives up a task that is not attached, so another executor can attach it.
    /// Returns the handle to attach it with.
    pub fn release(self: Pin<&Self>, task: TaskHandle) -> Result<TaskHandle, DestroyError> {
        let t = self.owned(task).map_err(|o| match o {
            Owned::Stale => DestroyError::Stale,
            Owned::Elsewhere | Owned::Unowned => DestroyError::OwnedElsewhere,
        })?;
        if t.state.get().is_attached() {
            return Err(DestroyError::Attached);
        }
        if !self.sched().release(task.header()) {
            return Err(DestroyError::WakeInFlight);
        }
        Ok(task)
    }

    /// The driver's clock.
    pub fn now(self: Pin<&Self>) -> Instant {
        self.sched().now()
    }

    /// A snapshot of the counters.
    pub fn stats(self: Pin<&Self>) -> ExecStats {
        let s = self.sched();
        let c = &s.stats;
        ExecStats {
            resumed: c.resumed.get(),
            completed: c.completed.get(),
            per_priority: [c.per_priority[0].get(), c.per_priority[1].get(), c.per_priority[2].get()],
            timers_fired: c.timers_fired.get(),
            inbox_taken: c.inbox_taken.get(),
            io_submitted: c.io_submitted.get(),
            io_completed: c.io_completed.get(),
            parks: c.parks.get(),
            fp_control_restored: c.fp_control_restored.get(),
            attached: s.attached.get(),
            ready: s.ready.lens(),
            timers_armed: s.timers.len(),
        }
    }

    /// Tasks attached right now.
    pub fn attached(self: Pin<&Self>) -> usize {
        self.sched().attached.get()
    }
}

enum Owned {
    Stale,
    Elsewhere,
    Unowned,
}

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
    fn note_leak(&mut self, id: u32) {
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
        let s = self.sched();
        if s.running.replace(true) {
            return Err(crate::error::RunError::Reentrant);
        }
        struct Running<'a>(&'a Sched);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.running.set(false);
            }
        }
        let _running = Running(s);
        Ok(self.wind_down())
    }

    /// Teardown rule 1's first half: no new work comes in. Runs no task code (so it
    /// cannot panic out half done) and runs once. The dispatcher stays named: tasks it
    /// dispatched still count their completion there (dispatch rule 3).
    fn close_doors(self: Pin<&Self>) {
        let s = self.sched();
        // Remote rule 1: no new attaches; wait for attachers inside. Dispatch rule 4: no
        // submitter may unpark us any more.
        if let Some(slot) = s.handle_slot.take() {
            slot.unbind();
        }
        if let Some((d, i)) = s.dispatcher.get() {
            d.unregister(i);
        }
        // Take in every attach and wake already pushed, so every task we own is listed.
        // Inbox rule 3: a push in progress is waited for here (cold, blocking).
        while s.mailbox.inbox.recheck() != Recheck::Empty {
            s.drain_inbox(usize::MAX);
            core::hint::spin_loop();
        }
    }

    /// The rest of the executor's drop (teardown rules 1-4); also run again by its guard
    /// while a body's panic unwinds, so each step skips what is done (teardown rule 5).
    fn teardown(self: Pin<&Self>) {
        let s = self.sched();
        let report = self.wind_down();
        if report.leaked_fibers > 0 {
            // Relaxed: statistics (see `leaked_fibers`).
            LEAKED_COUNT.fetch_add(report.leaked_fibers, core::sync::atomic::Ordering::Relaxed);
            let last = report.leaked_ids[report.leaked_fibers.min(LEAK_IDS) - 1];
            LEAKED_LAST.store(last, core::sync::atomic::Ordering::Relaxed);
        }
        // Nothing is in flight any more: wind_down ended with `cancel_and_drain`, which
        // also cancels operations whose owner left its task (moved into `main`).
        while let Some(h) = s.owned.front() {
            // Teardown rule 4. Every task is completed or idle here (wind_down leaks what
            // is left), so it can be given up. Completions for its orphans can no longer
            // arrive (the driver goes with the executor): its next run, on any executor,
            // must not wait for them.
            // SAFETY: `'static` header.
            h.trailer().orphans.set(0);
            // Wake rule 6: a waker mid-push holds QUEUED; wait for its node to arrive.
            let mut spins: u64 = 0;
            while !s.release(h) {
                spins += 1;
                core::hint::spin_loop();
                debug_assert!(spins < 1 << 40, "keel bug: a wake never arrived");
            }
        }
        // Park rule 4: wait for wakers still inside (unparking us).
        s.mailbox.park.wait_quiet();
        s.stacks.release_all();
    }

    /// Reaps until no operation is in flight (cancellations were requested already), or
    /// the driver says nothing more can complete.
    fn drain_all_io(self: Pin<&Self>) {
        let s = self.sched();
        let dp = self.driver_ptr();
        loop {
            // Driver rule 3: a poisoned executor routes no completion any more.
            if s.driver_state.get() != 0 {
                return;
            }
            // SAFETY: sched rule 3: not lent, so no other reference to the driver is live.
            if unsafe { (*dp).in_flight() } == 0 {
                return;
            }
            #[cfg(debug_assertions)]
            s.reaping.set(true);
            // SAFETY: sched rule 3: not lent, so this is the only reference; the sink
            // reaches no driver (user code in it runs with the flag set).
            let n = unsafe { &mut *dp }.reap(s.cfg.reap_batch, &mut |tok, res| s.complete_io(tok, res));
            #[cfg(debug_assertions)]
            s.reaping.set(false);
            s.apply_held_back();
            if n == 0 {
                let deadline = s.now().saturating_add(core::time::Duration::from_millis(1));
                // SAFETY: as above (not lent: the reap's flag was cleared).
                if let Ok(crate::driver::Park::Stalled) = unsafe { &mut *dp }.park(Some(deadline)) {
                    return;
                }
            }
        }
    }

    /// Has the driver cancel every operation in flight, then reaps until none is.
    fn cancel_and_drain(self: Pin<&Self>) {
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
    fn wind_down(self: Pin<&Self>) -> Shutdown {
        let s = self.sched();
        let mut report = Shutdown::default();
        for _ in 0..TEARDOWN_ROUNDS {
            s.drain_inbox(s.cfg.inbox_batch);
            // Teardown rule 1 (and again each round, for fibers that suspended again).
            let mut cur = s.owned.front();
            while let Some(h) = cur {
                // SAFETY: `h` is linked in `owned`. The next is read first: completing
                // `h` may release it (remote rule 4), which unlinks only `h`.
                cur = unsafe { s.owned.next_of(h) };
                if s.abandon(h) {
                    report.cancelled += 1;
                }
            }
            // Teardown rule 2: reap what the cancels (and orphaned statuses) left in
            // flight, then resume each fiber that is ready once. The driver cancels
            // everything first: an operation whose owner was moved out of its task (into
            // `main`) is no task's to cancel, and would hold the drain until it completes.
            self.cancel_and_drain();
            let ready = s.ready.len();
            if ready == 0 {
                // Nothing left to resume: every task is done, or waits for i/o the driver
                // never completes (drain_all_io waited until it stalled).
                break;
            }
            for _ in 0..ready {
                let Some(h) = s.ready.pop() else { break };
                s.resume::<A>(h);
            }
        }
        self.cancel_and_drain();
        // Teardown rule 3: what is still attached ignored `Cancelled` (or waits for i/o the
        // driver never completes).
        let mut cur = s.owned.front();
        while let Some(h) = cur {
            // SAFETY: as above.
            cur = unsafe { s.owned.next_of(h) };
            // SAFETY: `'static` header.
            let t = unsafe { h.as_ref() };
            if t.state.get().is_attached() {
                s.leak(h);
                report.note_leak(h.trailer().id());
            }
        }
        report
    }
}
impl Sched {
    /// Cancel edge 9: a suspended task resumes with `Cancelled`.
    pub(crate) fn wake_cancelled(&self, h: NonNull<Header>, event: TaskEvent) {
        // SAFETY: `'static` header.
        let t = unsafe { h.as_ref() };
        self.disarm(h);
        // Room rule 5.
        self.leave_submit_queue(h);
        t.state.set(t.state.get().on(event).unwrap_or_else(|e| panic!("keel bug: {e}")));
        // SAFETY: a suspended task is in no run list.
        unsafe { self.ready.push(h) };
    }

    /// Cancel edge 10: cancel the task's i/o; it resumes when a completion arrives.
    pub(crate) fn cancel_io(&self, h: NonNull<Header>) {
        // SAFETY: `'static` header.
        let t = unsafe { h.as_ref() };
        // Room rule 5.
        self.leave_submit_queue(h);
        t.state.set(t.state.get().on(TaskEvent::CancelIo).unwrap_or_else(|e| panic!("keel bug: {e}")));
        let mut s = h.trailer().initiated.front();
        while let Some(st) = s {
            // SAFETY: linked statuses are alive (io_status rule 2).
            self.driver_cancel(unsafe { st.as_ref() }.op_id());
            // SAFETY: `st` is linked in `initiated`.
            s = unsafe { h.trailer().initiated.next_of(st) };
        }
        if h.io_in_flight() == 0 {
            t.state.set(TaskState::Ready);
            // SAFETY: a cancelling task is in no run list.
            unsafe { self.ready.push(h) };
        }
    }

    /// Teardown rule 1, for one owned task: marks it cancelled; drops its body if it can
    /// be dropped (a future, a fiber not started), completing it as cancelled; wakes a
    /// started fiber suspended on anything but i/o (it resumes with `Cancelled`) and
    /// cancels the i/o of one suspended on i/o. Returns whether it was attached and not
    /// yet cancelled before.
    fn abandon(&self, h: NonNull<Header>) -> bool {
        // SAFETY: `'static` header.
        let t = unsafe { h.as_ref() };
        let state = t.state.get();
        if !state.is_attached() || matches!(state, TaskState::Running | TaskState::Draining) {
            return false;
        }
        let first = !t.has_flag(flag::CANCEL);
        t.set_flag(flag::CANCEL);
        if Sched::is_started_fiber(t) {
            // Fiber rule 2: it resumes with `Cancelled` from the suspension point it is in.
            match state {
                TaskState::Suspended(SuspendReason::Io) => self.cancel_io(h),
                TaskState::Suspended(_) => self.wake_cancelled(h, TaskEvent::CancelSuspended),
                // Ready: queued; Cancelling: resumes once its i/o completes.
                _ => {}
            }
            return first;
        }
        let queued = match state {
            TaskState::Attached | TaskState::Ready => true,
            TaskState::Suspended(_) => {
                // Room rule 5 (cancel_queued's finish unlinks a ready task).
                self.leave_submit_queue(h);
                self.disarm(h);
                t.state.set(TaskState::Ready);
                false
            }
            // Cancelling: its body waits for i/o to be cancelled; drop it now.
            _ => {
                t.state.set(TaskState::Ready);
                false
            }
        };
        self.cancel_queued(h, queued);
        first
    }

    /// Teardown rule 3: ends the run of attached task `h` without resuming or dropping its
    /// body (a started fiber that ignored `Cancelled`, or a task whose i/o the driver never
    /// completed). Its stack, and everything its frames own, is leaked: never resumed,
    /// reused or freed. Its statuses are detached (marked reaped, on no list; in-flight
    /// ones orphaned, io_status rule 4) so the slot's next run starts with empty lists.
    fn leak(&self, h: NonNull<Header>) {
        // SAFETY: `'static` header.
        let t = unsafe { h.as_ref() };
        match t.state.get() {
            TaskState::Attached | TaskState::Ready => {
                // SAFETY: queued states are in the run queue.
                unsafe { self.ready.remove(h) };
            }
            _ => {}
        }
        // Room rule 5.
        self.leave_submit_queue(h);
        self.disarm(h);
        // Fiber rule 2: the frames stay on the stack, which is never handed back. A
        // finished fiber's stack held for draining (fiber rule 4) is leaked the same way.
        t.body.set(None);
        let _leaked = h.trailer().pending_stack.take();
        self.orphan_all(h);
        if h.trailer().result.get().is_none() {
            // A body that never returned (a draining one keeps its result).
            h.trailer().result.set(Some(Err(crate::error::TaskError::Cancelled)));
        }
        t.state.set(TaskState::Completed);
        self.attached.set(self.attached.get() - 1);
        self.stats.completed.set(self.stats.completed.get() + 1);
        if t.has_flag(flag::DISPATCHED)
            && let Some((d, _)) = self.dispatcher.get()
        {
            // Dispatch rule 3: its run is over.
            d.note_completed();
        }
    }
}
