//! Backtraces taken inside a running fiber on the ucontext switcher reach the executor:
//! the trampoline's call-frame information reads the resumer's registers from the context
//! `swapcontext` saved (`keel_linux::ucontext`, "Backtraces"). `std::backtrace` unwinds
//! with libgcc's `_Unwind_Backtrace`, a DWARF unwinder like gdb's.
//!
//! The executor runs on a spawned thread, and the fiber's stack lies once below the
//! executor's frames (in the test binary's static data) and once above them (in the
//! executor thread's own stack, in a frame outside `run`).
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use core::pin::pin;
use keel_core::sim::SimDriver;
use keel_core::{
    Cancelled, Config, Executor, Fiber, FiberAttrs, Priorities, Priority, RegionStacks, TaskAttrs, TaskSlot,
};
use keel_linux::ucontext::UcontextSwitch;
use std::backtrace::Backtrace;

const STACK: usize = 64 * 1024;
const REGION: usize = STACK + 4096 + 64;
const ATTRS: FiberAttrs = FiberAttrs { stack_size: STACK, ..FiberAttrs::DEFAULT };

/// Where this frame is: the stack pointer in an AddressSanitizer build (which moves
/// address-taken locals to a fake stack of its own), else a local's address.
#[inline(always)]
fn stack_pointer() -> usize {
    #[cfg(keel_asan)]
    {
        let sp: usize;
        // SAFETY: reads a register; touches no memory.
        unsafe { core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
        sp
    }
    #[cfg(not(keel_asan))]
    {
        let local = 0u8;
        core::hint::black_box(&local) as *const u8 as usize
    }
}

/// Runs one ucontext fiber on an executor in this thread, with its stack in `region`; the
/// fiber captures a backtrace and its stack pointer. Returns the rendered backtrace, that
/// address and the stack pointer of the frame that calls `run`.
#[inline(never)]
fn run_fiber_on(region: &'static mut [u8]) -> (String, usize, usize) {
    let stacks = RegionStacks::new(region, STACK, 4096).unwrap();
    let ex = pin!(Executor::with_stacks(SimDriver::new(), stacks, Config::default()).unwrap());
    let ex = ex.into_ref();
    let seen = std::rc::Rc::new(std::cell::RefCell::new((String::new(), 0usize)));
    let s = seen.clone();
    let slot: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
    let prio = Priorities { cpu: Priority::Normal, io: Priority::Normal };
    let task = slot.create(TaskAttrs { priority: prio, name: "bt" }).unwrap();
    ex.attach_fiber_with::<UcontextSwitch, _, _>(task, ATTRS, move |f: &mut Fiber| -> Result<(), Cancelled> {
        f.yield_now()?;
        let bt = Backtrace::force_capture().to_string();
        *s.borrow_mut() = (bt, stack_pointer());
        Ok(())
    })
    .map_err(|e| e.split().0)
    .unwrap();
    let here = stack_pointer();
    while ex.attached() > 0 {
        ex.run(1000, None).unwrap();
    }
    let (bt, fiber_local) = seen.borrow().clone();
    (bt, fiber_local, here)
}

fn check(bt: &str, fiber_local: usize, exec_local: usize, below: bool) {
    assert_ne!(fiber_local, 0, "the fiber did not run");
    assert_eq!(fiber_local < exec_local, below, "the fiber's stack is not on the side this test is for");
    let names: Vec<&str> = bt
        .lines()
        .map(str::trim)
        .filter(|l| l.split_once(": ").is_some_and(|(n, _)| n.parse::<u32>().is_ok()))
        .collect();
    let pos = |what: &str| names.iter().position(|l| l.contains(what));
    // `{{closure}}` as stable's std prints it, `{closure#0}` as nightly's does.
    let body = pos("fiber_backtrace_ucontext::run_fiber_on::{{closure}}")
        .or_else(|| pos("fiber_backtrace_ucontext::run_fiber_on::{closure#"));
    let resume = pos("UcontextSwitch");
    // `keel_core::exec::run::<impl ...>::run` (stable's std), `<...Executor<...>>::run` (nightly's).
    let run = pos("keel_core::exec::run::").or_else(|| {
        names.iter().position(|l| l.contains("keel_core::exec::executor::Executor<") && l.ends_with(">>::run"))
    });
    let thread = pos("fiber_backtrace_ucontext::a_backtrace_in_a_ucontext_fiber");
    assert!(body.is_some(), "the fiber body is not in its own backtrace:\n{bt}");
    assert!(run.is_some(), "the backtrace stops before the executor's run:\n{bt}");
    assert!(body < resume && resume < run, "not body, then the switcher's resume, then run:\n{bt}");
    let caller = names[run.unwrap()..].iter().any(|l| l.ends_with("fiber_backtrace_ucontext::run_fiber_on"));
    assert!(caller, "the walk does not reach run's caller:\n{bt}");
    assert!(thread > run, "the walk does not reach the thread's closure:\n{bt}");
}

/// Runs `f` on a spawned thread with a roomy stack (the region above lives there).
fn on_a_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(1 << 20).spawn(f).unwrap().join().unwrap()
}

#[test]
fn a_backtrace_in_a_ucontext_fiber_below_the_executor_reaches_run() {
    static mut BELOW: [u8; REGION] = [0; REGION];
    let (bt, fiber_local, exec_local) = on_a_thread(|| {
        // SAFETY: the only reference ever made to BELOW (this test runs once per process).
        run_fiber_on(unsafe { &mut *core::ptr::addr_of_mut!(BELOW) })
    });
    check(&bt, fiber_local, exec_local, true);
}

#[test]
fn a_backtrace_in_a_ucontext_fiber_above_the_executor_reaches_run() {
    let (bt, fiber_local, exec_local) = on_a_thread(|| {
        let mut above = [0u8; REGION];
        let region = core::hint::black_box(&mut above[..]);
        // SAFETY: the executor using the region is created and dropped inside
        // `run_fiber_on`, which returns before `above` goes out of scope; the 'static is
        // only what `RegionStacks::new` asks for.
        let region: &'static mut [u8] = unsafe { &mut *(region as *mut [u8]) };
        run_fiber_on(region)
    });
    check(&bt, fiber_local, exec_local, false);
}
