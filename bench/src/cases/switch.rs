//! `switch`: the bare switcher, no executor: one resume + suspend round trip of a
//! stackful fiber (ns per round trip).
//!
//! - keel: `AsmSwitch` driven directly through `FiberSwitch`: a fiber on a leaked stack
//!   whose entry loops on `suspend` forever; the hot loop is N `resume`s. One fiber per
//!   thread, made on first use and never finished (its stack and regs are leaked).
//! - corosensei: a `Coroutine` on its default stack whose body loops on
//!   `yielder.suspend(())`; the hot loop is N `resume(())`s. One per trial (dropping it
//!   unwinds the suspended body, outside the timing).

use crate::goals::{Goal, Op};
use crate::harness::{Case, Impl, Timed, Unit};
use corosensei::{Coroutine, CoroutineResult, Yielder};
use keel_core::{AsmSwitch, FiberSwitch};
use std::time::Instant;

/// The case.
pub const CASE: Case = Case {
    name: "switch",
    unit: Unit::NsPerOp,
    impls: &[Impl { name: "keel", run: keel }, Impl { name: "corosensei", run: corosensei }],
};

/// The goals of this module's cases (see `crate::goals`).
pub const GOALS: &[Goal] = &[Goal::vs("switch", "keel", "corosensei", Op::AtMost, 1.0)];

type Regs = <AsmSwitch as FiberSwitch>::Regs;

/// The fiber: suspends back to its resumer, forever.
unsafe extern "C" fn looping(arg: *mut u8) -> ! {
    let regs = arg as *mut Regs;
    loop {
        // SAFETY: this runs on the fiber's own stack and `regs` is its context (`arg` is
        // the pointer `fiber` passed to `init`), leaked so it never moves or dies.
        unsafe { AsmSwitch::suspend(regs) };
    }
}

/// A fresh, started fiber (suspended in `looping`), leaked with its stack.
fn fiber() -> Result<*mut Regs, String> {
    let stack = super::leaked_stack()?;
    let regs: *mut Regs = Box::leak(Box::new(Regs::default()));
    // SAFETY: `regs` is leaked, so it is valid and never moves; `stack` is a leaked
    // stack no one else uses, valid forever (the fiber never exits).
    unsafe { AsmSwitch::init(regs, &stack, looping, regs as *mut u8) };
    // SAFETY: `regs` was just initialised and is not running; the first resume runs
    // `looping` up to its first suspend.
    unsafe { AsmSwitch::resume(regs) };
    Ok(regs)
}

std::thread_local! {
    /// This thread's fiber, made on first use (the harness runs on one thread).
    static FIBER: Result<*mut Regs, String> = fiber();
}

fn keel(iters: u64) -> Timed {
    let regs = FIBER.with(|f| f.clone())?;
    let start = Instant::now();
    for _ in 0..iters {
        // SAFETY: the fiber is suspended in `looping` (made started by `fiber`, and every
        // resume returns at its next suspend), not running, and belongs to this thread.
        unsafe { AsmSwitch::resume(regs) };
    }
    Ok(start.elapsed())
}

fn corosensei(iters: u64) -> Timed {
    let mut co: Coroutine<(), (), ()> = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        loop {
            y.suspend(());
        }
    });
    let start = Instant::now();
    for _ in 0..iters {
        if let CoroutineResult::Return(()) = co.resume(()) {
            return Err("the coroutine returned".into());
        }
    }
    Ok(start.elapsed())
}
