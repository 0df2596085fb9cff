//! Floating-point control state across fiber switches on keel's asm switch (fiber rules 6
//! and 7): MXCSR's control bits and the x87 control word are callee-saved under the
//! System V ABI, and the switch itself saves neither.

mod common;
mod fp;
use common::*;
use core::pin::pin;
use fp::*;
use keel_core::sim::SimDriver;
use keel_core::{Config, Executor, FP_CONTROL_CHECKED, Fiber, FiberAttrs, Priority, RegionStacks, TaskError};
use std::cell::Cell;
use std::rc::Rc;

const STACK: usize = 32 * 1024;
const ATTRS: FiberAttrs = FiberAttrs { stack_size: STACK, ..FiberAttrs::DEFAULT };
const SAVING: FiberAttrs = FiberAttrs { stack_size: STACK, save_fp_control: true };

fn region(stacks: usize) -> RegionStacks {
    let mem: &'static mut [u8] = Vec::leak(vec![0u8; stacks * (STACK + 4096) + 64]);
    RegionStacks::new(mem, STACK, 4096).unwrap()
}

fn skip_without_check() -> bool {
    if !FP_CONTROL_CHECKED {
        eprintln!("skipped: this keel-core build has no fp-control check (release without the `fp-check` feature)");
    }
    !FP_CONTROL_CHECKED
}

#[test]
fn fiber_rule_6_a_fiber_leaving_round_toward_zero_across_a_yield_is_reported_and_the_next_fiber_rounds_to_nearest() {
    if skip_without_check() {
        return;
    }
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (exec_mxcsr, exec_cw) = (mxcsr(), x87_cw());
    assert_eq!(exec_mxcsr & MXCSR_RC, 0, "the test thread starts rounding to nearest");
    let a_after = Rc::new(Cell::new(u32::MAX));
    let b_saw = Rc::new(Cell::new((u32::MAX, 0.0f64)));
    let (aa, bs) = (a_after.clone(), b_saw.clone());
    let a = ex
        .attach_fiber(task(Priority::Normal, "a"), ATTRS, move |f: &mut Fiber| {
            set_mxcsr(mxcsr() | MXCSR_RC);
            f.yield_now()?;
            // Fiber rule 6: the executor took its own values back; the fiber runs on with them.
            aa.set(mxcsr());
            Ok(1)
        })
        .map_err(|e| e.split().0)
        .unwrap();
    let b = ex
        .attach_fiber(task(Priority::Normal, "b"), ATTRS, move |_: &mut Fiber| {
            bs.set((mxcsr(), one_tenth()));
            Ok(2)
        })
        .map_err(|e| e.split().0)
        .unwrap();
    run_all!(ex);
    let (b_mxcsr, b_div) = b_saw.get();
    assert_eq!(b_mxcsr & MXCSR_RC, 0, "fiber b ran with fiber a's rounding mode");
    assert_eq!(b_div, ONE_TENTH_NEAREST, "fiber b's division was not rounded to nearest");
    assert_eq!(ex.result(b), Ok(Some(Ok(2))));
    let left = (exec_mxcsr & !MXCSR_STATUS) | MXCSR_RC;
    match ex.result(a) {
        Ok(Some(Err(TaskError::FpControlChanged { task, mxcsr, x87_cw }))) => {
            assert_eq!(task, a.id());
            assert_eq!(mxcsr & !MXCSR_STATUS, left);
            assert_eq!(x87_cw, exec_cw);
        }
        other => panic!("fiber a ended with {other:?}, not FpControlChanged"),
    }
    assert_eq!(a_after.get() & MXCSR_RC, 0, "after its resume fiber a runs with the executor's rounding");
    assert_eq!(ex.stats().fp_control_restored, 1);
    assert_eq!(mxcsr() & !MXCSR_STATUS, exec_mxcsr & !MXCSR_STATUS, "the executor's thread kept fiber a's MXCSR");
    let msg = ex.result(a).unwrap().unwrap().unwrap_err().to_string();
    assert!(msg.contains("save_fp_control") && msg.contains(&a.id().to_string()), "{msg}");
}

#[test]
fn fiber_rule_6_a_fiber_leaving_the_x87_control_word_changed_across_a_yield_is_reported_and_the_next_fiber_sees_the_default()
 {
    if skip_without_check() {
        return;
    }
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
    let ex = ex.into_ref();
    let exec_cw = x87_cw();
    let changed = (exec_cw & !X87_PC_RC) | X87_SINGLE_TOWARD_ZERO;
    assert_ne!(exec_cw, changed);
    let b_saw = Rc::new(Cell::new(0u16));
    let bs = b_saw.clone();
    let a = ex
        .attach_fiber(task(Priority::Normal, "a"), ATTRS, move |f: &mut Fiber| {
            set_x87_cw(changed);
            f.yield_now()?;
            Ok(1)
        })
        .map_err(|e| e.split().0)
        .unwrap();
    let b = ex
        .attach_fiber(task(Priority::Normal, "b"), ATTRS, move |_: &mut Fiber| {
            bs.set(x87_cw());
            Ok(2)
        })
        .map_err(|e| e.split().0)
        .unwrap();
    run_all!(ex);
    assert_eq!(b_saw.get(), exec_cw, "fiber b ran with fiber a's x87 control word");
    assert_eq!(ex.result(b), Ok(Some(Ok(2))));
    match ex.result(a) {
        Ok(Some(Err(TaskError::FpControlChanged { task, x87_cw, .. }))) => {
            assert_eq!(task, a.id());
            assert_eq!(x87_cw, changed);
        }
        other => panic!("fiber a ended with {other:?}, not FpControlChanged"),
    }
    assert_eq!(ex.stats().fp_control_restored, 1);
    assert_eq!(x87_cw(), exec_cw, "the executor's thread kept fiber a's x87 control word");
}

#[test]
fn fiber_rule_6_a_fiber_returning_with_round_toward_zero_is_reported_and_the_executor_gets_its_own_back() {
    if skip_without_check() {
        return;
    }
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(1), Config::default()).unwrap());
    let ex = ex.into_ref();
    let exec_mxcsr = mxcsr();
    let a = ex
        .attach_fiber(task(Priority::Normal, "a"), ATTRS, |_: &mut Fiber| {
            set_mxcsr(mxcsr() | MXCSR_RC);
            Ok(1)
        })
        .map_err(|e| e.split().0)
        .unwrap();
    run_all!(ex);
    assert!(matches!(ex.result(a), Ok(Some(Err(TaskError::FpControlChanged { .. })))), "{:?}", ex.result(a));
    assert_eq!(mxcsr() & !MXCSR_STATUS, exec_mxcsr & !MXCSR_STATUS);
    assert_eq!(one_tenth(), ONE_TENTH_NEAREST);
}

#[test]
fn fiber_rule_6_status_flags_and_a_mode_restored_before_each_suspension_are_not_reported() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
    let ex = ex.into_ref();
    // No status flag set on the executor's thread: fiber a's inexact divisions set one,
    // fiber b clears them again, so they change at every switch back.
    set_mxcsr(mxcsr() & !MXCSR_STATUS);
    let exec_mxcsr = mxcsr();
    let a = ex
        .attach_fiber(task(Priority::Normal, "a"), ATTRS, move |f: &mut Fiber| {
            let mut acc = 0.0f64;
            let mut flagged = 0;
            for _ in 0..4 {
                let saved = mxcsr();
                set_mxcsr(saved | MXCSR_RC);
                acc += one_tenth();
                set_mxcsr(saved);
                // 1/10 is inexact: the precision flag (a caller-saved status bit) is set
                // across the suspension.
                acc += one_tenth();
                flagged += u64::from(mxcsr() & MXCSR_STATUS != 0);
                f.yield_now()?;
            }
            Ok((acc * 10.0).round() as u64 * 10 + flagged)
        })
        .map_err(|e| e.split().0)
        .unwrap();
    let b = ex
        .attach_fiber(task(Priority::Normal, "b"), ATTRS, move |f: &mut Fiber| {
            for _ in 0..4 {
                set_mxcsr(mxcsr() & !MXCSR_STATUS);
                f.yield_now()?;
            }
            Ok(2)
        })
        .map_err(|e| e.split().0)
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(a), Ok(Some(Ok(84))), "8 tenths, with the precision flag set at all 4 suspensions");
    assert_eq!(ex.result(b), Ok(Some(Ok(2))));
    assert_eq!(ex.stats().fp_control_restored, 0);
    assert_eq!(mxcsr() & !MXCSR_STATUS, exec_mxcsr & !MXCSR_STATUS);
}

#[test]
fn fiber_rule_7_with_save_fp_control_a_fiber_keeps_its_modes_across_yields_and_the_others_keep_theirs() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (exec_mxcsr, exec_cw) = (mxcsr(), x87_cw());
    let changed_cw = (exec_cw & !X87_PC_RC) | X87_SINGLE_TOWARD_ZERO;
    let a_saw = Rc::new(Cell::new(0u32));
    let b_saw = Rc::new(Cell::new(0u32));
    let (aa, bb) = (a_saw.clone(), b_saw.clone());
    let a = ex
        .attach_fiber(task(Priority::Normal, "a"), SAVING, move |f: &mut Fiber| {
            set_mxcsr(mxcsr() | MXCSR_RC);
            set_x87_cw(changed_cw);
            for _ in 0..3 {
                f.yield_now()?;
                // Fiber rule 7: its own modes again after every resume.
                if mxcsr() & MXCSR_RC == MXCSR_RC && x87_cw() == changed_cw && one_tenth() < ONE_TENTH_NEAREST {
                    aa.set(aa.get() + 1);
                }
            }
            // Returns with its modes still set: the executor gets its own back.
            Ok(1)
        })
        .map_err(|e| e.split().0)
        .unwrap();
    let b = ex
        .attach_fiber(task(Priority::Normal, "b"), ATTRS, move |f: &mut Fiber| {
            for _ in 0..3 {
                if mxcsr() & MXCSR_RC == 0 && x87_cw() == exec_cw && one_tenth() == ONE_TENTH_NEAREST {
                    bb.set(bb.get() + 1);
                }
                f.yield_now()?;
            }
            Ok(2)
        })
        .map_err(|e| e.split().0)
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(a), Ok(Some(Ok(1))));
    assert_eq!(ex.result(b), Ok(Some(Ok(2))));
    assert_eq!(a_saw.get(), 3, "fiber a lost its rounding mode or x87 control word at a resume");
    assert_eq!(b_saw.get(), 3, "fiber b ran with fiber a's modes");
    assert_eq!(ex.stats().fp_control_restored, 0, "a saving fiber is never reported");
    assert_eq!(mxcsr() & !MXCSR_STATUS, exec_mxcsr & !MXCSR_STATUS);
    assert_eq!(x87_cw(), exec_cw);
}
