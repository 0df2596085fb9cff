//! Calibrating the timestamp counter to nanoseconds, without stalling start-up (the C
//! executor keel re-creates spins for about a second).
//!
//! In order: (1) the TSC must be invariant (CPUID 0x8000_0007 EDX bit 8), else keel uses
//! `CLOCK_MONOTONIC` and says so; (2) CPUID leaf 0x15 (crystal ratio) or 0x16 (base
//! frequency) when the CPU reports them (on this machine, AMD under KVM, both are zero);
//! (3) otherwise a calibration of at most 10 ms from tightly bracketed TSC/monotonic pairs
//! (`lfence; rdtsc` on both sides of `clock_gettime`, the tightest of several attempts
//! kept), which `refine` improves later from a longer baseline. The kernel's perf_event
//! mmap page (time_mult/time_shift) is not read: opening a perf event needs a raw syscall
//! neither rustix nor the crates keel-linux may use offer.
#![allow(unsafe_code)] // CPUID and fenced TSC reads are intrinsics

use crate::clock::monotonic_now;
use keel_core::TickScale;
use std::time::Duration;

/// Which clock accounting uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ClockSource {
    /// The TSC, frequency from CPUID.
    TscCpuid,
    /// The TSC, frequency calibrated against CLOCK_MONOTONIC.
    TscCalibrated,
    /// CLOCK_MONOTONIC: the TSC is not invariant here.
    Monotonic,
}

/// A calibration: ticks per second and where it came from.
#[derive(Copy, Clone, Debug)]
pub struct Calibration {
    /// The clock in use.
    pub source: ClockSource,
    /// Ticks per second.
    pub hz: u64,
    base_tsc: u64,
    base_ns: u64,
}

fn cpuid(leaf: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid(leaf)
}

/// `lfence; rdtsc`: the read waits for earlier instructions, for bracketing.
fn fenced_tsc() -> u64 {
    // SAFETY: lfence and rdtsc have no preconditions on x86_64.
    unsafe {
        core::arch::x86_64::_mm_lfence();
        core::arch::x86_64::_rdtsc()
    }
}

/// Whether the TSC runs at a constant rate in every P-, C- and T-state.
pub fn tsc_invariant() -> bool {
    cpuid(0x8000_0000).eax >= 0x8000_0007 && cpuid(0x8000_0007).edx & (1 << 8) != 0
}

fn cpuid_hz() -> Option<u64> {
    let max = cpuid(0).eax;
    if max >= 0x15 {
        let l = cpuid(0x15);
        if l.eax != 0 && l.ebx != 0 && l.ecx != 0 {
            return Some(l.ecx as u64 * l.ebx as u64 / l.eax as u64);
        }
    }
    if max >= 0x16 {
        let mhz = cpuid(0x16).eax & 0xFFFF;
        if mhz != 0 {
            return Some(mhz as u64 * 1_000_000);
        }
    }
    None
}

/// A (tsc, ns) pair from the tightest of a few brackets.
fn pair() -> (u64, u64) {
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..16 {
        let a = fenced_tsc();
        let ns = monotonic_now().as_nanos();
        let b = fenced_tsc();
        if b - a < best.0 {
            best = (b - a, a + (b - a) / 2, ns);
        }
    }
    (best.1, best.2)
}

impl Calibration {
    /// Calibrates (at most about 10 ms when it has to measure).
    pub fn new() -> Self {
        let (t0, n0) = pair();
        if !tsc_invariant() {
            crate::notice::notice!(info, "the TSC is not invariant here: time accounting uses CLOCK_MONOTONIC");
            return Calibration { source: ClockSource::Monotonic, hz: 1_000_000_000, base_tsc: t0, base_ns: n0 };
        }
        if let Some(hz) = cpuid_hz() {
            return Calibration { source: ClockSource::TscCpuid, hz, base_tsc: t0, base_ns: n0 };
        }
        std::thread::sleep(Duration::from_millis(9));
        let (t1, n1) = pair();
        let hz = ((t1 - t0) as u128 * 1_000_000_000 / (n1 - n0).max(1) as u128) as u64;
        Calibration { source: ClockSource::TscCalibrated, hz, base_tsc: t0, base_ns: n0 }
    }

    /// Recomputes the frequency from the first pair to a fresh one: the longer the
    /// baseline, the smaller the error (call it once the executor has run a while).
    pub fn refine(&mut self) {
        if self.source != ClockSource::TscCalibrated {
            return;
        }
        let (t1, n1) = pair();
        if n1 > self.base_ns + 1_000_000 {
            self.hz = ((t1 - self.base_tsc) as u128 * 1_000_000_000 / (n1 - self.base_ns) as u128) as u64;
        }
    }

    /// The executor's tick scale (`Executor::set_tick_scale`).
    pub fn scale(&self) -> TickScale {
        TickScale::from_hz(self.hz)
    }

    /// Ticks to nanoseconds.
    pub fn to_ns(&self, ticks: u64) -> u64 {
        (ticks as u128 * 1_000_000_000 / self.hz.max(1) as u128) as u64
    }
}

impl Default for Calibration {
    fn default() -> Self {
        Self::new()
    }
}
