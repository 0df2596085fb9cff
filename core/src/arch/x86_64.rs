//! The x86_64 (System V) fiber switch.
//!
//! # Saved context
//!
//! ```text
//! AsmRegs (#[repr(C)], 16 bytes)
//!   +0  sp    the fiber's stack pointer while it is suspended; [sp] is where it resumes
//!   +8  link  the resumer's stack pointer while the fiber runs; [link] is the return
//!             address the resumer's `call` pushed
//! ```
//!
//! Only rbx and rbp are saved by hand: they are the two callee-saved registers LLVM
//! will not accept as asm operands. r12-r15 and every caller-saved register are
//! declared clobbered, so the compiler saves only what is live around the switch
//! (corosensei's choice); that is why the switch is inline `asm!`, not a naked function
//! that would save all six every time.
//!
//! # Stack diagrams
//!
//! A suspended fiber's stack (grows down):
//!
//! ```text
//!   | ...fiber frames...     |
//!   | saved rbp              |
//!   | saved rbx              |
//!   | resume address (2: in `suspend`, or the trampoline) |  <- regs.sp
//! ```
//!
//! The resumer's stack while the fiber runs:
//!
//! ```text
//!   | ...executor frames...  |
//!   | saved rbp              |
//!   | saved rbx              |
//!   | return address of its `call` |  <- regs.link
//! ```
//!
//! # The protocol, and why every `call` is paired with a `ret`
//!
//! - `resume`: push rbp, rbx; `call [regs.sp]` (rdi = regs, rsi = regs.sp). The call
//!   pushes the resumer's return address (on the resumer's stack, and on the CPU's
//!   return-stack buffer) and jumps to where the fiber left off.
//! - at the fiber's resume address (label `2:` in `suspend`, or the trampoline): store
//!   rsp into `regs.link`, move rsp to `regs.sp + 8`, pop rbx, rbp; carry on.
//! - `suspend`: push rbp, rbx, the address of `2:`; store rsp in `regs.sp`; load rsp
//!   from `regs.link`; `ret`. That `ret` pops the return address the resumer's `call`
//!   pushed, so the return-stack buffer predicts it. (A switch that `ret`s to an
//!   address it pushed itself on the other stack mispredicts every time: 17-20 ns
//!   against 3.5 ns measured here.)
//! - `exit`: load rsp from `regs.link`; `ret`. The finished fiber's stack is never
//!   touched again; the executor releases it after this switch (deferred free).
//!
//! Register contents at each entry:
//! - `2:` and the trampoline: rdi = &regs, rsi = regs.sp, rsp = resumer's stack with the
//!   return address on top. Everything else is garbage (declared clobbered).
//! - after `call [rsi]` returns in `resume`: rsp = resumer's stack holding saved rbx,
//!   rbp; all other registers clobbered.
//!
//! # First entry
//!
//! `init` lays out a fresh stack (top 16-aligned) so that the first resume `call`s the
//! trampoline:
//!
//! ```text
//!   top-8   0          \ padding; rsp = top-16 (16-aligned) before the call,
//!   top-16  0          /  as the ABI wants
//!   top-24  arg        -> rdi for entry
//!   top-32  entry      -> called
//!   top-40  trampoline <- regs.sp
//! ```
//!
//! The trampoline records the link, sets rsp to top-32, pops entry and arg, clears rbp
//! (ending frame-pointer walks), pushes a zero return address (ending backtraces) and
//! *jumps* to `entry(arg)`, which never returns: it ends with `exit`. A `call` there
//! would never be matched by a `ret`, and every return of the executor after the fiber's
//! `exit` would then mispredict (about 20 ns per fiber spawn, measured).
//!
//! The suspend must be inlined into the fiber code that calls it: an out-of-line suspend
//! leaves a call frame straddling the switch, so its `ret`s pair with the wrong `call`s
//! (two mispredicts per round trip: 16.4 ns against 2.2 ns measured). keel's fiber layer
//! inlines it for `AsmSwitch` (`switch/fiber.rs`).
//!
//! # Floating-point control state
//!
//! MXCSR and the x87 control word are *not* saved or restored. The System V ABI makes
//! their control bits callee-saved, and they are per-thread state that keel's own code
//! never changes; saving them would add `stmxcsr`/`ldmxcsr` and `fnstcw`/`fldcw` to every
//! switch (a few ns, as much as the switch itself). A fiber body that changes rounding
//! or exception masks must restore them before it suspends, as it would before
//! returning from any function.

use crate::switch::FiberSwitch;
use crate::stack::Stack;
use core::arch::{asm, naked_asm};

/// Saved context of a fiber on keel's own switch.
#[repr(C)]
#[derive(Debug)]
pub struct AsmRegs {
    sp: *mut u8,
    link: *mut u8,
}

impl Default for AsmRegs {
    fn default() -> Self {
        AsmRegs { sp: core::ptr::null_mut(), link: core::ptr::null_mut() }
    }
}

static_assertions::const_assert_eq!(core::mem::offset_of!(AsmRegs, sp), 0);
static_assertions::const_assert_eq!(core::mem::offset_of!(AsmRegs, link), 8);
static_assertions::const_assert_eq!(core::mem::size_of::<AsmRegs>(), 16);

/// keel's hand-written x86_64 switch (see the module doc).
#[derive(Debug)]
pub struct AsmSwitch;

#[unsafe(naked)]
unsafe extern "C" fn trampoline() {
    naked_asm!(
        "mov [rdi + 8], rsp",
        "lea rsp, [rsi + 8]",
        "pop rax",
        "pop rdi",
        "xor ebp, ebp",
        "push 0",
        "jmp rax",
    )
}

// SAFETY: implements the protocol in the module doc; `resume` and `suspend` are each
// other's partners, `init` lays out the first-entry frame the trampoline expects.
unsafe impl FiberSwitch for AsmSwitch {
    type Regs = AsmRegs;
    const KIND: crate::task::SwitcherKind = crate::task::SwitcherKind::Fiber;

    unsafe fn init(regs: *mut AsmRegs, stack: &Stack, entry: unsafe extern "C" fn(*mut u8) -> !, arg: *mut u8) {
        let top = stack.top() as *mut usize;
        // SAFETY: the stack has at least 40 usable bytes below its 16-aligned top (the
        // fiber layer refuses smaller stacks) and no fiber runs on it yet.
        unsafe {
            top.sub(1).write(0);
            top.sub(2).write(0);
            top.sub(3).write(arg as usize);
            top.sub(4).write(entry as *const () as usize);
            top.sub(5).write(trampoline as *const () as usize);
            (*regs).sp = top.sub(5) as *mut u8;
        }
    }

    #[inline(always)]
    unsafe fn resume(regs: *mut AsmRegs) {
        // SAFETY: `regs` holds a suspended (or freshly initialised) fiber (caller); the
        // protocol in the module doc brings control back here when it suspends or exits.
        unsafe {
            asm!(
                "push rbp",
                "push rbx",
                "call [rsi]",
                "pop rbx",
                "pop rbp",
                in("rdi") regs,
                in("rsi") (*regs).sp,
                lateout("r12") _, lateout("r13") _, lateout("r14") _, lateout("r15") _,
                clobber_abi("sysv64"),
            )
        }
    }

    #[inline(always)]
    unsafe fn suspend(regs: *mut AsmRegs) {
        // SAFETY: called on the fiber's own stack while it runs, so `regs.link` is its
        // resumer's stack with the return address on top (caller).
        unsafe {
            asm!(
                "push rbp",
                "push rbx",
                "lea rax, [rip + 2f]",
                "push rax",
                "mov [rdi], rsp",
                "mov rsp, [rdi + 8]",
                "ret",
                "2:",
                "mov [rdi + 8], rsp",
                "lea rsp, [rsi + 8]",
                "pop rbx",
                "pop rbp",
                in("rdi") regs,
                lateout("r12") _, lateout("r13") _, lateout("r14") _, lateout("r15") _,
                clobber_abi("sysv64"),
            )
        }
    }

    unsafe fn exit(regs: *mut AsmRegs) -> ! {
        // SAFETY: as for `suspend`; this fiber is never resumed again.
        unsafe { asm!("mov rsp, [rdi + 8]", "ret", in("rdi") regs, options(noreturn)) }
    }
}
