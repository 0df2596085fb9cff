//! A fiber task's body: its storage (`FiberBody`: core, saved registers, closure), its
//! first frame, and the body vtable the scheduler resumes and drops it through (fiber
//! rules 1, 2, 4, 6 and 7 in the `fiber` module).

use super::{Fiber, FiberAttrs, PanicCatcher};
use crate::error::{TaskError, TaskResult};
use crate::exec::sched::Sched;
use crate::stack::Stack;
use crate::switch::FiberSwitch;
use crate::task::body::{BodyVTable, IntoTaskResult, Step};
use crate::task::header::{Header, SlotPtr};
use core::cell::Cell;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

/// Ordered: the states before `Started` are the ones a resume must start.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum FiberState {
    /// Attached from another thread: no stack yet, and `FiberCore::stack` holds only the
    /// size asked for (fiber rule 8).
    Unstacked,
    /// Has a stack from the owner's pool and has never run.
    Fresh,
    Started,
    Finished,
}

#[repr(C)]
pub(crate) struct FiberCore {
    pub(super) header: NonNull<Header>,
    pub(super) stack: Stack,
    pub(super) state: Cell<FiberState>,
    pub(super) result: Cell<Option<TaskResult>>,
    pub(super) catcher: Option<PanicCatcher>,
    pub(super) suspend: unsafe fn(*mut FiberCore),
    /// The fiber runs on `AsmSwitch` and saves no floating-point control state:
    /// `switch_out` inlines its suspend (see there). A field of its own, tested alone,
    /// so the hot path stays one test and branch.
    pub(super) on_asm: bool,
    /// Whether and how the fiber saves its floating-point control state (fiber rule 7).
    pub(super) save_fp: SaveFp,
    /// With `save_fp_control`: the executor's control state, read when the fiber was
    /// last resumed (fiber rule 7). Without: once `fp_fault` is set, the control state
    /// the fiber first left changed at a switch back (fiber rule 6).
    pub(super) fp: Cell<crate::arch::FpControl>,
    /// The fiber left its control state changed at a switch back (fiber rule 6).
    pub(super) fp_fault: Cell<bool>,
    /// The task's id, for `TaskError::FpControlChanged` (fiber rule 6).
    pub(super) task_id: u32,
    /// AddressSanitizer's view of the switches (`asan.rs`), in a keel_asan build only.
    #[cfg(keel_asan)]
    pub(super) asan: super::asan::AsanFiber,
}

/// Whether a fiber saves its floating-point control state (`FiberCore::save_fp`).
#[derive(Copy, Clone, PartialEq, Eq)]
pub(super) enum SaveFp {
    /// No (`FiberAttrs::save_fp_control` off).
    No,
    /// Yes, on `AsmSwitch` (whose suspend `switch_out_other` then inlines).
    OnAsm,
    /// Yes, on another switcher.
    OnOther,
}

/// Where an `AsmSwitch` fiber's regs sit from its core: `FiberBody` is `repr(C)` and
/// the body comes after the regs, so the offset does not depend on the body type.
pub(super) const ASM_REGS_OFFSET: usize = core::mem::offset_of!(FiberBody<crate::arch::AsmSwitch, ()>, regs);

/// For debuggers (`exec/debug.rs`), from a fiber's body: its stack's base and size, its
/// `FiberState` byte and the values of `Fresh` and `Started` there, and its regs (every
/// switcher's regs are pointer-aligned, so they sit where `AsmSwitch`'s do).
pub(crate) const DEBUG_FIBER: [usize; 6] = {
    const CORE: usize = core::mem::offset_of!(FiberBody<crate::arch::AsmSwitch, ()>, core);
    [
        CORE + core::mem::offset_of!(FiberCore, stack) + core::mem::offset_of!(Stack, base),
        CORE + core::mem::offset_of!(FiberCore, stack) + core::mem::offset_of!(Stack, size),
        CORE + core::mem::offset_of!(FiberCore, state),
        FiberState::Fresh as usize,
        FiberState::Started as usize,
        ASM_REGS_OFFSET,
    ]
};

#[repr(C)]
pub(crate) struct FiberBody<Sw: FiberSwitch, F> {
    pub(super) core: FiberCore,
    pub(super) regs: Sw::Regs,
    pub(super) body: MaybeUninit<F>,
}

impl<Sw: FiberSwitch, F> FiberBody<Sw, F> {
    /// The body of a fiber task at `header` about to be attached: fresh, on `stack`.
    pub(crate) fn new(
        header: NonNull<Header>,
        task_id: u32,
        stack: Stack,
        attrs: FiberAttrs,
        catcher: Option<PanicCatcher>,
        body: F,
    ) -> Self {
        let on_asm = core::any::TypeId::of::<Sw>() == core::any::TypeId::of::<crate::arch::AsmSwitch>();
        FiberBody {
            core: FiberCore {
                header,
                stack,
                state: Cell::new(FiberState::Fresh),
                result: Cell::new(None),
                catcher,
                suspend: suspend_with::<Sw, F>,
                on_asm: on_asm && !attrs.save_fp_control,
                save_fp: match (attrs.save_fp_control, on_asm) {
                    (false, _) => SaveFp::No,
                    (true, true) => SaveFp::OnAsm,
                    (true, false) => SaveFp::OnOther,
                },
                fp: Cell::new(crate::arch::FpControl::default()),
                fp_fault: Cell::new(false),
                task_id,
                #[cfg(keel_asan)]
                asan: Default::default(),
            },
            regs: Sw::Regs::default(),
            body: MaybeUninit::new(body),
        }
    }

    /// The body of a fiber task attached from another thread (fiber rule 8): no stack and
    /// no panic catcher yet; its first resume, on the owner's thread, takes both from the
    /// owner. `stack` holds the size asked for, over a dangling base nothing reads.
    pub(crate) fn new_unstacked(header: NonNull<Header>, task_id: u32, attrs: FiberAttrs, body: F) -> Self {
        let wanted = Stack { base: NonNull::dangling(), size: attrs.stack_size, guard: 0, tag: 0 };
        let mut fiber = Self::new(header, task_id, wanted, attrs, None, body);
        fiber.core.state = Cell::new(FiberState::Unstacked);
        fiber
    }

    /// A body that was never attached, taken apart: its closure.
    pub(crate) fn into_body(self) -> F {
        // SAFETY: `new` wrote the closure and nothing read it (the body never ran).
        unsafe { self.body.assume_init() }
    }

    /// A body that was never attached, taken apart: its stack (never run on) and closure.
    pub(crate) fn into_parts(self) -> (Stack, F) {
        // SAFETY: `new` wrote the closure and nothing read it (the body never ran).
        (self.core.stack, unsafe { self.body.assume_init() })
    }
}

/// Fiber rule 9: the scheduler's resume of a started fiber on keel's own switch,
/// inlined into the run loop; `exited` (the vtable's) finishes a fiber that returned.
///
/// # Safety
/// `task` is a live task of the calling executor whose vtable's `exited` is `exited`
/// (so its body bytes hold a started `FiberBody<AsmSwitch, _>`), not running, with no
/// borrow of scheduler or driver state live (sched rule 3).
#[inline(always)]
pub(crate) unsafe fn resume_inline(task: NonNull<Header>, exited: unsafe fn(NonNull<Header>) -> Step) -> Step {
    let body = task.body_ptr();
    // SAFETY: the core is the body's first field (`repr(C)`); only shared borrows of it
    // are made while the fiber is not running.
    let core = unsafe { &*(body as *const FiberCore) };
    // SAFETY: the body is a `FiberBody<AsmSwitch, _>` (caller), `repr(C)` with its regs
    // at `ASM_REGS_OFFSET` whatever the closure type; started and not running.
    let finished =
        around_switch(task, core, || unsafe { crate::arch::AsmSwitch::resume(body.add(ASM_REGS_OFFSET).cast()) });
    if !finished {
        return Step::Pending;
    }
    // SAFETY: the caller's contract: `exited` is this body's.
    unsafe { exited(task) }
}

/// One switch into the fiber whose core is `core` (`switch` makes it) with the checks
/// around it (floating-point control state, AddressSanitizer's fake stack), shared by the
/// vtable's resume and the run loop's inline one (fiber rule 9): whether the fiber has
/// exited.
#[inline(always)]
fn around_switch(task: NonNull<Header>, core: &FiberCore, switch: impl FnOnce()) -> bool {
    #[cfg(not(any(debug_assertions, feature = "fp-check")))]
    let _ = task;
    #[cfg(any(debug_assertions, feature = "fp-check"))]
    let before = crate::arch::fp_control();
    #[cfg(keel_asan)]
    let asan_fake = super::asan::before_resume(core);
    switch();
    #[cfg(keel_asan)]
    super::asan::after_resume(asan_fake);
    #[cfg(any(debug_assertions, feature = "fp-check"))]
    {
        let after = crate::arch::fp_control();
        if crate::arch::fp_control_differs(before, after) {
            fp_control_changed(task, core, before, after);
        }
    }
    core.state.get() == FiberState::Finished
}

pub(super) unsafe fn suspend_with<Sw: FiberSwitch, F>(core: *mut FiberCore) {
    let fiber_body = core as *mut FiberBody<Sw, F>;
    // SAFETY: `core` is the first field of a `FiberBody<Sw, F>` (repr(C)), so the regs
    // are at their offset in it; the caller is this fiber, on its stack.
    unsafe { Sw::suspend(&raw mut (*fiber_body).regs) }
}

/// The fiber's first frame (called by the switcher's first entry).
unsafe extern "C" fn entry<Sw: FiberSwitch, F, R>(arg: *mut u8) -> !
where
    F: FnOnce(&mut Fiber) -> R,
    R: IntoTaskResult,
{
    let fiber_body = arg as *mut FiberBody<Sw, F>;
    // SAFETY: `arg` is the fiber's body storage, initialised at attach; the body is
    // read out exactly once, here.
    let (core, body) =
        unsafe { (NonNull::new_unchecked(&raw mut (*fiber_body).core), (*fiber_body).body.assume_init_read()) };
    // SAFETY: the core lives for the whole run.
    let fiber_core = unsafe { core.as_ref() };
    // Running now: it cannot be dropped any more (fiber rule 2). A resume through the
    // vtable set this already; an inline first resume (fiber rule 9) did not.
    fiber_core.state.set(FiberState::Started);
    let mut fiber = Fiber { core, header: fiber_core.header, on_asm: fiber_core.on_asm };
    #[cfg(keel_asan)]
    super::asan::arrived(fiber_core);
    let saving = fiber_core.save_fp != SaveFp::No;
    if saving {
        // Fiber rule 7: the executor's control state, given back at each suspension.
        fiber_core.fp.set(crate::arch::fp_control());
    }
    let result = match fiber_core.catcher {
        None => body(&mut fiber).into_task_result(),
        Some(catch) => {
            let mut body = Some(body);
            let mut out = None;
            let caught = catch(&mut || out = Some(body.take().map(|b| b(&mut fiber).into_task_result())));
            match (caught, out.flatten()) {
                (Ok(()), Some(returned)) => returned,
                (Err(msg), _) => Err(TaskError::Panicked(msg)),
                (Ok(()), None) => Err(TaskError::Panicked("the fiber body did not run")),
            }
        }
    };
    fiber_core.result.set(Some(result));
    fiber_core.state.set(FiberState::Finished);
    if saving && crate::arch::fp_control_differs(crate::arch::fp_control(), fiber_core.fp.get()) {
        // SAFETY: read on this thread when the fiber was last resumed; the executor runs
        // next and expects it (fiber rule 7).
        unsafe { crate::arch::set_fp_control(fiber_core.fp.get()) };
    }
    #[cfg(keel_asan)]
    super::asan::exiting(fiber_core);
    // SAFETY: we are this fiber, on its stack, for the last time (fiber rule 1: the
    // executor frees the stack after this switch).
    unsafe { Sw::exit(&raw mut (*fiber_body).regs) }
}

/// Fiber rule 6: the fiber switched back with the control state `after`, the executor's
/// being `before`: load the executor's back, count it, remember the first for the task's
/// result. (A fiber with `save_fp_control` gives the executor its own back itself, fiber
/// rule 7, so it never gets here; its `fp` is not a fault record and is left alone.)
#[cfg(any(debug_assertions, feature = "fp-check"))]
#[cold]
#[inline(never)]
fn fp_control_changed(
    task: NonNull<Header>,
    core: &FiberCore,
    before: crate::arch::FpControl,
    after: crate::arch::FpControl,
) {
    // SAFETY: `before` was read on this thread just before the resume; the executor runs
    // on from here and expects it.
    unsafe { crate::arch::set_fp_control(before) };
    if core.save_fp == SaveFp::No && !core.fp_fault.get() {
        core.fp.set(after);
        core.fp_fault.set(true);
    }
    let sched = Sched::of_task(task).expect("keel bug: fiber without an owner");
    let stats = &sched.stats;
    stats.fp_control_restored.set(stats.fp_control_restored.get() + 1);
}

pub(crate) struct FiberVt<Sw, F, R>(core::marker::PhantomData<(Sw, F, R)>);

impl<Sw, F, R> FiberVt<Sw, F, R>
where
    Sw: FiberSwitch,
    F: FnOnce(&mut Fiber) -> R + 'static,
    R: IntoTaskResult,
{
    pub(crate) const VTABLE: BodyVTable =
        BodyVTable { resume: Self::resume, drop: Self::drop_body, kind: Sw::KIND, exited: None };

    /// What the first resume installs in place of [`VTABLE`](Self::VTABLE) (the same body
    /// type, drop and kind): the resume of a started fiber, which skips the look at the
    /// state for a first entry.
    const STARTED: BodyVTable =
        BodyVTable { resume: Self::resume_started, drop: Self::drop_body, kind: Sw::KIND, exited: None };

    /// [`STARTED`](Self::STARTED) for a fiber the scheduler resumes inline (fiber rule 9;
    /// installed only for a fiber on `AsmSwitch` that saves no control state).
    const STARTED_INLINE: BodyVTable =
        BodyVTable { resume: Self::resume_started, drop: Self::drop_body, kind: Sw::KIND, exited: Some(Self::exited) };

    /// [`VTABLE`](Self::VTABLE) for a fiber attached on this thread whose first entry was
    /// laid out at attach (fiber rule 9, [`attached`](Self::attached)): its first resume
    /// is inline too. `resume` stays the whole one (it lays the entry out again, on the
    /// same unused stack, if it is ever called first).
    const FRESH_INLINE: BodyVTable =
        BodyVTable { resume: Self::resume, drop: Self::drop_body, kind: Sw::KIND, exited: Some(Self::exited) };

    /// Fiber rule 9 at a local attach: a fresh fiber on `AsmSwitch` that saves no control
    /// state gets its first entry laid out now, and the vtable whose first resume is
    /// inline. Others keep [`VTABLE`](Self::VTABLE).
    ///
    /// # Safety
    /// `task` was just attached on this thread with [`VTABLE`](Self::VTABLE) and a fresh
    /// `FiberBody<Sw, F>` (a stack from the pool), and has not run.
    pub(crate) unsafe fn attached(task: NonNull<Header>) {
        let fiber_body = task.body_ptr() as *mut FiberBody<Sw, F>;
        // SAFETY: the caller's contract: a fresh body, not running, no reference into it
        // live; its stack is unused (fiber rule 1).
        unsafe {
            if (*fiber_body).core.on_asm {
                let stack = &(*fiber_body).core.stack;
                Sw::init(&raw mut (*fiber_body).regs, stack, entry::<Sw, F, R>, fiber_body as *mut u8);
                task.as_ref().body.set(Some(&Self::FRESH_INLINE));
            }
        }
    }

    /// Fiber rule 9: a fiber resumed inline has exited: its result and its stack.
    ///
    /// # Safety
    /// As [`resume`](Self::resume), and the fiber has just exited (the scheduler's
    /// inline resume saw it `Finished`).
    unsafe fn exited(task: NonNull<Header>) -> Step {
        // As in `resume`.
        let fiber_body = task.body_ptr() as *mut FiberBody<Sw, F>;
        // SAFETY: the caller's contract.
        unsafe { Self::finished(task, fiber_body) }
    }

    /// # Safety
    /// As [`resume`](Self::resume), and the fiber has started (only `resume` installs
    /// this vtable, after the first entry's set-up).
    unsafe fn resume_started(task: NonNull<Header>) -> Step {
        // The body bytes hold a `FiberBody<Sw, F>` (installed with this vtable), started
        // (`resume` installs this vtable after its first entry's set-up).
        let fiber_body = task.body_ptr() as *mut FiberBody<Sw, F>;
        // SAFETY: as in `resume`.
        debug_assert!(unsafe { (*fiber_body).core.state.get() } >= FiberState::Started);
        // SAFETY: a started fiber, not running (we are the executor).
        unsafe { Self::switch_in(task, fiber_body) }
    }

    /// # Safety
    /// `task` is a live task of the calling executor whose body bytes hold this vtable's
    /// `FiberBody<Sw, F>`, and the fiber is not running (the executor resumes it).
    unsafe fn resume(task: NonNull<Header>) -> Step {
        // The body bytes hold a `FiberBody<Sw, F>` (installed with this vtable).
        let fiber_body = task.body_ptr() as *mut FiberBody<Sw, F>;
        // SAFETY: as above; the fiber is not running (we are the executor). Only the
        // state field is borrowed, so `give_stack` may write the others.
        let state = unsafe { (*fiber_body).core.state.get() };
        if state < FiberState::Started {
            core::hint::cold_path();
            if state == FiberState::Unstacked {
                // SAFETY: as above; no reference into the body is live.
                if let Some(failed) = unsafe { Self::give_stack(task, fiber_body) } {
                    return failed;
                }
            }
            // SAFETY: as above; the fiber is fresh now, with an unused stack from the
            // pool (fiber rule 1).
            unsafe {
                (*fiber_body).core.state.set(FiberState::Started);
                let stack = &(*fiber_body).core.stack;
                Sw::init(&raw mut (*fiber_body).regs, stack, entry::<Sw, F, R>, fiber_body as *mut u8);
                // Started from here on: later resumes skip the state check (the body and
                // its drop are the same, body rule 1), inline where fiber rule 9 allows.
                let inline = (*fiber_body).core.on_asm;
                task.as_ref().body.set(Some(if inline { &Self::STARTED_INLINE } else { &Self::STARTED }));
            }
        }
        // SAFETY: as above; started, not running.
        unsafe { Self::switch_in(task, fiber_body) }
    }

    /// The switch into a started fiber and what its switch back says.
    ///
    /// # Safety
    /// `fiber_body` is the task's body, started (or fresh with its regs initialised), not
    /// running, with no reference into it live.
    #[inline(always)]
    unsafe fn switch_in(task: NonNull<Header>, fiber_body: *mut FiberBody<Sw, F>) -> Step {
        // SAFETY: the caller's contract.
        let core = unsafe { &(*fiber_body).core };
        // SAFETY: initialised or suspended, not running.
        if !around_switch(task, core, || unsafe { Sw::resume(&raw mut (*fiber_body).regs) }) {
            return Step::Pending;
        }
        // SAFETY: the caller's contract; the fiber has just exited.
        unsafe { Self::finished(task, fiber_body) }
    }

    /// A fiber that has just exited: its result, and its stack back to the pool (or held
    /// while its i/o drains, fiber rule 4).
    ///
    /// # Safety
    /// `fiber_body` is the task's body, whose fiber has exited (`Finished`), with no
    /// reference into it live.
    #[inline(always)]
    unsafe fn finished(task: NonNull<Header>, fiber_body: *mut FiberBody<Sw, F>) -> Step {
        // SAFETY: the caller's contract.
        let core = unsafe { &(*fiber_body).core };
        let mut result = core.result.take().unwrap_or(Err(TaskError::Panicked("fiber finished without a result")));
        if core.fp_fault.get() {
            // Fiber rule 6: the task is reported, whatever the body returned.
            let left = core.fp.get();
            result = Err(TaskError::FpControlChanged { task: core.task_id, mxcsr: left.mxcsr, x87_cw: left.x87_cw });
        }
        let sched = Sched::of_task(task).expect("keel bug: fiber without an owner");
        // SAFETY: `'static` header.
        let header = unsafe { task.as_ref() };
        // Body rule 1: the closure was consumed by the fiber's entry; nothing is left to drop.
        header.body.set(None);
        if task.io_in_flight() > 0 {
            // Fiber rule 4: the fiber returned with i/o in flight whose buffers may be on
            // its stack; the stack is held until the task has drained, then pooled.
            task.trailer().pending_stack.set(Some(core.stack));
        } else {
            // SAFETY: we are back on the executor's stack, so the fiber's stack is unused
            // from here on (fiber rule 1).
            unsafe { sched.stacks.put(core.stack, sched.now_if_trimming()) };
        }
        Step::Done(result)
    }

    /// An unstacked fiber's first resume (cold, fiber rule 8): it takes its stack and
    /// panic catcher from its owner and is fresh. `Some` is the step of a fiber that
    /// could get no stack: it completes with `TaskError::NoStack` without running, its
    /// closure dropped.
    ///
    /// # Safety
    /// `fiber_body` is the task's unstacked body, not running, with no reference into it
    /// live.
    #[cold]
    #[inline(never)]
    unsafe fn give_stack(task: NonNull<Header>, fiber_body: *mut FiberBody<Sw, F>) -> Option<Step> {
        let sched = Sched::of_task(task).expect("keel bug: fiber without an owner");
        // SAFETY: the caller's contract; raw places, written before any reference is made.
        unsafe {
            let wanted = (*fiber_body).core.stack.size;
            match sched.stacks.take(wanted, (*fiber_body).core.task_id) {
                Ok(stack) => {
                    (&raw mut (*fiber_body).core.stack).write(stack);
                    (&raw mut (*fiber_body).core.catcher).write(sched.cfg.fiber_panics);
                    (*fiber_body).core.state.set(FiberState::Fresh);
                    None
                }
                Err(errno) => {
                    (*fiber_body).core.state.set(FiberState::Finished);
                    // Body rule 1: the vtable goes first, so the closure is dropped once
                    // even if its `Drop` panics.
                    task.as_ref().body.set(None);
                    (*fiber_body).body.assume_init_drop();
                    Some(Step::Done(Err(TaskError::NoStack { errno: errno.0, wanted })))
                }
            }
        }
    }

    /// Fiber rule 2: only a fiber that has not started can be dropped.
    unsafe fn drop_body(task: NonNull<Header>) -> bool {
        // As in `resume`.
        let fiber_body = task.body_ptr() as *mut FiberBody<Sw, F>;
        // SAFETY: as in `resume`.
        let core = unsafe { &(*fiber_body).core };
        match core.state.get() {
            FiberState::Fresh => {
                let sched = Sched::of_task(task).expect("keel bug: fiber without an owner");
                // The stack goes back first: the closure's `Drop` may panic (body rule 1).
                // SAFETY: the stack was never run on.
                unsafe { sched.stacks.put(core.stack, sched.now_if_trimming()) };
                core.state.set(FiberState::Finished);
                // SAFETY: a fresh fiber's body is initialised and was never read out; its
                // vtable is no longer installed (body rule 1), so this is the only drop.
                unsafe { (*fiber_body).body.assume_init_drop() };
                true
            }
            FiberState::Unstacked => {
                core.state.set(FiberState::Finished);
                // SAFETY: as for a fresh fiber; there is no stack to give back.
                unsafe { (*fiber_body).body.assume_init_drop() };
                true
            }
            FiberState::Started | FiberState::Finished => false,
        }
    }
}
