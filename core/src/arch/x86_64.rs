//! The x86_64 (System V) fiber switch.
//!
//! # Saved context
//!
//! ```text
//! AsmRegs (#[repr(C)], 24 bytes)
//!   +0   sp       the fiber's stack pointer while it is suspended; [sp] is where it
//!                 resumes. The resumer writes it after each switch back (the fiber hands
//!                 it over in rsi), never the fiber
//!   +8   link     the resumer's stack pointer while the fiber runs; it points at the
//!                 resumer's frame record (saved rbp, then the return address its `call`
//!                 pushed)
//!   +16  base_ip  the trampoline's return label, constant: with `link` it makes a frame
//!                 record (see "Unwinding" below)
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
//! The resumer's stack while the fiber runs (its top two words are a frame record):
//!
//! ```text
//!   | ...executor frames...  |
//!   | saved rbx              |
//!   | return address of its `call` |
//!   | saved rbp              |  <- regs.link
//! ```
//!
//! # The protocol, and why every `call` is paired with a `ret`
//!
//! - `resume`: push rbx; `call [regs.sp]` (rdi = regs, rsi = regs.sp). The call pushes
//!   the resumer's return address (on the resumer's stack, and on the CPU's
//!   return-stack buffer) and jumps to where the fiber left off. When it returns: pop rbx,
//!   and store rsi (the suspended fiber's stack pointer) in `regs.sp`.
//! - at the fiber's resume address (label `2:` in `suspend`, or the trampoline): push
//!   rbp (completing the resumer's frame record), store rsp into `regs.link`, move rsp
//!   to `regs.sp + 8`, pop rbx, rbp; carry on.
//! - `suspend`: push rbp, rbx, the address of `2:`; copy rsp into rsi; load rsp from
//!   `regs.link`; pop rbp; `ret`. That `ret` pops the return address the resumer's
//!   `call` pushed, so the return-stack buffer predicts it. (A switch that `ret`s to an
//!   address it pushed itself on the other stack mispredicts every time: 17-20 ns
//!   against 3.5 ns measured here.)
//! - `exit`: zero rsi (a finished fiber's `regs.sp` is null); load rsp from
//!   `regs.link`; pop rbp; `ret`. The finished fiber's stack is never touched again; the
//!   executor releases it after this switch (deferred free).
//!
//! The fiber's stack pointer travels to the resumer in rsi, not through `regs.sp` on the
//! fiber's side (corosensei's choice too): the next resume starts from it, so a store
//! on one side and a load on the other put a store-to-load forward on the round trip's
//! dependency chain. With it in a register, a loop of resumes (the `switch` bench)
//! keeps it there: 2.51 against 2.58 ns per round trip, medians of 15 interleaved runs
//! here; a resume through the executor loads it from `regs.sp` as before.
//!
//! A round trip is 17 instructions: 9 to resume (4 in `resume`, 5 at the resume
//! address), 8 to suspend.
//!
//! Register contents at each entry:
//! - `2:` and the trampoline: rdi = &regs, rsi = regs.sp, rsp = resumer's stack with the
//!   return address on top, rbp = the resumer's. Everything else is garbage (declared
//!   clobbered).
//! - after `call [rsi]` returns in `resume`: rsp = resumer's stack holding saved rbx;
//!   rbp = the resumer's again; rsi = the fiber's stack pointer (0 after `exit`); all
//!   other registers clobbered.
//!
//! # First entry
//!
//! `init` lays out a fresh stack (top 16-aligned) so that the first resume `call`s the
//! trampoline:
//!
//! ```text
//!   top-8   0          \ padding
//!   top-16  0          /
//!   top-24  arg        -> rdi for entry
//!   top-32  entry      -> jumped to
//!   top-40  trampoline <- regs.sp
//! ```
//!
//! The trampoline does what the resume address does for the resumer's stack (push rbp,
//! record the link), sets rsp to top-32, pops entry and arg, points rbp at `regs.link`,
//! pushes the address of its own return label (so rsp = top-24, as the ABI wants at a
//! function's entry) and *jumps* to `entry(arg)`, which never returns: it ends with
//! `exit`. A `call` there would never be matched by a `ret`, and every return of the
//! executor after the fiber's `exit` would then mispredict (about 20 ns per fiber spawn,
//! measured). The return label holds an `int3` that never runs.
//!
//! # Unwinding across the switch
//!
//! The trampoline stays the bottom frame of the fiber's stack for its whole life, and its
//! call-frame information (written by hand, as corosensei does for its
//! `stack_init_trampoline`) names the resumer as its caller, so a DWARF unwinder (gdb,
//! libgcc's `_Unwind_Backtrace` under `std::backtrace`) walks from the fiber's frames
//! into the executor's `run` and on to `main`, on whichever thread resumed the fiber:
//!
//! - rbp in the trampoline's frame is `&regs.link` (set before the jump; callee-saved, so
//!   every unwinder recovers it there). The CFA is `[rbp] + 24`
//!   (`DW_CFA_def_cfa_expression: DW_OP_breg6 0; DW_OP_deref; DW_OP_plus_uconst 24`):
//!   the resumer's stack pointer outside the `resume` asm block, which is what the
//!   compiler's own CFI for the resumer's function expects there. The resumer's rbx is at
//!   CFA-8, its return address at CFA-16, its rbp at CFA-24.
//! - `.cfi_signal_frame`: gdb refuses a caller frame at a lower address than its callee
//!   ("previous frame inner to this frame") unless the callee is a signal frame, and a
//!   fiber stack can lie above or below the executor's. The price: unwinders look up the
//!   caller's CFI at its return address itself, not one byte before it, so the return
//!   address in `resume` is never the end of its asm block (`pop rbx` follows it); and
//!   gdb shows the trampoline as `<signal handler called>`.
//! - The trampoline's return label lies inside its `.cfi_startproc`/`.cfi_endproc` range
//!   with an instruction before it, so both the label (gdb's lookup for a signal frame)
//!   and the label minus one (everyone else's) find this CFI.
//!
//! Frame-pointer walkers (`perf record --call-graph fp`, with `-C
//! force-frame-pointers=yes`) follow rbp: the entry's frame record points at `&regs.link`,
//! which with `regs.base_ip` after it is itself a frame record whose next record is
//! `link`: the resumer's saved rbp and return address. So such a walk also reaches the
//! executor, with the trampoline named twice (once for each record).
//!
//! None of this costs the switch anything: the CFI is read only by unwinders, and the
//! resumer's frame record comes from pushing rbp on the other side of the `call`.
//!
//! keel's C header carries a copy of the suspend sequence (`keel_task_yield_inline` in
//! `linker/cbindgen.toml`, run by `linker/tests/c/inline_yield.c`): a change to the
//! protocol changes it too.
//!
//! The suspend must be inlined into the fiber code that calls it: an out-of-line suspend
//! leaves a call frame straddling the switch, so its `ret`s pair with the wrong `call`s
//! (two mispredicts per round trip: 16.4 ns against 2.2 ns measured). keel's fiber layer
//! inlines it for `AsmSwitch` (`fiber/mod.rs`).
//!
//! # Floating-point control state
//!
//! The switch saves neither MXCSR nor the x87 control word; `x86_64_fp.rs` says why and
//! holds the primitives the fiber layer keeps the ABI's promise with.

use crate::stack::Stack;
use crate::switch::FiberSwitch;
use core::arch::{asm, naked_asm};

/// Saved context of a fiber on keel's own switch.
#[repr(C)]
#[derive(Debug)]
pub struct AsmRegs {
    sp: *mut u8,
    link: *mut u8,
    base_ip: *const u8,
}

impl Default for AsmRegs {
    fn default() -> Self {
        AsmRegs { sp: core::ptr::null_mut(), link: core::ptr::null_mut(), base_ip: core::ptr::null() }
    }
}

static_assertions::const_assert_eq!(core::mem::offset_of!(AsmRegs, sp), 0);
static_assertions::const_assert_eq!(core::mem::offset_of!(AsmRegs, link), 8);
static_assertions::const_assert_eq!(core::mem::offset_of!(AsmRegs, base_ip), 16);
static_assertions::const_assert_eq!(core::mem::size_of::<AsmRegs>(), 24);

/// keel's hand-written x86_64 switch (see the module doc).
#[derive(Debug)]
pub struct AsmSwitch;

/// The fiber's first entry and, for its whole life, its bottom frame, whose CFI names
/// the resumer as its caller ("Unwinding across the switch" in the module doc).
#[unsafe(naked)]
unsafe extern "C" fn trampoline() {
    naked_asm!(
        ".cfi_startproc",
        ".cfi_signal_frame",
        // The resumer's frame record and the link to it, as at `2:` in `suspend`.
        "push rbp",
        "mov [rdi + 8], rsp",
        "lea rsp, [rsi + 8]",
        "lea rbp, [rdi + 8]",
        "pop rax",
        "pop rdi",
        // CFA = [rbp] + 24, i.e. `regs.link` + 24: DW_CFA_def_cfa_expression, 5 bytes:
        // DW_OP_breg6 (rbp) 0, DW_OP_deref, DW_OP_plus_uconst 24.
        ".cfi_escape 0x0f, 5, 0x76, 0x00, 0x06, 0x23, 0x18",
        ".cfi_offset rbx, -8",
        ".cfi_offset rip, -16",
        ".cfi_offset rbp, -24",
        // `regs.base_ip` (rbp + 8) and the return address entry sees: the label below.
        "lea rcx, [rip + 3f]",
        "mov [rbp + 8], rcx",
        "push rcx",
        "jmp rax",
        // Never reached (entry never returns); inside the CFI's range so that both the
        // label and the byte before it find this frame's CFI.
        "3:",
        "int3",
        ".cfi_endproc",
    )
}

// SAFETY: implements the protocol in the module doc; `resume` and `suspend` are each
// other's partners, `init` lays out the first-entry frame the trampoline expects.
unsafe impl FiberSwitch for AsmSwitch {
    type Regs = AsmRegs;
    const KIND: crate::switch::SwitcherKind = crate::switch::SwitcherKind::Fiber;

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
        // protocol in the module doc brings control back here when it suspends or exits,
        // with rbp restored by the other side (it pops the frame record's rbp).
        unsafe {
            let sp: *mut u8;
            asm!(
                "push rbx",
                "call [rsi]",
                // Not the block's last instruction: the trampoline is a signal frame, so
                // unwinders look this frame's CFI up at the return address itself.
                "pop rbx",
                in("rdi") regs,
                inlateout("rsi") (*regs).sp => sp,
                lateout("r12") _, lateout("r13") _, lateout("r14") _, lateout("r15") _,
                clobber_abi("sysv64"),
            );
            // The suspended fiber's stack pointer comes back in rsi; stored here, on the
            // resumer's side, so a loop of resumes keeps it in a register.
            (*regs).sp = sp;
        }
    }

    #[inline(always)]
    unsafe fn suspend(regs: *mut AsmRegs) {
        // SAFETY: called on the fiber's own stack while it runs, so `regs.link` is its
        // resumer's frame record with the return address above it (caller).
        unsafe {
            asm!(
                "push rbp",
                "push rbx",
                "lea rax, [rip + 2f]",
                "push rax",
                "mov rsi, rsp",
                "mov rsp, [rdi + 8]",
                "pop rbp",
                "ret",
                "2:",
                "push rbp",
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
        unsafe { asm!("xor esi, esi", "mov rsp, [rdi + 8]", "pop rbp", "ret", in("rdi") regs, options(noreturn)) }
    }
}
