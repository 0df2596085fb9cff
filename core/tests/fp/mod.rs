//! Reading and setting MXCSR and the x87 control word, shared by keel-core's and
//! keel-linux's floating-point control tests (keel-linux includes it by path).
#![allow(dead_code)]

use core::arch::asm;
use core::hint::black_box;

/// MXCSR's rounding-control bits (13-14); `11` is round toward zero.
pub const MXCSR_RC: u32 = 0b11 << 13;
/// MXCSR's status flags (0-5), caller-saved.
pub const MXCSR_STATUS: u32 = 0x3f;
/// The x87 control word's precision (8-9) and rounding (10-11) fields.
pub const X87_PC_RC: u16 = 0b1111 << 8;
/// Single precision (`00`), round toward zero (`11`).
pub const X87_SINGLE_TOWARD_ZERO: u16 = 0b1100 << 8;

pub fn mxcsr() -> u32 {
    let mut v = 0u32;
    // SAFETY: stores MXCSR into `v`.
    unsafe { asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack)) };
    v
}

pub fn set_mxcsr(v: u32) {
    // SAFETY: `v` is a valid MXCSR (a read one with control bits changed).
    unsafe { asm!("ldmxcsr [{}]", in(reg) &v, options(nostack)) };
}

pub fn x87_cw() -> u16 {
    let mut v = 0u16;
    // SAFETY: stores the x87 control word into `v`.
    unsafe { asm!("fnstcw [{}]", in(reg) &mut v, options(nostack)) };
    v
}

pub fn set_x87_cw(v: u16) {
    // SAFETY: loads a control word read from this thread with its PC/RC fields changed.
    unsafe { asm!("fldcw [{}]", in(reg) &v, options(nostack)) };
}

/// 1/10 in the current SSE rounding mode (not folded at compile time): to nearest it
/// rounds up, toward zero down, so the two differ.
pub fn one_tenth() -> f64 {
    black_box(1.0f64) / black_box(10.0f64)
}

/// 1/10 rounded to nearest (folded by the compiler, which always rounds to nearest).
pub const ONE_TENTH_NEAREST: f64 = 1.0 / 10.0;
