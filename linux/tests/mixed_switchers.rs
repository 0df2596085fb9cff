//! Runtime-pluggable switchers: futures (stackless), keel's asm fibers and glibc
//! ucontext fibers (`keel_linux::ucontext::UcontextSwitch`) on one executor at once, on
//! the simulated driver (deterministic, virtual clock) with stacks carved from a leaked
//! region (`RegionStacks`).
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use core::pin::pin;
use core::time::Duration;
use keel_core::sim::SimDriver;
use keel_core::{
    CancelOutcome, Cancelled, Config, Executor, Fiber, FiberAttrs, Priorities, Priority, RegionStacks, SuspendReason,
    SwitcherKind, TaskAttrs, TaskError, TaskHandle, TaskResult, TaskSlot, TaskState, rt,
};
use keel_linux::ucontext::UcontextSwitch;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

const STACK: usize = 32 * 1024;
const GUARD: usize = 4096;
const ATTRS: FiberAttrs = FiberAttrs { stack_size: STACK, ..FiberAttrs::DEFAULT };

/// `stacks` stacks of `size` bytes with a `GUARD`-byte gap below each, carved from a
/// leaked, zeroed region; also the region's address range.
fn region_of(stacks: usize, size: usize) -> (RegionStacks, core::ops::Range<usize>) {
    let mem: &'static mut [u8] = Vec::leak(vec![0u8; stacks * (size + GUARD) + 64]);
    let range = mem.as_ptr_range();
    let range = range.start as usize..range.end as usize;
    (RegionStacks::new(mem, size, GUARD).unwrap(), range)
}

fn region(stacks: usize) -> (RegionStacks, core::ops::Range<usize>) {
    region_of(stacks, STACK)
}

/// The defaults, with keel-linux's panic catcher (fiber rule 3).
fn config() -> Config {
    Config { fiber_panics: Some(keel_linux::panic::catch_panics), ..Config::default() }
}

/// A created task on a fresh leaked slot.
fn task(name: &'static str) -> TaskHandle {
    let slot: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
    slot.create(TaskAttrs { priority: Priorities { cpu: Priority::Normal, io: Priority::Normal }, name }).unwrap()
}

#[derive(Clone, Default)]
struct Log(Rc<RefCell<Vec<String>>>);

impl Log {
    fn push(&self, s: String) {
        self.0.borrow_mut().push(s);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.borrow_mut())
    }
}

/// Unwraps an attach, showing the error without the body.
trait Attached {
    fn attached(self) -> TaskHandle;
}

impl<B> Attached for Result<TaskHandle, keel_core::AttachError<B>> {
    fn attached(self) -> TaskHandle {
        self.map_err(|e| e.split().0).expect("attach")
    }
}

macro_rules! run_all {
    ($ex:expr) => {{
        let mut n = 0usize;
        while $ex.attached() > 0 {
            n += $ex.run(1_000_000, None).expect("run");
            assert!(n < 100_000_000, "runaway");
        }
        n
    }};
}

/// Whether the frame of the caller lies in `range` (it runs on a region stack).
#[inline(never)]
fn on_region(range: &core::ops::Range<usize>) -> bool {
    let local = 0u8;
    range.contains(&(core::ptr::addr_of!(local) as usize))
}

const ROUNDS: u64 = 3;
const NAP: Duration = Duration::from_millis(1);

/// What every task logs, whatever its switcher: per round, three steps separated by
/// yields, then a sleep; then its end time.
fn fiber_steps(f: &mut Fiber, name: &str, log: &Log) -> Result<(), Cancelled> {
    for r in 0..ROUNDS {
        for step in ["a", "b"] {
            log.push(format!("{name} r{r} {step}"));
            f.yield_now()?;
        }
        log.push(format!("{name} r{r} c"));
        f.sleep(NAP)?;
    }
    log.push(format!("{name} end {}ms", f.now().as_nanos() / 1_000_000));
    Ok(())
}

#[test]
fn ucontext_rule_1_futures_asm_fibers_and_ucontext_fibers_alternate_in_attach_order_on_one_executor() {
    let (stacks, range) = region(8);
    let ex = pin!(Executor::with_stacks(SimDriver::new(), stacks, config()).unwrap());
    let ex = ex.into_ref();
    let log = Log::default();
    let names = ["fut0", "asm0", "uc0", "fut1", "asm1", "uc1"];
    let mut runs = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        let (l, rg, id) = (log.clone(), range.clone(), i as u64);
        let h = match i % 3 {
            0 => ex
                .attach(task(name), async move {
                    for r in 0..ROUNDS {
                        for step in ["a", "b"] {
                            l.push(format!("{name} r{r} {step}"));
                            rt::yield_now().await?;
                        }
                        l.push(format!("{name} r{r} c"));
                        rt::sleep(NAP).await?;
                    }
                    let ms = rt::clock().await.unwrap().as_nanos() / 1_000_000;
                    l.push(format!("{name} end {ms}ms"));
                    TaskResult::Ok(100 + id)
                })
                .attached(),
            1 => ex
                .attach_fiber(task(name), ATTRS, move |f: &mut Fiber| -> TaskResult {
                    assert!(on_region(&rg), "an asm fiber runs on its region stack");
                    fiber_steps(f, name, &l)?;
                    Ok(200 + id)
                })
                .attached(),
            _ => ex
                .attach_fiber_with::<UcontextSwitch, _, _>(task(name), ATTRS, move |f: &mut Fiber| -> TaskResult {
                    assert!(on_region(&rg), "a ucontext fiber runs on its region stack");
                    fiber_steps(f, name, &l)?;
                    Ok(300 + id)
                })
                .attached(),
        };
        runs.push(h);
    }
    let kinds: Vec<_> = runs.iter().map(|&h| ex.switcher(h).unwrap()).collect();
    use SwitcherKind::{Custom, Fiber as Asm, Stackless};
    assert_eq!(kinds, [Some(Stackless), Some(Asm), Some(Custom), Some(Stackless), Some(Asm), Some(Custom)]);

    run_all!(ex);

    let mut want = Vec::new();
    for r in 0..ROUNDS {
        for step in ["a", "b", "c"] {
            want.extend(names.iter().map(|n| format!("{n} r{r} {step}")));
        }
    }
    want.extend(names.iter().map(|n| format!("{n} end {ROUNDS}ms")));
    assert_eq!(log.take(), want);
    let results: Vec<_> = runs.iter().map(|&h| ex.result(h).unwrap()).collect();
    assert_eq!(results, [Some(Ok(100)), Some(Ok(201)), Some(Ok(302)), Some(Ok(103)), Some(Ok(204)), Some(Ok(305))]);
    assert_eq!(ex.now().as_nanos(), ROUNDS * 1_000_000);
    // 6 tasks x (3 rounds x 3 resumptions + the final one).
    assert_eq!(ex.stats().resumed, 6 * (ROUNDS * 3 + 1));
    let st = ex.stack_stats();
    assert_eq!((st.created, st.in_use, st.high_water), (4, 0, 4), "{st:?}");
}

#[test]
fn ucontext_rule_2_a_ucontext_fiber_cancelled_while_suspended_resumes_with_cancelled() {
    let (stacks, _) = region(4);
    let ex = pin!(Executor::with_stacks(SimDriver::new(), stacks, config()).unwrap());
    let ex = ex.into_ref();
    let seen = Rc::new(Cell::new(0u32));
    let body = |seen: Rc<Cell<u32>>, how: u32| {
        move |f: &mut Fiber| -> TaskResult {
            let r = match how {
                0 => f.yield_now(),
                1 => f.sleep(Duration::from_secs(5)),
                _ => f.wait(),
            };
            if r == Err(Cancelled) {
                seen.set(seen.get() + 1);
                // Every later suspension point says so too, without suspending.
                assert_eq!(f.yield_now(), Err(Cancelled));
                assert_eq!(f.sleep(Duration::from_secs(1)), Err(Cancelled));
            }
            r?;
            Ok(1)
        }
    };
    let attach =
        |name, how| ex.attach_fiber_with::<UcontextSwitch, _, _>(task(name), ATTRS, body(seen.clone(), how)).attached();
    let ready = attach("ready", 0);
    let timer = attach("timer", 1);
    let wait = attach("wait", 2);
    assert_eq!(ex.run(3, None), Ok(3));
    assert_eq!(ex.state(ready), Ok(TaskState::Ready));
    assert_eq!(ex.state(timer), Ok(TaskState::Suspended(SuspendReason::Timer)));
    assert_eq!(ex.state(wait), Ok(TaskState::Suspended(SuspendReason::Wait)));
    for h in [ready, timer, wait] {
        assert_eq!(ex.switcher(h), Ok(Some(SwitcherKind::Custom)));
        assert_eq!(ex.cancel(h), Ok(CancelOutcome::Resumes));
    }
    run_all!(ex);
    assert_eq!(seen.get(), 3);
    for h in [ready, timer, wait] {
        assert_eq!(ex.result(h), Ok(Some(Err(TaskError::Cancelled))));
    }
    assert_eq!(ex.now().as_nanos(), 0, "the sleeper was cancelled, not timed out");
    let st = ex.stack_stats();
    assert_eq!((st.in_use, st.spares), (0, 3), "{st:?}");
}

#[test]
fn a_panicking_ucontext_fiber_completes_with_panicked_and_its_neighbours_carry_on() {
    let (stacks, _) = region(4);
    let ex = pin!(Executor::with_stacks(SimDriver::new(), stacks, config()).unwrap());
    let ex = ex.into_ref();
    let p = ex
        .attach_fiber_with::<UcontextSwitch, _, _>(task("boom"), ATTRS, |f: &mut Fiber| -> TaskResult {
            f.yield_now()?;
            if std::hint::black_box(true) {
                panic!("ucontext boom");
            }
            Ok(0)
        })
        .attached();
    let uc = ex
        .attach_fiber_with::<UcontextSwitch, _, _>(task("uc"), ATTRS, |f: &mut Fiber| -> TaskResult {
            f.yield_now()?;
            f.yield_now()?;
            Ok(7)
        })
        .attached();
    let formatted = ex
        .attach_fiber_with::<UcontextSwitch, _, _>(task("boom2"), ATTRS, |f: &mut Fiber| -> TaskResult {
            f.sleep(Duration::from_micros(3))?;
            let n = std::hint::black_box(2);
            panic!("ucontext boom {n}");
        })
        .attached();
    let asm = ex
        .attach_fiber(task("asm"), ATTRS, |f: &mut Fiber| -> TaskResult {
            f.yield_now()?;
            Ok(8)
        })
        .attached();
    let fut =
        ex.attach(task("fut"), async { rt::yield_now().await.map(|()| 9u64).map_err(TaskError::from) }).attached();
    run_all!(ex);
    assert_eq!(ex.result(p), Ok(Some(Err(TaskError::Panicked("ucontext boom")))));
    assert_eq!(ex.result(formatted), Ok(Some(Err(TaskError::Panicked("ucontext boom 2")))));
    assert_eq!(ex.result(uc), Ok(Some(Ok(7))));
    assert_eq!(ex.result(asm), Ok(Some(Ok(8))));
    assert_eq!(ex.result(fut), Ok(Some(Ok(9))));
    assert_eq!(ex.stack_stats().in_use, 0);
    // The panicked fiber's stack is a good spare: the next ucontext fiber runs on it.
    let again = ex.attach_fiber_with::<UcontextSwitch, _, _>(p, ATTRS, |f: &mut Fiber| f.yield_now()).attached();
    run_all!(ex);
    assert_eq!(ex.result(again), Ok(Some(Ok(0))));
    let st = ex.stack_stats();
    assert_eq!((st.created, st.reused, st.in_use), (4, 1, 0), "{st:?}");
}

#[test]
fn ucontext_rule_4_a_thousand_ucontext_fibers_run_to_completion_on_reused_stacks() {
    const WAVE: usize = 25;
    const TOTAL: usize = 1000;
    let (stacks, range) = region(32);
    let ex = pin!(Executor::with_stacks(SimDriver::new(), stacks, config()).unwrap());
    let ex = ex.into_ref();
    let mut handles: Vec<TaskHandle> = (0..WAVE).map(|_| task("uc")).collect();
    let done = Rc::new(Cell::new(0usize));
    for wave in 0..TOTAL / WAVE {
        for (k, h) in handles.iter_mut().enumerate() {
            let (id, rg, done) = ((wave * WAVE + k) as u64, range.clone(), done.clone());
            *h = ex
                .attach_fiber_with::<UcontextSwitch, _, _>(*h, ATTRS, move |f: &mut Fiber| -> TaskResult {
                    assert!(on_region(&rg));
                    f.yield_now()?;
                    f.sleep(Duration::from_micros(1 + id % 3))?;
                    f.yield_now()?;
                    done.set(done.get() + 1);
                    Ok(id * 2)
                })
                .attached();
        }
        run_all!(ex);
        for (k, &h) in handles.iter().enumerate() {
            assert_eq!(ex.result(h), Ok(Some(Ok((wave * WAVE + k) as u64 * 2))));
        }
    }
    assert_eq!(done.get(), TOTAL);
    let st = ex.stack_stats();
    assert_eq!(st.created, WAVE as u64, "{st:?}");
    assert_eq!(st.reused, (TOTAL - WAVE) as u64, "{st:?}");
    assert_eq!((st.high_water, st.in_use), (WAVE as u64, 0), "{st:?}");
}

#[test]
fn ucontext_rule_3_a_ucontext_fiber_fits_the_smallest_stack_without_touching_the_gap_below() {
    let min = keel_core::fiber::MIN_STACK;
    let (stacks, range) = region_of(2, min);
    let ex = pin!(Executor::with_stacks(SimDriver::new(), stacks, config()).unwrap());
    let ex = ex.into_ref();
    let attrs = FiberAttrs { stack_size: min, ..FiberAttrs::DEFAULT };
    let t = ex
        .attach_fiber_with::<UcontextSwitch, _, _>(task("small"), attrs, |f: &mut Fiber| -> TaskResult {
            for _ in 0..3 {
                f.yield_now()?;
            }
            f.sleep(Duration::from_micros(5))?;
            Ok(u64::from(std::hint::black_box(5u8)))
        })
        .attached();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(5))));
    // Slot 0 is [gap | stack]; the gap below the stack was zeroed and must still be.
    let start = (range.start + 15) & !15;
    // SAFETY: the region is leaked (lives forever) and its gap bytes are never handed out.
    let gap = unsafe { core::slice::from_raw_parts(start as *const u8, GUARD) };
    assert!(gap.iter().all(|&b| b == 0), "the fiber ran below its 4096-byte stack");
}

/// glibc's swapcontext saves and loads MXCSR: a ucontext fiber's rounding mode is its
/// own, and the executor's is untouched while the fiber is suspended (module doc,
/// "Floating-point control state").
#[cfg(target_arch = "x86_64")]
#[test]
fn a_ucontext_fiber_keeps_its_own_mxcsr_across_suspensions() {
    use core::arch::asm;
    fn mxcsr() -> u32 {
        let mut v = 0u32;
        // SAFETY: stmxcsr stores the 4-byte MXCSR into `v`, valid and writable.
        unsafe { asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack)) };
        v
    }
    fn set_mxcsr(v: u32) {
        // SAFETY: `v` is a valid MXCSR value (read from the CPU, rounding bits changed);
        // no float code in between depends on the mode.
        unsafe { asm!("ldmxcsr [{}]", in(reg) &v, options(nostack)) };
    }
    const RC_TOWARD_ZERO: u32 = 0b11 << 13;
    let (stacks, _) = region(2);
    let ex = pin!(Executor::with_stacks(SimDriver::new(), stacks, config()).unwrap());
    let ex = ex.into_ref();
    let outside = mxcsr();
    let t = ex
        .attach_fiber_with::<UcontextSwitch, _, _>(task("fenv"), ATTRS, |f: &mut Fiber| -> TaskResult {
            let before = mxcsr();
            set_mxcsr(before | RC_TOWARD_ZERO);
            f.yield_now()?;
            let kept = mxcsr() & RC_TOWARD_ZERO == RC_TOWARD_ZERO;
            set_mxcsr(before);
            Ok(u64::from(kept))
        })
        .attached();
    assert_eq!(ex.run(1, None), Ok(1));
    assert_eq!(ex.state(t), Ok(TaskState::Ready));
    assert_eq!(mxcsr(), outside, "the fiber's rounding mode leaked into the executor");
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))), "the fiber lost its rounding mode across a suspension");
    assert_eq!(mxcsr(), outside);
}
