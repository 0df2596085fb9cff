//! `Executor`: the same-thread face of a scheduler and its driver: construction, attach,
//! state and result, wake, and the driver lent to a closure (driver rules, `lend.rs`).

use crate::acct::{Accounting, NoAccounting};
use crate::clock::Instant;
use crate::driver::{Driver, DriverMut, VtFor};
use crate::error::{AttachError, ConfigError, DriverBusy, StaleHandle, TaskResult};
use crate::exec::sched::Sched;
use crate::exec::{Config, ExecutorHandle, HandleSlot};
use crate::fiber::{Fiber, FiberAttrs};
use crate::stack::{NoStacks, StackProvider};
use crate::switch::FiberSwitch;
use crate::sync::{Ordering, UnsafeCell};
use crate::task::TaskHandle;
use crate::task::body::{FutureBody, IntoTaskResult};
use crate::task::header::{Header, SlotPtr};
use crate::task::state::TaskState;
use core::future::Future;
use core::marker::PhantomPinned;
use core::pin::Pin;

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
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: the fields are moved out exactly once and `this` is never dropped; the
        // executor has not been used (an executor is only usable once pinned, and this
        // takes it by value), so nothing names its address yet.
        unsafe {
            Executor {
                sched: core::ptr::read(&this.sched),
                driver: core::ptr::read(&this.driver),
                stacks: core::ptr::read(&this.stacks),
                _pinned: PhantomPinned,
                _acct: core::marker::PhantomData,
            }
        }
    }
}

impl<D: Driver, S: StackProvider, A: Accounting> Executor<D, S, A> {
    #[inline(always)]
    pub(crate) fn sched(self: Pin<&Self>) -> &Sched {
        let sched = &self.get_ref().sched;
        sched.ensure_init(
            if A::ON { Some(A::read) } else { None },
            self.driver_ptr() as *mut (),
            &VtFor::<D>::VT,
            self.stacks.with_mut(|p| p as *mut ()),
            &crate::stack::pool::VtFor::<S>::VT,
        );
        sched
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
        let sched = self.sched();
        if sched.handle_slot.get().is_some() {
            return None;
        }
        let epoch = slot.bind(sched.owner_id())?;
        sched.handle_slot.set(Some(slot));
        Some(ExecutorHandle::new(slot, epoch))
    }

    #[inline(always)]
    pub(super) fn driver_ptr(&self) -> *mut D {
        self.driver.with_mut(|p| p)
    }

    /// The switcher kind of run `task`'s body, `None` if it has none now.
    pub fn switcher(self: Pin<&Self>, task: TaskHandle) -> Result<Option<crate::task::SwitcherKind>, StaleHandle> {
        let header = self.owned_header(task).map_err(|_| StaleHandle)?;
        Ok(header.body.get().map(|vt| vt.kind))
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
        let sched = self.sched();
        let _lent = sched.lend()?;
        // SAFETY: driver rule 1: lent (the flag set) until `_lent` drops, after `f`.
        let mut driver = unsafe { DriverMut::lend(self.driver_ptr()) };
        Ok(f(&mut driver))
    }

    /// The state of run `task`.
    pub fn state(self: Pin<&Self>, task: TaskHandle) -> Result<TaskState, StaleHandle> {
        let header = self.owned_header(task).map_err(|_| StaleHandle)?;
        Ok(header.state.get())
    }

    /// The result of run `task`: `None` until it has completed.
    pub fn result(self: Pin<&Self>, task: TaskHandle) -> Result<Option<TaskResult>, StaleHandle> {
        let header = self.owned_header(task).map_err(|_| StaleHandle)?;
        Ok(if header.state.get() == TaskState::Completed {
            Some(task.header().trailer().record.staged())
        } else {
            None
        })
    }

    /// The header of `task` if this executor owns it and the handle is current.
    pub(super) fn owned_header(self: Pin<&Self>, task: TaskHandle) -> Result<&'static Header, NotOwned> {
        let sched = self.sched();
        // SAFETY: `'static` slot.
        let header: &'static Header = unsafe { &*task.header().as_ptr() };
        // Relaxed: comparing with our own address; if it is ours, we wrote it.
        let owner = header.owner.load(Ordering::Relaxed);
        if owner != sched.owner_id() {
            return Err(if owner.is_null() { NotOwned::Unowned } else { NotOwned::Elsewhere });
        }
        // Relaxed: owner-written. A planted bug for the fuzz target `slot_lifecycle` (off
        // in every normal build) accepts a stale generation.
        if header.generation.load(Ordering::Relaxed) != task.generation() && !cfg!(keel_planted = "slot_lifecycle") {
            return Err(NotOwned::Stale);
        }
        Ok(header)
    }

    /// Wakes `task` on this thread (wake rule 7: no atomics). Stale: a no-op.
    pub fn wake(self: Pin<&Self>, task: TaskHandle) {
        if self.owned_header(task).is_ok() {
            self.sched().wake_local(task.header());
        }
    }

    /// The driver's clock.
    pub fn now(self: Pin<&Self>) -> Instant {
        self.sched().now()
    }

    /// Tasks attached right now.
    pub fn attached(self: Pin<&Self>) -> usize {
        self.sched().attached.get()
    }
}

/// Why a handle names no task of this executor.
pub(super) enum NotOwned {
    /// The handle is for an earlier run.
    Stale,
    Elsewhere,
    Unowned,
}
