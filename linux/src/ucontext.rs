//! A second stackful switcher, on glibc's `getcontext`/`makecontext`/`swapcontext`.
//!
//! [`UcontextSwitch`] implements [`keel_core::FiberSwitch`] with the System V `ucontext`
//! calls instead of keel's hand-written switch ([`keel_core::AsmSwitch`]). It is the
//! portable reference switcher (no architecture-specific code: it would serve wherever
//! glibc has the calls, though keel-core itself builds only for x86_64 today) and the
//! proof that switchers are pluggable: a task
//! names it at run time with
//! `Executor::attach_fiber_with::<UcontextSwitch, _, _>(task, attrs, body)`, and it runs
//! beside asm fibers and futures on the same executor, reported as
//! [`SwitcherKind::Custom`](keel_core::SwitcherKind::Custom).
//!
//! # Not on the hot path
//!
//! **This switcher is exempt from keel's hot-path rules.** glibc's `swapcontext` and
//! `setcontext` make an `rt_sigprocmask` system call on every switch (the signal mask is
//! part of a `ucontext_t`), and also store and load the floating-point environment. A
//! resume + suspend round trip therefore costs two syscalls: a fiber's `yield_now`
//! through the executor took about 470 ns here on this switcher against about 24 ns on
//! the asm switch (one-off measurement, release build; keel-bench is where timing
//! belongs). It allocates nothing and takes no lock, but every switch enters the kernel.
//! Use it for portability, for cross-checking the asm switch, or for code that wants the
//! per-context state described below; use `attach_fiber` (keel's own switch) where
//! switches are frequent.
//!
//! # Availability
//!
//! Built only for `target_os = "linux"` with `target_env = "gnu"` (glibc). Elsewhere the
//! module is empty: no `compile_error!`, because keel-linux is useful on musl with keel's
//! own switch, and musl has no `makecontext` family to build this on. Code that names
//! `UcontextSwitch` must carry the same `cfg`.
//!
//! # Where the contexts live
//!
//! A `ucontext_t` is 968 bytes on x86_64 glibc (it embeds the 512-byte FP save area and
//! `uc_mcontext.fpregs` points into itself, so it must not move once filled). Two of them
//! in the task's body storage would not fit the default 256-byte `TaskSlot`, so
//! [`UcontextRegs`] (the `Regs` in the body) is just two pointers:
//!
//! ```text
//! fiber stack (grows down)                      resumer (executor) stack
//!   top ->  +--------------------------+          | ...executor frames...   |
//!           | fiber's ucontext_t       | <- fiber | frame of `resume`:      |
//!           | (CTX_RESERVE bytes)      |          |   resumer's ucontext_t  | <- resumer
//!           +--------------------------+ <- uc_stack.ss_sp + ss_size
//!           | fiber frames: trampoline,|
//!           |   entry, the body ...    |
//!   base -> +--------------------------+
//! ```
//!
//! Rules (cited as "ucontext rule N"):
//! 1. `fiber` is set by `init` to the top [`CTX_RESERVE`] bytes of the fiber's stack,
//!    which the fiber never runs on (`uc_stack` ends below them). It stays valid while
//!    the stack is in use: from `init` until the fiber exits (fiber rule 1).
//! 2. `resumer` is set by each `resume` to a `ucontext_t` in its own frame, which stays
//!    live until that `resume` returns, that is until the fiber's next `suspend` or its
//!    `exit` has switched to it. Only the fiber reads it, and only in between.
//! 3. The usable stack is `Stack::size - CTX_RESERVE`; the fiber layer's 4096-byte
//!    minimum leaves about 3 KiB for the fiber's frames. Each `resume` takes about
//!    1 KiB of the executor's stack for the resumer's context.
//! 4. The stack pool keeps a spare's bookkeeping in its top bytes too (core
//!    `stack/pool.rs`); it writes there only after the fiber has exited, and `init`
//!    writes the whole context afresh, so nothing of a previous fiber survives reuse.
//!
//! # First entry
//!
//! `init` fills the fiber's context with `getcontext`, points `uc_stack` at the stack
//! below it, sets `uc_link` to null, and `makecontext`s the private `trampoline` with six
//! `int` arguments: the entry function's address, the body pointer and `regs`, each split
//! into low and high 32 bits (POSIX says `makecontext` passes `int`s; glibc on x86_64
//! would pass 64-bit values, but the split keeps to the standard). The trampoline puts
//! them back together and jumps to `entry(arg)` with its own return label in place of
//! `__start_context`; `entry` never returns: it ends with
//! [`FiberSwitch::exit`](keel_core::FiberSwitch::exit). A null `uc_link` would end the
//! thread if it ever did return.
//!
//! # Backtraces
//!
//! The trampoline stays the fiber's bottom frame, and its call-frame information (written
//! by hand, as keel-core's asm switch does for its own) names the resumer as its caller,
//! so gdb's `bt` and `std::backtrace` inside a running fiber walk on into
//! `UcontextSwitch::resume`, the executor's `run` and `main`. rbp in the trampoline's
//! frame is `&regs.resumer`; the resumer's context there holds what `swapcontext` saved
//! (ucontext rule 2), and the CFI reads it from there: the CFA is its `REG_RSP`, and
//! `REG_RIP`, `REG_RBP`, `REG_RBX` and `REG_R12`..`REG_R15` are where the resumer's
//! return address and callee-saved registers are (DWARF expressions `DW_OP_breg6 0;
//! DW_OP_deref; DW_OP_plus_uconst <offset in ucontext_t>`). The frame is a signal frame
//! (`.cfi_signal_frame`) for the reason keel-core's `arch` module doc gives: gdb accepts
//! a caller on another stack only from one. Frame-pointer walks (`perf --call-graph fp`)
//! stop at the trampoline: the resumer's context is no frame record.
//!
//! # Floating-point control state and the signal mask
//!
//! glibc's x86_64 `getcontext`, `swapcontext` and `setcontext` save the x87 environment
//! (`fnstenv`: control word, status word, tags) and MXCSR (`stmxcsr`), and load those of
//! the context switched to (`fldenv`, `ldmxcsr`); the x87 and SSE data registers are not
//! saved (they are caller-saved). So each fiber keeps its own rounding mode and exception
//! masks (its `fenv`): a fiber that calls `fesetround` keeps that mode across
//! suspensions, and the executor and other fibers do not see it; `exit`'s `setcontext`
//! gives the executor its own back when a fiber returns with a mode changed.
//! `linux/tests/fp_control_ucontext.rs` checks this against the glibc the tests run on
//! (round toward zero in MXCSR, single precision and round toward zero in the x87 control
//! word, across yields to an asm fiber and at the return). A new fiber starts with the
//! environment of the thread at its first resume (when `init` runs `getcontext`).
//!
//! keel's asm switch saves neither (`keel_core::arch`'s module doc says why): there the
//! core's fiber layer checks for a changed control word at every switch back where the
//! check is built and reports the task (fiber rule 6), or saves it for fibers attached
//! with `FiberAttrs::save_fp_control` (fiber rule 7). On this switcher the check never
//! fires (glibc has restored the executor's values before the core looks) and
//! `save_fp_control` changes nothing a fiber sees; it only adds the core's own save
//! beside glibc's. Code correct on the asm switch is correct here; code that relies on a
//! per-fiber `fenv` needs this switcher or `save_fp_control`. The signal mask is per
//! context in the same way (that is what the syscall is for).
//!
//! # Panics
//!
//! The core's fiber entry catches a panic when the executor has a `PanicCatcher`
//! (fiber rule 3), so unwinding stops there, above the trampoline. Without a catcher
//! the entry, `extern "C"`, aborts: an unwind never reaches the trampoline, whose CFI is
//! for backtraces only.
//!
//! # Failure
//!
//! glibc's calls fail only if `rt_sigprocmask` does, which it cannot with the masks they
//! pass. A failure is keel's broken invariant with no way to report it through a switch,
//! so it aborts the process with a message naming the call.

#![allow(
    unsafe_code,
    reason = "a context switcher: raw ucontext_t pointers, the glibc calls, and the FiberSwitch impl are unsafe by nature"
)]

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub use glibc::{CTX_RESERVE, UcontextRegs, UcontextSwitch};

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use core::mem::MaybeUninit;
    use core::ptr;
    use keel_core::{FiberSwitch, Stack, SwitcherKind};
    use libc::{c_int, ucontext_t};

    /// Bytes taken from the top of each fiber's stack for the fiber's own `ucontext_t`
    /// (ucontext rule 1): its size rounded up to 16, so the stack below stays 16-aligned.
    pub const CTX_RESERVE: usize = core::mem::size_of::<ucontext_t>().next_multiple_of(16);

    // The context sits at the 16-aligned stack top minus CTX_RESERVE: aligned enough.
    const _: () = assert!(core::mem::align_of::<ucontext_t>() <= 16);
    // ucontext rule 3: the fiber layer's smallest stack keeps most of its room.
    const _: () = assert!(CTX_RESERVE <= keel_core::fiber::MIN_STACK / 4);

    /// The saved context of a ucontext fiber, stored in the task's body storage: where
    /// the two `ucontext_t`s are (see the module doc for why they are not here).
    #[repr(C)]
    #[derive(Debug)]
    pub struct UcontextRegs {
        /// The fiber's context, in the top bytes of its stack (ucontext rule 1).
        fiber: *mut ucontext_t,
        /// The resumer's context, in the frame of the `resume` running it (rule 2).
        resumer: *mut ucontext_t,
    }

    // Layout: two pointers, nothing else in the task's body storage.
    const _: () = assert!(core::mem::offset_of!(UcontextRegs, fiber) == 0);
    const _: () = assert!(core::mem::offset_of!(UcontextRegs, resumer) == core::mem::size_of::<usize>());
    const _: () = assert!(core::mem::size_of::<UcontextRegs>() == 2 * core::mem::size_of::<usize>());

    impl Default for UcontextRegs {
        fn default() -> Self {
            UcontextRegs { fiber: ptr::null_mut(), resumer: ptr::null_mut() }
        }
    }

    /// The switcher on glibc's `ucontext` calls (see the module doc). Not on the hot
    /// path: every switch makes a signal-mask syscall.
    #[derive(Debug)]
    pub struct UcontextSwitch;

    #[cold]
    #[inline(never)]
    fn fatal(call: &str) -> ! {
        let err = std::io::Error::last_os_error();
        eprintln!("keel: {call} failed in the ucontext switcher ({err}); aborting");
        std::process::abort()
    }

    /// Offset of `uc_mcontext.gregs[reg]` in a `ucontext_t`, for the trampoline's CFI.
    const fn greg(reg: c_int) -> usize {
        core::mem::offset_of!(ucontext_t, uc_mcontext)
            + core::mem::offset_of!(libc::mcontext_t, gregs)
            + reg as usize * core::mem::size_of::<libc::greg_t>()
    }

    // The offsets written as ULEB128 bytes in the trampoline's CFI below.
    const _: () = assert!(greg(libc::REG_RSP) == 160 && greg(libc::REG_RIP) == 168);
    const _: () = assert!(greg(libc::REG_RBP) == 120 && greg(libc::REG_RBX) == 128);
    const _: () = assert!(greg(libc::REG_R12) == 72 && greg(libc::REG_R13) == 80);
    const _: () = assert!(greg(libc::REG_R14) == 88 && greg(libc::REG_R15) == 96);

    /// The fiber's first frame, entered by `makecontext`'s context: rebuilds the entry
    /// function, its argument and `regs` from 32-bit halves (edi/esi, edx/ecx, r8d/r9d),
    /// points rbp at `regs.resumer` and jumps to the entry. Its CFI names the resumer as
    /// its caller (see "Backtraces" in the module doc).
    ///
    /// # Safety
    /// Only as the function of a context made by `UcontextSwitch::init`: the halves are
    /// those of a valid `unsafe extern "C" fn(*mut u8) -> !`, the argument it expects and
    /// the fiber's `UcontextRegs`.
    #[unsafe(naked)]
    unsafe extern "C" fn trampoline() {
        core::arch::naked_asm!(
            ".cfi_startproc",
            ".cfi_signal_frame",
            "mov eax, edi",
            "shl rsi, 32",
            "or rax, rsi",
            "mov edi, edx",
            "shl rcx, 32",
            "or rdi, rcx",
            "mov r8d, r8d",
            "shl r9, 32",
            "or r8, r9",
            "lea rbp, [r8 + 8]",
            // DW_CFA_def_cfa_expression: [[rbp] + greg(RSP)], 7 bytes: DW_OP_breg6 0,
            // DW_OP_deref, DW_OP_plus_uconst 160, DW_OP_deref.
            ".cfi_escape 0x0f, 7, 0x76, 0x00, 0x06, 0x23, 0xa0, 0x01, 0x06",
            // DW_CFA_expression reg, len: DW_OP_breg6 0, DW_OP_deref, DW_OP_plus_uconst
            // greg(reg): rip (16) at 168, rbp (6) at 120, rbx (3) at 128, r12..r15 at 72..96.
            ".cfi_escape 0x10, 16, 6, 0x76, 0x00, 0x06, 0x23, 0xa8, 0x01",
            ".cfi_escape 0x10, 6, 5, 0x76, 0x00, 0x06, 0x23, 0x78",
            ".cfi_escape 0x10, 3, 6, 0x76, 0x00, 0x06, 0x23, 0x80, 0x01",
            ".cfi_escape 0x10, 12, 5, 0x76, 0x00, 0x06, 0x23, 0x48",
            ".cfi_escape 0x10, 13, 5, 0x76, 0x00, 0x06, 0x23, 0x50",
            ".cfi_escape 0x10, 14, 5, 0x76, 0x00, 0x06, 0x23, 0x58",
            ".cfi_escape 0x10, 15, 5, 0x76, 0x00, 0x06, 0x23, 0x60",
            // The return address entry sees (in place of __start_context's): the label
            // below, inside this CFI's range with an instruction before it.
            "lea rcx, [rip + 3f]",
            "mov [rsp], rcx",
            "jmp rax",
            "3:",
            "int3",
            ".cfi_endproc",
        )
    }

    /// Low and high 32 bits of a pointer-sized value, as `makecontext`'s `int`s.
    fn split(v: usize) -> (c_int, c_int) {
        let v = v as u64;
        (v as u32 as c_int, (v >> 32) as u32 as c_int)
    }

    // SAFETY: implements the FiberSwitch protocol with glibc's calls: `init` makes a
    // context whose first switch-in runs `entry(arg)` on `stack`; `resume` and `suspend`
    // are swapcontext pairs through the two contexts of ucontext rules 1 and 2 (glibc
    // saves and restores the callee-saved registers, the stack pointer and the resume
    // address); `exit` loads the resumer's context; nothing unwinds (the calls are C,
    // failures abort).
    unsafe impl FiberSwitch for UcontextSwitch {
        type Regs = UcontextRegs;
        const KIND: SwitcherKind = SwitcherKind::Custom;

        unsafe fn init(
            regs: *mut UcontextRegs,
            stack: &Stack,
            entry: unsafe extern "C" fn(*mut u8) -> !,
            arg: *mut u8,
        ) {
            debug_assert!(
                stack.size >= 2 * CTX_RESERVE,
                "keel bug: a fiber stack smaller than the fiber layer's minimum"
            );
            // SAFETY: the stack's top is 16-aligned and has at least CTX_RESERVE bytes
            // below it (asserted against MIN_STACK), unused (caller): the context goes
            // there (ucontext rule 1), aligned (asserted above).
            let ctx = unsafe { stack.top().sub(CTX_RESERVE) } as *mut ucontext_t;
            // SAFETY: `ctx` is valid for a `ucontext_t` (above); zeroing gives every
            // field getcontext leaves alone a defined value.
            unsafe { ptr::write_bytes(ctx, 0, 1) };
            // SAFETY: `ctx` is valid and will not move while the fiber lives (rule 1).
            if unsafe { libc::getcontext(ctx) } != 0 {
                fatal("getcontext");
            }
            let (e_lo, e_hi) = split(entry as *const () as usize);
            let (a_lo, a_hi) = split(arg as usize);
            let (r_lo, r_hi) = split(regs as usize);
            // SAFETY: `trampoline` reads six `c_int`s from the argument registers, as
            // makecontext passes them (the argument count says 6); the transmute only
            // drops the `unsafe`, as the C prototype `void (*)(void)` has none.
            let func = unsafe { core::mem::transmute::<unsafe extern "C" fn(), extern "C" fn()>(trampoline) };
            // SAFETY: `ctx` was filled by getcontext above; `uc_stack` is the stack's
            // usable bytes below the context (ucontext rule 3), all unused (caller).
            unsafe {
                (*ctx).uc_stack.ss_sp = stack.base.as_ptr().cast();
                (*ctx).uc_stack.ss_size = stack.size - CTX_RESERVE;
                (*ctx).uc_stack.ss_flags = 0;
                (*ctx).uc_link = ptr::null_mut();
                libc::makecontext(ctx, func, 6, e_lo, e_hi, a_lo, a_hi, r_lo, r_hi);
                (*regs).fiber = ctx;
            }
        }

        unsafe fn resume(regs: *mut UcontextRegs) {
            let mut here = MaybeUninit::<ucontext_t>::uninit();
            // SAFETY: `regs` is valid (caller); `here` lives until this call returns,
            // which is after the fiber's next switch to it (ucontext rule 2).
            unsafe { (*regs).resumer = here.as_mut_ptr() };
            // SAFETY: `fiber` holds an initialised or suspended context, not running
            // (caller); swapcontext saves ours into `here` and comes back here when the
            // fiber swaps or sets to it.
            if unsafe { libc::swapcontext(here.as_mut_ptr(), (*regs).fiber) } != 0 {
                fatal("swapcontext (resume)");
            }
        }

        unsafe fn suspend(regs: *mut UcontextRegs) {
            // SAFETY: we are the fiber of `regs`, on its stack (caller), so `resumer` is
            // the live context of the `resume` that runs us (ucontext rule 2) and `fiber`
            // is our own context's storage (rule 1).
            if unsafe { libc::swapcontext((*regs).fiber, (*regs).resumer) } != 0 {
                fatal("swapcontext (suspend)");
            }
        }

        unsafe fn exit(regs: *mut UcontextRegs) -> ! {
            // SAFETY: as for `suspend`; this fiber is never resumed, so nothing of its
            // context is saved (the core frees its stack once `resume` has returned).
            unsafe { libc::setcontext((*regs).resumer) };
            fatal("setcontext (exit)")
        }
    }
}
