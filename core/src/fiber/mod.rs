//! Fiber tasks: an ordinary function on its own stack that calls blocking-style
//! operations, each of which suspends the fiber until the executor resumes it.
//!
//! Body storage of a fiber task (`#[repr(C)]`):
//!
//! ```text
//! FiberBody<Sw, F> { core: FiberCore, regs: Sw::Regs, body: MaybeUninit<F> }
//! ```
//!
//! Rules (cited as "fiber rule N"):
//! 1. The stack is taken from the executor's pool at attach, and goes back to the pool
//!    only after the fiber has exited and the executor is back on its own stack
//!    (deferred free).
//! 2. A fiber that has started cannot be dropped: its frames live on its stack. Cancel
//!    resumes it with `Cancelled` from every suspension point, and it winds down. An
//!    executor's drop does the same for every started fiber, for a bounded number of
//!    rounds (teardown rules 1-3): their destructors run and their stacks go back. A fiber
//!    still running after the rounds keeps its stack, leaked (never reused or freed), so
//!    nothing on it is written into after being handed back.
//! 3. A panic never unwinds across the switch: with a [`PanicCatcher`] (keel-linux
//!    provides one) the entry catches it and the task completes with
//!    `TaskError::Panicked`; without one the entry is `extern "C"` and the process
//!    aborts.
//! 4. A fiber that returns with i/o in flight keeps its stack until that i/o has been
//!    reaped (the task drains first): buffers on the stack stay valid for the kernel.
//! 5. Every suspension point returns `Err(Cancelled)` once the task is cancelled, and
//!    one that finds the flag set before it would suspend (on entry; for `sleep` and
//!    `suspend_until_completed_io` also after the wake that a cancel sent) still switches
//!    out once (the task is requeued behind its priority): a fiber that ignores
//!    `Cancelled` and calls suspension points in a loop still hands control back to its
//!    executor each time, so `run` goes on and the executor's teardown can count its
//!    rounds (teardown rule 3). The checks keep the frames of the suspension points as
//!    small as before (a ucontext fiber at `MIN_STACK` runs them in debug builds).
//! 6. A fiber's floating-point control state (MXCSR's control bits, the x87 control
//!    word: callee-saved under the System V ABI) is not saved by keel's switch (see
//!    `arch/x86_64.rs`). Where the check is built (debug builds, or keel-core's
//!    `fp-check` feature in release), the executor and the other fibers never run with
//!    a fiber's: the executor reads both before every resume and after the fiber
//!    switches back (`stmxcsr`, `fnstcw`); if the fiber left a control bit changed (the
//!    MXCSR status flags are caller-saved and ignored), at a suspension point or at its
//!    return, the executor loads its own values back, counts it in
//!    `ExecStats::fp_control_restored`, and the task completes with
//!    `TaskError::FpControlChanged` naming the task id and the values (its own result is
//!    discarded). The fiber runs on from that suspension with the executor's values.
//!    Without the check (release builds by default) nothing is read or restored: a
//!    fiber that changes them must restore them before each suspension point, or opt in
//!    to rule 7. The check costs 18 instructions per resume (a fiber's yield round trip
//!    is 145 without it: +12% by callgrind, over keel's +5% hot-path budget, hence not
//!    in release by default); [`FP_CONTROL_CHECKED`] says whether this build has it.
//!    The opt-in costs nothing to fibers that do not use it.
//! 7. A fiber attached with `FiberAttrs { save_fp_control: true, .. }` keeps its own
//!    control state across suspensions: at each suspension point it saves its MXCSR and
//!    x87 control word and loads the executor's (read when it was last resumed, or at
//!    its first entry), and when resumed it reads the executor's again and loads its own
//!    back; it gives the executor its values back at its return too. So it may set a
//!    rounding mode once and keep it, as on the ucontext switcher (where glibc's
//!    `swapcontext` saves and loads both on every switch anyway).

mod body;

pub(crate) use body::{FiberBody, FiberVt};

use crate::clock::Instant;
use crate::driver::{Driver, DriverMut};
use crate::error::{Cancelled, InitiateError};
use crate::exec::sched::Sched;
use crate::io_status::block::IoStatus;
use crate::switch::FiberSwitch;
use crate::sync::Ordering;
use crate::task::TaskHandle;
use crate::task::header::{Header, SlotPtr, flag};
use crate::task::state::SuspendReason;
use body::{ASM_REGS_OFFSET, FiberCore, SaveFp};
use core::pin::Pin;
use core::ptr::NonNull;
use core::time::Duration;

/// Runs `body`, catching a panic; `Err` carries a description of the panic.
pub type PanicCatcher = fn(body: &mut dyn FnMut()) -> Result<(), &'static str>;

/// How a fiber is attached.
///
/// Write a literal with the defaults for the rest:
/// `FiberAttrs { stack_size: 16 * 1024, ..FiberAttrs::DEFAULT }`.
#[derive(Copy, Clone, Debug)]
pub struct FiberAttrs {
    /// Usable stack bytes (rounded up by the provider). At least 4096.
    pub stack_size: usize,
    /// Keep the fiber's own MXCSR and x87 control word (rounding mode, exception
    /// masks, flush-to-zero) across its suspensions (fiber rule 7). Off by default: a
    /// fiber that changes them must then restore them before each suspension point and
    /// before it returns (fiber rule 6).
    pub save_fp_control: bool,
}

impl FiberAttrs {
    /// A 64 KiB stack, no floating-point control save.
    pub const DEFAULT: FiberAttrs = FiberAttrs { stack_size: 64 * 1024, save_fp_control: false };
}

impl Default for FiberAttrs {
    fn default() -> Self {
        FiberAttrs::DEFAULT
    }
}

/// Whether this build of keel-core checks fibers' floating-point control state at every
/// switch back to the executor (fiber rule 6): debug builds, or the `fp-check` feature.
pub const FP_CONTROL_CHECKED: bool = cfg!(any(debug_assertions, feature = "fp-check"));

/// Smallest stack the fiber layer accepts.
pub const MIN_STACK: usize = 4096;

/// What a fiber body gets: its blocking-style operations.
pub struct Fiber {
    core: NonNull<FiberCore>,
}

impl Fiber {
    fn core(&self) -> &FiberCore {
        // SAFETY: the core lives in the task's body storage for the whole run.
        unsafe { self.core.as_ref() }
    }

    fn header(&self) -> &Header {
        // SAFETY: `'static` task header.
        unsafe { self.core().header.as_ref() }
    }

    fn sched(&self) -> &Sched {
        // Relaxed: the owner wrote it on this thread.
        let s = self.header().owner.load(Ordering::Relaxed);
        // SAFETY: a running task's owner is a live, pinned executor (sched rule 1).
        unsafe { Sched::of_owner(s) }
    }

    fn cancelled(&self) -> Result<(), Cancelled> {
        if self.header().has_flag(flag::CANCEL) { Err(Cancelled) } else { Ok(()) }
    }

    /// Fiber rule 5: a suspension point that finds the task cancelled still switches out
    /// once (requeued at the back of its priority), so a fiber that ignores `Cancelled`
    /// and loops on suspension points hands control back between them.
    #[cold]
    #[inline(never)]
    fn cancelled_yield(&mut self) -> Cancelled {
        self.header().set_flag(flag::WOKEN_WHILE_RUNNING);
        self.switch_out();
        Cancelled
    }

    /// Switches to the executor; returns when resumed.
    #[inline(always)]
    fn switch_out(&mut self) {
        let core = self.core.as_ptr();
        // SAFETY: we are the running fiber of this core (fiber bodies only get a `Fiber`
        // for their own core), on its stack. On keel's own switch the suspend is inlined
        // here, so no call frame straddles the switch and every `ret` stays paired
        // with its `call` (an out-of-line suspend costs two return mispredicts).
        unsafe {
            if (*core).on_asm {
                crate::arch::AsmSwitch::suspend((core as *mut u8).add(ASM_REGS_OFFSET).cast());
            } else {
                Self::switch_out_other(core)
            }
        };
    }

    /// `switch_out` off the hot path: another switcher, or saving the floating-point
    /// control state (fiber rule 7). Inlined too, for the same `ret` pairing.
    ///
    /// # Safety
    /// As in `switch_out`: `core` is the running fiber's own, and we are on its stack.
    #[inline(always)]
    unsafe fn switch_out_other(core: *mut FiberCore) {
        use crate::arch::{fp_control, fp_control_differs, set_fp_control};
        // SAFETY: as in `switch_out` (caller): the core is live and ours.
        let save_fp = unsafe { (*core).save_fp };
        let saving = save_fp != SaveFp::No;
        let mine = if saving {
            let mine = fp_control();
            // SAFETY: live core (caller).
            let exec = unsafe { (*core).fp.get() };
            if fp_control_differs(mine, exec) {
                // SAFETY: `exec` was read from this thread by `fp_control`; the executor
                // runs next and expects its own values (fiber rule 7).
                unsafe { set_fp_control(exec) };
            }
            mine
        } else {
            crate::arch::FpControl::default()
        };
        // SAFETY: as in `switch_out` (caller).
        unsafe {
            if save_fp == SaveFp::OnAsm {
                crate::arch::AsmSwitch::suspend((core as *mut u8).add(ASM_REGS_OFFSET).cast());
            } else {
                ((*core).suspend)(core)
            }
        }
        if saving {
            let exec = fp_control();
            // SAFETY: live core (caller).
            unsafe { (*core).fp.set(exec) };
            if fp_control_differs(mine, exec) {
                // SAFETY: `mine` was read by `fp_control` before the suspension, and
                // this fiber runs on with it (fiber rule 7).
                unsafe { set_fp_control(mine) };
            }
        }
    }

    /// Goes to the back of its priority's run queue.
    #[inline(always)]
    pub fn yield_now(&mut self) -> Result<(), Cancelled> {
        // Fiber rule 5: it switches out even when cancelled.
        self.header().set_flag(flag::WOKEN_WHILE_RUNNING);
        self.switch_out();
        self.cancelled()
    }

    /// Suspends for `d` (huge durations saturate).
    #[inline(always)]
    pub fn sleep(&mut self, d: Duration) -> Result<(), Cancelled> {
        let deadline = self.sched().now().saturating_add(d);
        self.sleep_until(deadline)
    }

    /// Suspends until `deadline` on the executor's clock.
    #[inline(always)]
    pub fn sleep_until(&mut self, deadline: Instant) -> Result<(), Cancelled> {
        loop {
            if self.header().has_flag(flag::CANCEL) {
                // Fiber rule 5 (a cancel that woke it costs one more pass).
                return Err(self.cancelled_yield());
            }
            if self.sched().now() >= deadline {
                return Ok(());
            }
            self.sched().arm(self.core().header, deadline);
            self.header().reason.set(SuspendReason::Timer);
            self.switch_out();
        }
    }

    /// Suspends until woken (`TaskHandle::wake`, a waker, `Executor::wake`). A wake that
    /// came while it ran counts: it returns after a pass through the run queue.
    #[inline(always)]
    pub fn wait(&mut self) -> Result<(), Cancelled> {
        if self.header().has_flag(flag::CANCEL) {
            return Err(self.cancelled_yield());
        }
        self.header().reason.set(SuspendReason::Wait);
        self.switch_out();
        self.cancelled()
    }

    /// The executor's clock.
    pub fn now(&self) -> Instant {
        self.sched().now()
    }

    /// This run's handle.
    pub fn task(&self) -> TaskHandle {
        // Relaxed: owner-written, read on the owner's thread.
        TaskHandle::from_parts(self.core().header, self.header().generation.load(Ordering::Relaxed))
    }

    /// Starts `op`, linking `status` (pinned on this fiber's stack) on the task's
    /// initiated list.
    ///
    /// While there is no room to submit, the fiber waits in I/O-priority order (FIFO
    /// within a priority, so its own operations enter in the order it initiated them).
    ///
    /// Inlined, so the operation is built where the driver copies it from (out of line,
    /// the copy re-read bytes the caller had just stored piecewise: a store-forwarding
    /// stall that cost about a fifth of a NOP's user time).
    #[inline(always)]
    pub fn initiate<D: Driver>(&mut self, status: Pin<&IoStatus>, op: D::Op) -> Result<(), InitiateError<D::Op>> {
        let mut op = Some(op);
        match self.sched().initiate_from::<D>(status, self.core().header, &mut op) {
            Ok(()) => Ok(()),
            Err(e) => self.initiate_refused::<D>(status, op, e),
        }
    }

    /// `initiate` after a refusal: wait for room while it is `EBUSY`, else fail.
    #[inline(never)]
    fn initiate_refused<D: Driver>(
        &mut self,
        status: Pin<&IoStatus>,
        mut op: Option<D::Op>,
        mut refusal: InitiateError<()>,
    ) -> Result<(), InitiateError<D::Op>> {
        loop {
            match refusal {
                InitiateError::Refused((), crate::Errno::EBUSY) => {
                    self.sched().wait_for_submit(self.core().header);
                    self.switch_out();
                    if self.cancelled().is_err() {
                        return Err(InitiateError::Cancelled(op.take().expect("refused operations stay in place")));
                    }
                }
                InitiateError::Cancelled(()) => {
                    // Only on entry: after a switch the flag was checked just above.
                    let Cancelled = self.cancelled_yield();
                    return Err(InitiateError::Cancelled(op.take().expect("refused operations stay in place")));
                }
                e => return Err(e.with_op(op.take().expect("refused operations stay in place"))),
            }
            match self.sched().initiate_from::<D>(status, self.core().header, &mut op) {
                Ok(()) => return Ok(()),
                Err(e) => refusal = e,
            }
        }
    }

    /// Initiates `first` and `second` back to back, or neither: for a pair whose first
    /// operation links the second (`IOSQE_IO_LINK`, which the kernel honours only within
    /// one submission). Both go in only if there is room for both now and nobody waits for
    /// room; otherwise neither is submitted and both come back with `Refused(EBUSY)` (the
    /// task is not queued: the caller may fall back to doing them one after the other).
    pub fn initiate_pair<D: Driver>(
        &mut self,
        first: (Pin<&IoStatus>, D::Op),
        second: (Pin<&IoStatus>, D::Op),
    ) -> Result<(), PairRefused<D::Op>> {
        let ((s1, op1), (s2, op2)) = (first, second);
        let sched = self.sched();
        let refused =
            |reason: InitiateError<()>, first: D::Op, second: D::Op| Err(PairRefused { reason, first, second });
        if self.cancelled().is_err() {
            let Cancelled = self.cancelled_yield();
            return refused(InitiateError::Cancelled(()), op1, op2);
        }
        if s1.is_busy() || s2.is_busy() || core::ptr::eq(s1.get_ref(), s2.get_ref()) {
            return refused(InitiateError::StatusBusy(()), op1, op2);
        }
        let Some(driver) = sched.driver_as::<D>() else { return refused(InitiateError::WrongDriver(()), op1, op2) };
        // Driver rule 1: inside a `with_driver` closure.
        if sched.is_lent() {
            return refused(InitiateError::DriverBusy(()), op1, op2);
        }
        if !sched.room_for(driver, 2) {
            return refused(InitiateError::Refused((), crate::Errno::EBUSY), op1, op2);
        }
        let h = self.core().header;
        let (mut a, mut b) = (Some(op1), Some(op2));
        if let Err(e) = sched.initiate_from::<D>(s1, h, &mut a) {
            return refused(e, a.expect("refused operations stay in place"), b.expect("not yet submitted"));
        }
        // Cannot be refused: room for two was checked with nothing running in between.
        match sched.initiate_from::<D>(s2, h, &mut b) {
            Ok(()) => Ok(()),
            Err(e) => {
                unreachable!("keel bug: the second of a pair was refused ({e:?}) after room for both was checked")
            }
        }
    }

    /// Suspends until woken by a completion of one of its operations (or anything else),
    /// ignoring cancellation: for waiting out an operation whose buffer lives on this
    /// fiber's stack, which must complete before the frame is left.
    #[inline(always)]
    pub fn wait_io(&mut self) {
        self.header().reason.set(SuspendReason::Io);
        self.switch_out();
    }

    /// Asks the driver to cancel `status`'s operation if it is in flight.
    pub fn cancel_io(&mut self, status: Pin<&IoStatus>) {
        self.sched().cancel_status(&status);
    }

    /// The task's CPU and I/O priorities.
    pub fn priorities(&self) -> crate::Priorities {
        self.header().prio.get()
    }

    /// Whether the task has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled().is_err()
    }

    /// Lends the executor's driver to `f` if it is a `D`, as a [`DriverMut`] (driver
    /// rules 1-2, exec/lend.rs). `None` for another driver type or while the driver is
    /// lent already; [`Fiber::try_with_driver`] says which.
    pub fn with_driver<D: Driver, R>(&mut self, f: impl FnOnce(&mut DriverMut<'_, D>) -> R) -> Option<R> {
        self.try_with_driver(f).ok()
    }

    /// [`Fiber::with_driver`] with the reason it could not lend the driver.
    pub fn try_with_driver<D: Driver, R>(
        &mut self,
        f: impl FnOnce(&mut DriverMut<'_, D>) -> R,
    ) -> Result<R, crate::DriverError> {
        let sched = self.sched();
        let d = sched.driver_as::<D>().ok_or(crate::DriverError::WrongDriver)?;
        let _lent = sched.lend().map_err(|_| crate::DriverError::Busy)?;
        // SAFETY: driver rule 1: lent (the flag set) until `_lent` drops, after `f`.
        let mut d = unsafe { DriverMut::lend(d) };
        Ok(f(&mut d))
    }

    /// Suspends until one of its operations completes, then takes up to `max` completed
    /// status blocks (their `result()` is set); `Ok(0)` at once if nothing is in flight.
    #[inline(always)]
    pub fn suspend_until_completed_io(&mut self, max: usize) -> Result<usize, Cancelled> {
        loop {
            if self.header().has_flag(flag::CANCEL) {
                // Fiber rule 5 (a cancel that woke it costs one more pass).
                return Err(self.cancelled_yield());
            }
            let tr = self.core().header.trailer();
            if !tr.completed.is_empty() {
                return Ok(crate::io_status::block::take_completed(tr, max));
            }
            if tr.initiated.is_empty() {
                return Ok(0);
            }
            self.header().reason.set(SuspendReason::Io);
            self.switch_out();
        }
    }

    /// Submits `op` with a wake token, for an operation whose result the driver keeps for
    /// the caller to take (multishot, buffer-select): the fiber counterpart of
    /// [`crate::io_status::try_submit`]. Admission is `initiate`'s: while the driver has no
    /// room, other tasks already queue for it, or the executor's `max_io_in_flight` is
    /// reached, the fiber waits in I/O-priority order (FIFO within a priority) and tries
    /// again when granted room. The operation is on no status block, so the caller owns
    /// its id: it must take the result or abandon the operation through the driver.
    ///
    /// Errors hand the operation back: `Cancelled` (before submission, also while
    /// waiting), `WrongDriver`, `Refused` (the driver refused it for a reason other than
    /// room).
    pub fn try_submit<D: Driver>(&mut self, op: D::Op) -> Result<crate::OpId, InitiateError<D::Op>> {
        use crate::error::SubmitRefused;
        if self.sched().driver_as::<D>().is_none() {
            return Err(InitiateError::WrongDriver(op));
        }
        let mut op = Some(op);
        let back = |op: &mut Option<D::Op>| op.take().expect("refused operations stay in place");
        let mut entry = true;
        loop {
            if self.cancelled().is_err() {
                if entry {
                    let Cancelled = self.cancelled_yield();
                }
                return Err(InitiateError::Cancelled(back(&mut op)));
            }
            entry = false;
            match self.sched().submit_with_wake_token::<D>(self.core().header, &mut op, true) {
                Ok(id) => return Ok(id),
                // Queued for room (by I/O priority); the grant wakes this fiber.
                Err(SubmitRefused::Wait) => {}
                // The driver had no room after all: queue as for any other lack of room.
                Err(SubmitRefused::Failed(crate::Errno::EBUSY)) => self.sched().wait_for_submit(self.core().header),
                Err(SubmitRefused::Failed(crate::Errno::ECANCELED)) => {
                    return Err(InitiateError::Cancelled(back(&mut op)));
                }
                Err(SubmitRefused::Failed(e)) => return Err(InitiateError::Refused(back(&mut op), e)),
            }
            self.switch_out();
        }
    }
}

/// Why [`Fiber::initiate_pair`] submitted neither operation; both come back.
#[derive(Debug)]
pub struct PairRefused<Op> {
    /// The reason (`Refused(EBUSY)`: no room for both now).
    pub reason: InitiateError<()>,
    /// The first operation.
    pub first: Op,
    /// The second operation.
    pub second: Op,
}
