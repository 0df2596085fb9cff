//! The x86_64 floating-point control primitives the fiber layer uses around keel's switch.
//!
//! The System V ABI makes the control bits of MXCSR (rounding, flush-to-zero,
//! denormals-are-zero, exception masks: bits 6..16) and the whole x87 control word
//! (precision, rounding, exception masks) callee-saved; the MXCSR status flags (bits
//! 0..6) and the x87 status word are caller-saved. `resume`, `suspend` and `exit` in `x86_64.rs`
//! do *not* save or load them: they are per-thread state that the executor and every
//! fiber on it share, and `stmxcsr`/`ldmxcsr` plus `fnstcw`/`fldcw` in the switch would
//! cost about as much as the 22-instruction switch itself (and `ldmxcsr`/`fldcw` are
//! slow instructions). The fiber layer (`fiber`, fiber rules 6 and 7) keeps
//! the ABI's promise instead, with the primitives below:
//!
//! - in debug builds, and in release builds with keel-core's `fp-check` feature, it
//!   checks at every switch back to the executor whether the fiber left the control
//!   bits changed and, if so, loads the executor's values again (so the executor and the
//!   other fibers never run with a fiber's rounding mode) and reports the task
//!   (`TaskError::FpControlChanged`). Release builds leave the check out by default: it
//!   is one `fp_control` before the resume and one after, and two compares: 18
//!   instructions on a fiber yield's 145 (+12% by callgrind; 3-13 ns on a 12-18 ns
//!   yield across runs on a busy AMD EPYC, where `stmxcsr` and `fnstcw` are slow),
//!   over keel's +5% budget for the hot path;
//! - a fiber attached with `FiberAttrs { save_fp_control: true, .. }` saves its own
//!   control state at each suspension and gives the executor back its own, so it keeps
//!   its rounding mode across suspensions like any callee-saved register. Fibers that
//!   do not ask for it pay nothing (their suspend stays the inlined one above); one that
//!   does pays two `fp_control`s and compares per round trip (39 instructions, 5-14 ns
//!   measured there), plus the loads when its values differ from the executor's.
//!
//! `fp_control` reads both into one `FpControl`:
//!
//! ```text
//! FpControl (#[repr(C)], 8 bytes)
//!   +0  mxcsr   u32   stmxcsr / ldmxcsr  (bits 0..6: status flags, not compared)
//!   +4  x87_cw  u16   fnstcw / fldcw
//! ```
//!
//! The fields are compared one by one, never loaded as one 8-byte word: a load that
//! spans the two stores just made cannot be forwarded from them and stalls (about a
//! dozen cycles, twice per resume).
//!
//! Register contents: each primitive takes the `FpControl`'s address in one general
//! register and touches only those six bytes (`nostack`); rflags are left alone.

use core::arch::asm;

/// MXCSR and the x87 control word of this thread (see the module doc for the layout).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FpControl {
    /// MXCSR; bits 0..6 are status flags, not compared.
    pub(crate) mxcsr: u32,
    /// The x87 control word.
    pub(crate) x87_cw: u16,
}

static_assertions::const_assert_eq!(core::mem::offset_of!(FpControl, mxcsr), 0);
static_assertions::const_assert_eq!(core::mem::offset_of!(FpControl, x87_cw), 4);

/// MXCSR's status flags: caller-saved, so not part of what a fiber must restore.
const MXCSR_STATUS: u32 = 0x3f;

/// Reads this thread's MXCSR and x87 control word (`stmxcsr`, `fnstcw`).
#[inline(always)]
pub(crate) fn fp_control() -> FpControl {
    let mut control = core::mem::MaybeUninit::<FpControl>::uninit();
    // SAFETY: the two stores write `control`'s `mxcsr` (offset 0, 4 bytes) and `x87_cw`
    // (offset 4, 2 bytes), asserted above; nothing else is touched.
    unsafe {
        asm!(
            "stmxcsr [{p}]",
            "fnstcw [{p} + 4]",
            p = in(reg) control.as_mut_ptr(),
            options(nostack, preserves_flags),
        )
    };
    // SAFETY: both fields were written just above (the padding needs no value).
    unsafe { control.assume_init() }
}

/// Whether `a` and `b` differ in a callee-saved bit: MXCSR's control bits or the x87
/// control word (MXCSR's status flags are ignored).
#[inline(always)]
pub(crate) const fn fp_control_differs(a: FpControl, b: FpControl) -> bool {
    (a.mxcsr ^ b.mxcsr) & !MXCSR_STATUS != 0 || a.x87_cw != b.x87_cw
}

/// Loads `control`'s control bits into MXCSR (`ldmxcsr`) and the x87 control word (`fldcw`),
/// keeping MXCSR's current status flags.
///
/// # Safety
/// `control` came from [`fp_control`] (reserved MXCSR bits set would fault), and the code
/// that runs after it on this thread expects these control words (the executor's own,
/// or the running fiber's).
#[inline(always)]
pub(crate) unsafe fn set_fp_control(control: FpControl) {
    let control = FpControl { mxcsr: (control.mxcsr & !MXCSR_STATUS) | (fp_control().mxcsr & MXCSR_STATUS), ..control };
    // SAFETY: the two loads read `control`'s fields (offsets asserted above); the values are
    // valid (caller), and whoever runs next expects them (caller).
    unsafe {
        asm!(
            "ldmxcsr [{p}]",
            "fldcw [{p} + 4]",
            p = in(reg) &control,
            // Not `readonly`: the compiler is to treat it like any call that may change
            // state, and keep memory accesses on their side of it.
            options(nostack, preserves_flags),
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_flags_do_not_count_as_a_change_and_every_control_bit_does() {
        let base = FpControl { mxcsr: 0x1f80, x87_cw: 0x037f };
        for flag in 0..6 {
            assert!(
                !fp_control_differs(base, FpControl { mxcsr: base.mxcsr | 1 << flag, ..base }),
                "status flag {flag}"
            );
        }
        for bit in 6..16 {
            assert!(fp_control_differs(base, FpControl { mxcsr: base.mxcsr ^ 1 << bit, ..base }), "MXCSR bit {bit}");
        }
        for bit in 0..16 {
            assert!(fp_control_differs(base, FpControl { x87_cw: base.x87_cw ^ 1 << bit, ..base }), "x87 bit {bit}");
        }
    }

    #[test]
    fn set_then_read_gives_the_control_bits_back_and_keeps_the_status_flags() {
        let start = fp_control();
        // Raise the precision flag (1/10 is inexact), then load round toward zero and
        // single precision.
        let tenth = core::hint::black_box(1.0f64) / core::hint::black_box(10.0f64);
        assert!(tenth > 0.0);
        let flags = fp_control().mxcsr & MXCSR_STATUS;
        assert_ne!(flags & 0x20, 0, "1/10 did not raise the precision flag");
        let changed =
            FpControl { mxcsr: (start.mxcsr | 0b11 << 13) & !MXCSR_STATUS, x87_cw: (start.x87_cw & !0x0f00) | 0x0c00 };
        // SAFETY: valid control words (read ones, with RC/PC fields changed); this test's
        // thread runs nothing else until they are put back below.
        unsafe { set_fp_control(changed) };
        let now = fp_control();
        assert_eq!(now.mxcsr & !MXCSR_STATUS, changed.mxcsr);
        assert_eq!(now.mxcsr & MXCSR_STATUS, flags, "set_fp_control dropped the status flags");
        assert_eq!(now.x87_cw, changed.x87_cw);
        // SAFETY: the thread's own values, read above.
        unsafe { set_fp_control(start) };
        assert!(!fp_control_differs(fp_control(), start));
    }
}
