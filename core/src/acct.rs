//! Time accounting from the CPU's timestamp counter, chosen per executor at the type
//! level: `Executor<D, S, NoAccounting>` (the default) carries no clock read on its hot
//! path; `Executor<D, S, TscAccounting>` reads the TSC once per task resumption (the
//! read that ends one task's run starts the next one's) and keeps per-task and
//! per-executor times. Both kinds live in one binary.
//!
//! Which fence: none for accounting reads. `rdtsc` alone costs about 9.6 ns here and
//! `lfence; rdtsc` about 18.5 ns (more than a fiber switch); without the fence the read
//! may be taken a few instructions early or late, a skew of a few ns on intervals that
//! are at least a task resumption long, which accounting tolerates. Calibration, which
//! needs tightly bracketed pairs, fences its reads (keel-linux `tsc.rs`).
//!
//! Approximations, by design: a wake is stamped with the executor's latest clock read
//! (no read of its own), so "suspended" and "ready but waiting" split at that stamp; the
//! time from one task's end to the next one's start (the loop's own work between them) is
//! counted in the next task's "running". The executor's "run loop" time is what is left
//! of `run` after task code and parking.

use core::cell::Cell;

/// How an executor accounts time (a type parameter of `Executor`).
pub trait Accounting: 'static {
    /// Whether accounting is compiled in.
    const ON: bool;
    /// Reads the clock, in ticks.
    fn read() -> u64;
}

/// No accounting: no clock reads on the hot path.
#[derive(Debug)]
pub struct NoAccounting;

impl Accounting for NoAccounting {
    const ON: bool = false;
    #[inline(always)]
    fn read() -> u64 {
        0
    }
}

/// Accounting from the timestamp counter (x86_64 `rdtsc`).
#[derive(Debug)]
pub struct TscAccounting;

impl Accounting for TscAccounting {
    const ON: bool = true;
    #[inline(always)]
    fn read() -> u64 {
        read_tsc()
    }
}

/// `rdtsc`, no fence (module doc).
#[inline(always)]
pub fn read_tsc() -> u64 {
    // SAFETY: `rdtsc` has no preconditions on x86_64 (user-mode TSC reads are enabled on
    // Linux); the intrinsic only reads the counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Ticks to nanoseconds: `ns = ticks * mult >> shift`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TickScale {
    /// Multiplier.
    pub mult: u64,
    /// Right shift.
    pub shift: u32,
}

impl TickScale {
    /// One tick is one nanosecond.
    pub const IDENTITY: TickScale = TickScale { mult: 1, shift: 0 };

    /// The scale for a clock of `hz` ticks per second.
    pub fn from_hz(hz: u64) -> Self {
        if hz == 0 {
            return Self::IDENTITY;
        }
        let shift = 32;
        let mult = ((1_000_000_000u128 << shift) / hz as u128) as u64;
        TickScale { mult, shift }
    }

    /// `ticks` in nanoseconds.
    pub fn to_ns(self, ticks: u64) -> u64 {
        ((ticks as u128 * self.mult as u128) >> self.shift) as u64
    }
}

/// Per-task times in ticks (owner-local, in the task's trailer).
#[derive(Default)]
pub(crate) struct TaskTimes {
    pub(crate) running: Cell<u64>,
    pub(crate) suspended: Cell<u64>,
    pub(crate) ready_wait: Cell<u64>,
    pub(crate) longest_run: Cell<u64>,
    pub(crate) since: Cell<u64>,
}

/// Per-executor times in ticks (owner-local).
#[derive(Default)]
pub(crate) struct ExecTimes {
    /// The latest clock read.
    pub(crate) last: Cell<u64>,
    pub(crate) task: Cell<u64>,
    pub(crate) parked: Cell<u64>,
    pub(crate) in_run: Cell<u64>,
    /// Whether this executor accounts (so the non-generic wake path knows).
    pub(crate) on: Cell<bool>,
    pub(crate) scale: Cell<Option<TickScale>>,
}

impl ExecTimes {
    #[inline(always)]
    pub(crate) fn add(counter: &Cell<u64>, delta: u64) {
        counter.set(counter.get().wrapping_add(delta));
    }
}

/// A task's accounting, in nanoseconds (zero for an executor without accounting).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskTimesSnapshot {
    /// Time running.
    pub running_ns: u64,
    /// Time suspended.
    pub suspended_ns: u64,
    /// Time ready but waiting for the CPU.
    pub ready_wait_ns: u64,
    /// The longest single run between suspensions.
    pub longest_run_ns: u64,
    /// Resumptions.
    pub resumptions: u64,
    /// I/O initiated.
    pub io_initiated: u64,
    /// I/O completed.
    pub io_completed: u64,
}

/// An executor's accounting, in nanoseconds (times are zero without accounting).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecTimesSnapshot {
    /// Time in task code.
    pub task_ns: u64,
    /// Time in the run loop itself.
    pub loop_ns: u64,
    /// Time parked.
    pub parked_ns: u64,
    /// Resumptions per CPU priority, high first.
    pub per_priority: [u64; 3],
    /// Operations submitted to the driver.
    pub submissions: u64,
    /// Completions reaped.
    pub completions: u64,
}
