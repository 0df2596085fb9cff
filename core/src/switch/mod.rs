//! Stackful context switchers, pluggable per task at run time.
//!
//! A switcher is a type implementing [`FiberSwitch`]; attaching a fiber names one, and
//! the task's body vtable (`task/body.rs`) is made for it, so one executor runs tasks on
//! different switchers side by side: [`AsmSwitch`](crate::arch::AsmSwitch) (keel's own),
//! the stackless switcher (futures), and any switcher from outside the core (keel-linux's
//! `ucontext` one). The fibers themselves (`Fiber`, their bodies) are the [`fiber`](crate::fiber)
//! module, above the scheduler; this module and `arch` are below it.

use crate::stack::Stack;

/// Which kind of switcher resumes a task.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SwitcherKind {
    /// A Rust `Future`, polled (no stack of its own).
    Stackless,
    /// A stackful fiber on keel's own context switch.
    Fiber,
    /// A stackful fiber on a switcher supplied from outside the core.
    Custom,
}

/// A way to switch between an executor and a fiber running on its own stack.
///
/// # Safety
/// - `init` prepares `regs` so that the first `resume` runs `entry(arg)` on `stack`.
/// - `resume` runs the fiber until it calls `suspend` or `exit` with the same `regs`,
///   then returns on the resumer's stack with the resumer's callee-saved registers
///   intact. MXCSR's control bits and the x87 control word may be left as the fiber
///   left them: the fiber layer checks and restores those (fiber rules 6 and 7), so a
///   switcher need not save them (keel's does not; glibc's `swapcontext` does).
/// - `suspend` returns only when `resume` is called again with the same `regs`.
/// - None of them unwinds.
pub unsafe trait FiberSwitch: 'static {
    /// The saved context, stored in the task's body storage.
    type Regs: Default;
    /// How the task reports its switcher.
    const KIND: SwitcherKind;

    /// Prepares a fresh fiber.
    ///
    /// # Safety
    /// `regs` is valid and will not move while the fiber lives; `stack` is unused and
    /// stays valid until the fiber exits.
    unsafe fn init(regs: *mut Self::Regs, stack: &Stack, entry: unsafe extern "C" fn(*mut u8) -> !, arg: *mut u8);

    /// Switches into the fiber; returns when it suspends or exits.
    ///
    /// # Safety
    /// `regs` holds an initialised or suspended fiber, not running.
    unsafe fn resume(regs: *mut Self::Regs);

    /// Switches from the running fiber back to its resumer.
    ///
    /// # Safety
    /// Called on the fiber's stack, by the fiber that `regs` belongs to.
    unsafe fn suspend(regs: *mut Self::Regs);

    /// Switches away for the last time.
    ///
    /// # Safety
    /// As for `suspend`; the fiber is never resumed again.
    unsafe fn exit(regs: *mut Self::Regs) -> !;
}
