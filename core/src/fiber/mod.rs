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
//! 8. A fiber attached from another thread (`ExecutorHandle::attach_fiber`,
//!    `Dispatcher::submit_fiber`) is placed without a stack: the pool and the panic
//!    catcher belong to the executor and are touched on its thread only. Its first
//!    resume, on the owner's thread, takes both (one pool take, as a local attach does at
//!    attach); if the pool has no stack for it, the task completes with
//!    `TaskError::NoStack` without running and its closure is dropped. A fiber dropped
//!    before that first resume (cancelled, or its executor torn down) has no stack to
//!    give back.
//! 9. A fiber on keel's own switch that saves no floating-point control state (rule 7)
//!    is resumed by the scheduler inline (`resume_inline`, with the same checks around
//!    the switch as the vtable's: rule 6's, AddressSanitizer's): the switch sits in the
//!    run loop, so the registers it clobbers are saved where the run loop keeps values
//!    live, not all six on every resume behind an indirect call. A fiber attached on its
//!    executor's thread has its first entry laid out at attach, so its first resume is
//!    inline too, and its entry marks it started (rule 2) before the body runs; a fiber
//!    attached from another thread (rule 8) is resumed inline from its second resume on.
//!    Every other fiber's resume goes through the body vtable's `resume`.

#[cfg(keel_asan)]
mod asan;
mod body;
pub(crate) use body::DEBUG_FIBER;

mod io;

pub(crate) use body::{FiberBody, FiberVt, resume_inline};
pub use io::PairRefused;

use crate::clock::Instant;
use crate::error::Cancelled;
use crate::exec::sched::Sched;
use crate::switch::FiberSwitch;
use crate::sync::Ordering;
use crate::task::TaskHandle;
use crate::task::header::{Header, flag};
use crate::task::state::SuspendReason;
use body::{ASM_REGS_OFFSET, FiberCore, SaveFp};
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
    /// `core.header`, copied: a body holds `&mut Fiber`, so the compiler keeps this
    /// field in a register across a switch, whose asm clobbers memory; the same field
    /// read through `core` is loaded again after every switch.
    header: NonNull<Header>,
    /// `core.on_asm`, copied for the same reason (it never changes while the fiber
    /// lives).
    on_asm: bool,
}

impl Fiber {
    fn core(&self) -> &FiberCore {
        // SAFETY: the core lives in the task's body storage for the whole run.
        unsafe { self.core.as_ref() }
    }

    fn header(&self) -> &Header {
        // SAFETY: `'static` task header.
        unsafe { self.header.as_ref() }
    }

    fn sched(&self) -> &Sched {
        // Relaxed: the owner wrote it on this thread.
        let owner = self.header().owner.load(Ordering::Relaxed);
        // SAFETY: a running task's owner is a live, pinned executor (sched rule 1).
        unsafe { Sched::of_owner(owner) }
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
        #[cfg(keel_asan)]
        // SAFETY: our own live core.
        asan::leaving(unsafe { &*core });
        // SAFETY: we are the running fiber of this core (fiber bodies only get a `Fiber`
        // for their own core), on its stack. On keel's own switch the suspend is inlined
        // here, so no call frame straddles the switch and every `ret` stays paired
        // with its `call` (an out-of-line suspend costs two return mispredicts).
        unsafe {
            if self.on_asm {
                crate::arch::AsmSwitch::suspend((core as *mut u8).add(ASM_REGS_OFFSET).cast());
            } else {
                Self::switch_out_other(core)
            }
        };
        #[cfg(keel_asan)]
        // SAFETY: our own live core.
        asan::arrived(unsafe { &*core });
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

    /// The first half of a yield whose switch the caller makes itself, inlined into its
    /// own frame: for callers in other languages (keel-ffi's `keel_task_yield_inline`),
    /// whose out-of-line call to a switching function would leave a call frame straddling
    /// the switch (two return mispredicts per round trip, `arch/x86_64.rs`). Marks the
    /// yield as [`yield_now`](Self::yield_now) does before it switches and gives the
    /// address of the fiber's `AsmRegs` (`link` at +8; the suspend hands its stack
    /// pointer back in rsi, and the resumer stores it at +0). `None` when this
    /// fiber must switch through `yield_now` instead (another switcher, a floating-point
    /// control save, an AddressSanitizer build); nothing is marked then.
    ///
    /// # Safety
    /// With `Some(regs)`, before any other call on this fiber the caller switches out on
    /// `regs` with exactly `AsmSwitch::suspend`'s sequence (the protocol in
    /// `arch/x86_64.rs`'s module doc), on this fiber's stack, and once resumed asks
    /// [`is_cancelled`](Self::is_cancelled) for the yield's result.
    #[doc(hidden)]
    #[inline]
    pub unsafe fn begin_foreign_yield(&mut self) -> Option<NonNull<u8>> {
        if cfg!(keel_asan) || !self.on_asm {
            return None;
        }
        self.header().set_flag(flag::WOKEN_WHILE_RUNNING);
        // SAFETY: on `AsmSwitch` (`on_asm`), the regs sit at their offset in the body.
        Some(unsafe { NonNull::new_unchecked((self.core.as_ptr() as *mut u8).add(ASM_REGS_OFFSET)) })
    }

    /// Whether the caller runs on this fiber's own stack (a local's address is inside
    /// it): lets a foreign caller check that the fiber it names is the one running.
    #[doc(hidden)]
    #[inline]
    pub fn on_own_stack(&self) -> bool {
        let probe = 0u8;
        let here = core::hint::black_box(&probe) as *const u8 as usize;
        let stack = &self.core().stack;
        (stack.base.as_ptr() as usize..stack.top() as usize).contains(&here)
    }

    /// Suspends for `duration` (huge durations saturate).
    #[inline(always)]
    pub fn sleep(&mut self, duration: Duration) -> Result<(), Cancelled> {
        let deadline = self.sched().now().saturating_add(duration);
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
            self.sched().arm(self.header, deadline);
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
        TaskHandle::from_parts(self.header, self.header().generation.load(Ordering::Relaxed))
    }

    /// The task's CPU and I/O priorities.
    pub fn priorities(&self) -> crate::Priorities {
        self.header().prio.get()
    }

    /// Whether the task has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled().is_err()
    }
}
