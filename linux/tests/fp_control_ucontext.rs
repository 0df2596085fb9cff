//! Floating-point control state on the ucontext switcher (`keel_linux::ucontext`): glibc's
//! `swapcontext`/`setcontext` save and load MXCSR and the x87 environment on every switch,
//! so each ucontext fiber keeps its own rounding mode and the executor keeps its own,
//! with no `save_fp_control` and nothing reported (fiber rules 6 and 7). This checks that
//! claim of the module doc against the glibc the tests run on.
#![cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]

#[path = "fp/mod.rs"]
mod fp;
use core::pin::pin;
use fp::*;
use keel_core::sim::SimDriver;
use keel_core::{
    Config, Executor, Fiber, FiberAttrs, Priorities, Priority, RegionStacks, TaskAttrs, TaskHandle, TaskSlot,
};
use keel_linux::ucontext::UcontextSwitch;
use std::cell::Cell;
use std::rc::Rc;

const STACK: usize = 32 * 1024;
const ATTRS: FiberAttrs = FiberAttrs { stack_size: STACK, ..FiberAttrs::DEFAULT };

fn region(stacks: usize) -> RegionStacks {
    let mem: &'static mut [u8] = Vec::leak(vec![0u8; stacks * (STACK + 4096) + 64]);
    RegionStacks::new(mem, STACK, 4096).unwrap()
}

fn task(name: &'static str) -> TaskHandle {
    let slot: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
    slot.create(TaskAttrs { priority: Priorities { cpu: Priority::Normal, io: Priority::Normal }, name }).unwrap()
}

#[test]
fn glibc_swapcontext_keeps_each_ucontext_fibers_rounding_mode_and_x87_control_word_and_the_executors() {
    ucontext_fiber_keeps_its_modes(ATTRS);
}

#[test]
fn save_fp_control_on_the_ucontext_switcher_changes_nothing_the_fiber_sees() {
    ucontext_fiber_keeps_its_modes(FiberAttrs { save_fp_control: true, ..ATTRS });
}

/// A ucontext fiber attached with `a_attrs` sets round toward zero and single precision,
/// yields three times to an asm fiber and returns with them set.
fn ucontext_fiber_keeps_its_modes(a_attrs: FiberAttrs) {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (exec_mxcsr, exec_cw) = (mxcsr(), x87_cw());
    assert_eq!(exec_mxcsr & MXCSR_RC, 0, "the test thread starts rounding to nearest");
    let changed_cw = (exec_cw & !X87_PC_RC) | X87_SINGLE_TOWARD_ZERO;
    assert_ne!(changed_cw, exec_cw);
    let a_kept = Rc::new(Cell::new(0u32));
    let b_clean = Rc::new(Cell::new(0u32));
    let (ak, bc) = (a_kept.clone(), b_clean.clone());
    // A ucontext fiber with default attributes sets both and yields, three times over.
    let a = ex
        .attach_fiber_with::<UcontextSwitch, _, _>(task("a"), a_attrs, move |f: &mut Fiber| {
            set_mxcsr(mxcsr() | MXCSR_RC);
            set_x87_cw(changed_cw);
            for _ in 0..3 {
                f.yield_now()?;
                if mxcsr() & MXCSR_RC == MXCSR_RC && x87_cw() == changed_cw && one_tenth() < ONE_TENTH_NEAREST {
                    ak.set(ak.get() + 1);
                }
            }
            // Returns with both still set: `setcontext` loads the executor's back.
            Ok(1)
        })
        .map_err(|e| e.split().0)
        .unwrap();
    // An asm fiber in between sees the executor's.
    let b = ex
        .attach_fiber(task("b"), ATTRS, move |f: &mut Fiber| {
            for _ in 0..3 {
                if mxcsr() & MXCSR_RC == 0 && x87_cw() == exec_cw && one_tenth() == ONE_TENTH_NEAREST {
                    bc.set(bc.get() + 1);
                }
                f.yield_now()?;
            }
            Ok(2)
        })
        .map_err(|e| e.split().0)
        .unwrap();
    while ex.attached() > 0 {
        ex.run(1000, None).expect("run");
    }
    assert_eq!(a_kept.get(), 3, "glibc did not give the ucontext fiber its own MXCSR and x87 control word back");
    assert_eq!(b_clean.get(), 3, "the asm fiber ran with the ucontext fiber's modes");
    assert_eq!(
        ex.result(a),
        Ok(Some(Ok(1))),
        "a ucontext fiber is never reported: glibc gives the executor its own back"
    );
    assert_eq!(ex.result(b), Ok(Some(Ok(2))));
    assert_eq!(ex.stats().fp_control_restored, 0);
    assert_eq!(mxcsr() & !MXCSR_STATUS, exec_mxcsr & !MXCSR_STATUS, "the executor's thread kept the fiber's MXCSR");
    assert_eq!(x87_cw(), exec_cw, "the executor's thread kept the fiber's x87 control word");
}
