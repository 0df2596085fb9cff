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

pub(crate) mod inbox;
pub(crate) mod park;
pub mod remote;
mod run;
pub(crate) mod sched;

pub use park::Unparker;
pub use remote::{ExecutorHandle, HandleSlot};
pub use sched::DEFERRED_DRIVER_OPS;

use crate::clock::Instant;
use crate::driver::{Driver, DriverMut, VtFor};
use crate::error::{AttachError, CancelError, ConfigError, DestroyError, DriverBusy, StaleHandle, TaskResult};
use crate::sync::Ordering;
use crate::task::body::{FutureBody, IntoTaskResult};
use crate::task::header::{Header, flag};
use crate::task::state::{SuspendReason, TaskEvent, TaskState};
use crate::task::TaskHandle;
use crate::stack::{NoStacks, StackProvider, StackStats};
use crate::acct::{Accounting, NoAccounting};
use crate::switch::{Fiber, FiberAttrs, FiberSwitch};
use crate::sync::UnsafeCell;
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
    pub fiber_panics: Option<crate::switch::PanicCatcher>,
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
        for (name, v) in [("inbox_batch", self.inbox_batch), ("timer_batch", self.timer_batch), ("reap_batch", self.reap_batch), ("resume_batch", self.resume_batch), ("max_io_in_flight", limit)] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(self)
    }
}

/// What `cancel` did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued (not started, or ready): removed, and it completed as cancelled.
    Completed,
    /// It was suspended: it resumes now and its suspension point returns `Cancelled`.
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
        let t = self.owned(task).map_err(|_| StaleHandle)?;
        let scale = self.sched().times.scale.get().unwrap_or(crate::acct::TickScale::IDENTITY);
        let (tt, st) = (&t.trailer().times, &t.trailer().stats);
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
    pub fn attach_fiber<F, R>(self: Pin<&Self>, task: TaskHandle, attrs: FiberAttrs, body: F) -> Result<TaskHandle, AttachError<F>>
    where
        F: FnOnce(&mut Fiber) -> R + 'static,
        R: IntoTaskResult,
    {
        self.sched().attach_fiber::<crate::arch::AsmSwitch, F, R>(task, attrs, body)
    }

    /// Attaches a fiber on switcher `Sw` (runtime-pluggable: each task names its own).
    pub fn attach_fiber_with<Sw, F, R>(self: Pin<&Self>, task: TaskHandle, attrs: FiberAttrs, body: F) -> Result<TaskHandle, AttachError<F>>
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
        let epoch = slot.bind(s)?;
        s.handle_slot.set(Some(slot));
        Some(ExecutorHandle::new(slot, epoch))
    }

    /// Makes this executor a worker of `dispatcher`: whenever it has no work of its own it
    /// takes the highest-priority dispatched task, and `Dispatcher::quit` makes its `run`
    /// return `RunError::Quit`. `false` if it serves one already or all worker slots are
    /// taken.
    pub fn serve(self: Pin<&Self>, dispatcher: &'static crate::dispatch::Dispatcher) -> bool {
        let s = self.sched();
        if s.dispatcher.get().is_some() {
            return false;
        }
        match dispatcher.register(&s.remote) {
            Some(i) => {
                s.dispatcher.set(Some((dispatcher, i)));
                true
            }
            None => false,
        }
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
        Ok(if t.state.get() == TaskState::Completed { t.trailer().result.get() } else { None })
    }

    /// The header of `task` if this executor owns it and the handle is current.
    fn owned(self: Pin<&Self>, task: TaskHandle) -> Result<&'static Header, Owned> {
        let s = self.sched();
        // SAFETY: `'static` slot.
        let t: &'static Header = unsafe { &*task.header().as_ptr() };
        // Relaxed: comparing with our own address; if it is ours, we wrote it.
        let owner = t.exec.load(Ordering::Relaxed);
        if !core::ptr::eq(owner, s) {
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
            TaskState::Attached | TaskState::Ready => {
                if !s.drop_body(h) {
                    // A started fiber (fiber rule 2): it stays queued and resumes with
                    // `Cancelled` from the suspension point it is in.
                    t.set_flag(flag::CANCEL);
                    return Ok(CancelOutcome::Resumes);
                }
                // SAFETY: attached-not-started and ready tasks are in the run queue.
                unsafe { s.ready.remove(h) };
                s.finish_cancelled(h);
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
        t.trailer().live.store(0, Ordering::Release);
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
    /// Cancels every attached task (bodies dropped, i/o cancelled and drained), then
    /// gives every task up, waiting for wakes in flight to this executor (wake rule 6).
    fn drop(&mut self) {
        // SAFETY: `Executor` is `!Unpin`, so once pinned it is dropped in place; if it was
        // never pinned, nothing can name it and initialising it here is harmless.
        let this = unsafe { Pin::new_unchecked(&*self) };
        let s = this.sched();
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
        while s.inbox.recheck() != inbox::Recheck::Empty {
            s.drain_inbox(usize::MAX);
            core::hint::spin_loop();
        }
        let mut cur = s.owned.front();
        while let Some(h) = cur {
            // SAFETY: `h` is linked in `owned`.
            cur = unsafe { s.owned.next_of(h) };
            s.abandon(h);
        }
        // Operations whose owner left its task (moved into `main`) were not cancelled with
        // the tasks above: the driver cancels what is left.
        // SAFETY: sched rule 3: no borrow of the driver is live here.
        unsafe { &mut *this.driver_ptr() }.cancel_all();
        this.drain_all_io();
        while let Some(h) = s.owned.front() {
            // SAFETY: `'static` header.
            let t = unsafe { h.as_ref() };
            if t.state.get().is_attached() {
                // Only a driver that never completed a cancelled operation leaves one here.
                t.state.set(TaskState::Completed);
                s.attached.set(s.attached.get() - 1);
            }
            // Wake rule 6: a waker mid-push holds QUEUED; wait for its node to arrive.
            let mut spins: u64 = 0;
            while !s.release(h) {
                spins += 1;
                core::hint::spin_loop();
                debug_assert!(spins < 1 << 40, "keel bug: a wake never arrived");
            }
        }
        // Park rule 4: wait for wakers still inside (unparking us).
        s.remote.wait_quiet();
        s.stacks.release_all();
    }
}

impl<D: Driver, S: StackProvider, A: Accounting> Executor<D, S, A> {
    /// Reaps until no operation is in flight (cancellations were requested already).
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
}

impl Sched {
    /// Cancel edge 9: a suspended task resumes with `Cancelled`.
    pub(crate) fn wake_cancelled(&self, h: NonNull<Header>, event: TaskEvent) {
        // SAFETY: `'static` header.
        let t = unsafe { h.as_ref() };
        if t.trailer().timer.is_armed() {
            // SAFETY: armed in our heap.
            unsafe { self.timers.remove(t.timer()) };
        }
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
        let mut s = t.trailer().initiated.front();
        while let Some(st) = s {
            // SAFETY: linked statuses are alive (io_status rule 2).
            self.driver_cancel(unsafe { st.as_ref() }.op_id());
            // SAFETY: `st` is linked in `initiated`.
            s = unsafe { t.trailer().initiated.next_of(st) };
        }
        if t.io_in_flight() == 0 {
            t.state.set(TaskState::Ready);
            // SAFETY: a cancelling task is in no run list.
            unsafe { self.ready.push(h) };
        }
    }

    /// Executor drop: end the task's run without resuming it.
    fn abandon(&self, h: NonNull<Header>) {
        // SAFETY: `'static` header.
        let t = unsafe { h.as_ref() };
        match t.state.get() {
            TaskState::Attached | TaskState::Ready => {
                // SAFETY: queued states are in the run queue.
                unsafe { self.ready.remove(h) };
            }
            TaskState::Suspended(_) => {
                // Room rule 5 (finish_cancelled below unlinks a ready task).
                self.leave_submit_queue(h);
                if t.trailer().timer.is_armed() {
                    // SAFETY: armed in our heap.
                    unsafe { self.timers.remove(t.timer()) };
                }
                t.state.set(TaskState::Ready);
            }
            TaskState::Cancelling => t.state.set(TaskState::Ready),
            _ => return,
        }
        if !self.drop_body(h) {
            // Fiber rule 2: a started fiber's frames stay on its stack, which is leaked
            // (never reused) so nothing can write into memory that was handed back.
            t.body.set(None);
        }
        self.finish_cancelled(h);
    }
}
