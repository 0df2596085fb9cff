//! Fiber tasks on guarded mmap stacks (`MmapStacks`) and the real monotonic clock.

use core::cell::Cell;
use core::hint::black_box;
use core::pin::{Pin, pin};
use core::time::Duration;
use keel_core::{
    Config, Errno, Executor, Fiber, FiberAttrs, Stack, StackProvider, TaskAttrs, TaskError, TaskHandle, TaskResult,
    TaskSlot,
};
use keel_linux::{MmapStacks, SleepDriver, overflow};

const STACK: usize = 16 * 1024;
const ATTRS: FiberAttrs = FiberAttrs { stack_size: STACK, ..FiberAttrs::DEFAULT };

fn task(name: &'static str) -> TaskHandle {
    let slot: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
    slot.create(TaskAttrs { name, ..Default::default() }).unwrap()
}

fn run_all<S: StackProvider>(ex: Pin<&Executor<SleepDriver, S>>) {
    while ex.attached() > 0 {
        ex.run(1_000_000, Some(Duration::from_secs(30))).expect("run");
    }
}

thread_local! {
    /// `(base, size)` of the stack last handed to a task on this thread.
    static LAST: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// `MmapStacks` that remembers the last stack it assigned, so a fiber knows its limit
/// exactly.
struct Recording(MmapStacks);

// SAFETY: forwards every call to `MmapStacks`, which keeps the trait's promises.
unsafe impl StackProvider for Recording {
    fn allocate(&mut self, size: usize) -> Result<Stack, Errno> {
        self.0.allocate(size)
    }
    unsafe fn release(&mut self, stack: Stack) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.0.release(stack) }
    }
    fn decommit(&mut self, stack: &Stack, keep_from: *mut u8) {
        self.0.decommit(stack, keep_from)
    }
    fn assigned(&mut self, stack: &Stack, task_id: u32) {
        LAST.set((stack.base.as_ptr() as usize, stack.size));
        self.0.assigned(stack, task_id)
    }
}

fn value(i: u64) -> u64 {
    i * 7 + 3
}

#[test]
fn ten_thousand_fibers_interleave_yields_and_sleeps_with_results_checked() {
    const N: u64 = 10_000;
    let ex = pin!(
        Executor::with_stacks(SleepDriver::new(), MmapStacks::new().unwrap(), keel_linux::panic::config()).unwrap()
    );
    let ex = ex.into_ref();
    let mut runs = Vec::with_capacity(N as usize);
    for i in 0..N {
        let h = ex
            .attach_fiber(task("many"), ATTRS, move |f: &mut Fiber| -> TaskResult {
                let mut acc = 0u64;
                for k in 0..4 {
                    if (i + k) % 2 == 0 {
                        f.yield_now()?;
                    } else {
                        f.sleep(Duration::from_micros((i % 50) * 10 + k))?;
                    }
                    acc += k;
                }
                Ok(value(i) + acc - 6)
            })
            .unwrap();
        runs.push(h);
    }
    // More stacks than the overflow registry holds: the ones beyond it work all the same.
    assert!(overflow::registered_stacks() <= overflow::REGISTRY_CAPACITY);
    let st = ex.stack_stats();
    assert_eq!((st.created, st.in_use), (N, N), "{st:?}");
    run_all(ex);
    for (i, h) in runs.into_iter().enumerate() {
        assert_eq!(ex.result(h), Ok(Some(Ok(value(i as u64)))), "fiber {i}");
    }
    let st = ex.stack_stats();
    assert_eq!(st.in_use, 0, "{st:?}");
    assert_eq!(st.spares, Config::default().max_spare_stacks as u64);
    assert_eq!(st.released, N - st.spares);
}

/// Recurses with ~512-byte frames until fewer than `stop` bytes are left above `base`;
/// returns (bytes left at the deepest frame, depth).
#[inline(never)]
fn descend(base: usize, stop: usize, depth: u64, fill: u8) -> (usize, u64) {
    let mut frame = [fill; 512];
    let frame = black_box(&mut frame);
    frame[depth as usize % 512] = fill;
    let left = frame.as_ptr() as usize - base;
    if left <= stop {
        return (left, depth);
    }
    let (l, d) = descend(base, stop, depth + 1, fill);
    (l, d + u64::from(black_box(frame)[0] != fill))
}

/// A fiber body that goes to within a page of its stack's limit, survives, yields, and
/// returns how deep it went. The limit is exactly `base` (the usable size requested,
/// rounded to pages: 16 KiB is a whole number of pages).
fn near_the_limit(fill: u8) -> impl FnOnce(&mut Fiber) -> TaskResult {
    move |f: &mut Fiber| {
        let (base, size) = LAST.get();
        assert_eq!(size, STACK);
        let top_local = 0u8;
        let top = base + size;
        let here = black_box(&top_local) as *const u8 as usize;
        assert!(here < top && top - here < 4096, "the first frame is in the top page: {here:#x} vs {top:#x}");
        let (left, depth) = descend(base, 2048, 0, fill);
        assert!(left > 0 && left < 4096, "stopped {left} bytes above the limit");
        f.yield_now()?;
        Ok(depth)
    }
}

#[test]
fn recursion_to_within_a_page_of_the_limit_survives() {
    let stacks = Recording(MmapStacks::new().unwrap());
    assert_eq!(stacks.0.guard(), rustix::param::page_size());
    let ex = pin!(Executor::with_stacks(SleepDriver::new(), stacks, keel_linux::panic::config()).unwrap());
    let ex = ex.into_ref();
    let h = ex.attach_fiber(task("deep"), ATTRS, near_the_limit(0xA5)).unwrap();
    run_all(ex);
    let depth = match ex.result(h) {
        Ok(Some(Ok(d))) => d,
        other => panic!("{other:?}"),
    };
    assert!(depth > 10, "went only {depth} frames deep");
}

#[test]
fn a_stack_is_reused_from_the_pool() {
    let ex = pin!(
        Executor::with_stacks(SleepDriver::new(), MmapStacks::new().unwrap(), keel_linux::panic::config()).unwrap()
    );
    let ex = ex.into_ref();
    let mut h = task("reuse");
    for i in 0..500u64 {
        h = ex
            .attach_fiber(h, ATTRS, move |f: &mut Fiber| -> TaskResult {
                f.yield_now()?;
                Ok(value(i))
            })
            .unwrap();
        run_all(ex);
        assert_eq!(ex.result(h), Ok(Some(Ok(value(i)))));
    }
    let st = ex.stack_stats();
    assert_eq!((st.created, st.reused, st.high_water, st.released), (1, 499, 1, 0), "{st:?}");
}

/// Bytes of the spare stack `[base, base + size - 4096)` (below the page the pool keeps
/// its bookkeeping in) that are not zero.
fn nonzero_below_the_top_page(base: usize, size: usize) -> usize {
    // SAFETY: a spare stack of this test's executor: mapped read/write, and nothing runs
    // on it or writes it while we look (the executor is idle, on this thread).
    let bytes = unsafe { core::slice::from_raw_parts(base as *const u8, size - 4096) };
    bytes.iter().filter(|&&b| b != 0).count()
}

#[test]
fn stack_rule_3_trimmed_spares_are_decommitted_and_work_when_reused() {
    let ex = pin!(
        Executor::with_stacks(SleepDriver::new(), Recording(MmapStacks::new().unwrap()), keel_linux::panic::config())
            .unwrap()
    );
    let ex = ex.into_ref();
    let h = ex.attach_fiber(task("dirty"), ATTRS, near_the_limit(0xA5)).unwrap();
    let (base, size) = LAST.get();
    run_all(ex);
    assert!(matches!(ex.result(h), Ok(Some(Ok(_)))));
    assert!(nonzero_below_the_top_page(base, size) > 4096, "the fiber wrote its stack");
    assert_eq!(ex.stack_stats().decommitted, 0);

    ex.trim_stacks(Duration::ZERO);
    let st = ex.stack_stats();
    assert_eq!((st.decommitted, st.spares), (1, 1), "{st:?}");
    assert_eq!(nonzero_below_the_top_page(base, size), 0, "MADV_DONTNEED dropped the pages");
    ex.trim_stacks(Duration::ZERO);
    assert_eq!(ex.stack_stats().decommitted, 1, "a spare is decommitted once");

    let h = ex.attach_fiber(h, ATTRS, near_the_limit(0x5A)).unwrap();
    assert_eq!(LAST.get(), (base, size), "the decommitted spare was reused");
    run_all(ex);
    assert!(matches!(ex.result(h), Ok(Some(Ok(d))) if d > 10), "{:?}", ex.result(h));
    let st = ex.stack_stats();
    assert_eq!((st.created, st.reused), (1, 1), "{st:?}");
}

#[test]
fn spares_are_trimmed_while_parked_when_configured() {
    // The slow fiber's sleep must outlast the quick fiber's run, so that the executor
    // parks: 5 ms, and 4x longer each time a slow run (valgrind) saw no park. At most 5 tries.
    let mut nap = Duration::from_millis(5);
    let cfg = Config { trim_spare_stacks_after: Some(Duration::ZERO), ..keel_linux::panic::config() };
    let mut ex = Box::pin(Executor::with_stacks(SleepDriver::new(), MmapStacks::new().unwrap(), cfg).unwrap());
    let quick = loop {
        let e = ex.as_ref();
        let quick = e
            .attach_fiber(task("quick"), ATTRS, |f: &mut Fiber| -> TaskResult {
                f.yield_now()?;
                Ok(1u64)
            })
            .unwrap();
        let slow = e
            .attach_fiber(task("slow"), ATTRS, move |f: &mut Fiber| -> TaskResult {
                f.sleep(nap)?;
                Ok(2)
            })
            .unwrap();
        run_all(e);
        assert_eq!((e.result(quick), e.result(slow)), (Ok(Some(Ok(1))), Ok(Some(Ok(2)))));
        if e.stats().parks >= 1 {
            break quick;
        }
        assert!(nap < Duration::from_secs(1), "the executor never parked while a fiber slept");
        nap *= 4;
        ex = Box::pin(Executor::with_stacks(SleepDriver::new(), MmapStacks::new().unwrap(), cfg).unwrap());
    };
    let ex = ex.as_ref();
    let st = ex.stack_stats();
    assert!(st.decommitted >= 1, "the quick fiber's spare was trimmed while the slow one slept: {st:?}");
    // And it still works.
    let again = ex
        .attach_fiber(quick, ATTRS, |f: &mut Fiber| -> TaskResult {
            f.yield_now()?;
            Ok(3u64)
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(again), Ok(Some(Ok(3))));
}

/// Unwinding needs stack: a panic took 20-24 KiB in a debug build here (the default hook
/// and the unwinder), so these fibers get the default 64 KiB.
#[test]
fn a_panic_in_a_fiber_completes_the_task_with_an_error_naming_it() {
    const ATTRS: FiberAttrs = FiberAttrs { stack_size: 64 * 1024, ..FiberAttrs::DEFAULT };
    let ex = pin!(
        Executor::with_stacks(SleepDriver::new(), MmapStacks::new().unwrap(), keel_linux::panic::config()).unwrap()
    );
    let ex = ex.into_ref();
    let n = black_box(7);
    let formatted = ex
        .attach_fiber(task("fmt"), ATTRS, move |f: &mut Fiber| -> TaskResult {
            f.yield_now()?;
            if black_box(true) {
                panic!("fiber boom {n}");
            }
            Ok(0)
        })
        .unwrap();
    let literal = ex
        .attach_fiber(task("lit"), ATTRS, |f: &mut Fiber| -> TaskResult {
            f.sleep(Duration::from_millis(1))?;
            if black_box(true) {
                panic!("literal boom");
            }
            Ok(0)
        })
        .unwrap();
    let fine = ex
        .attach_fiber(task("fine"), ATTRS, |f: &mut Fiber| -> TaskResult {
            f.yield_now()?;
            Ok(9u64)
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(formatted), Ok(Some(Err(TaskError::Panicked("fiber boom 7")))));
    assert_eq!(ex.result(literal), Ok(Some(Err(TaskError::Panicked("literal boom")))));
    assert_eq!(ex.result(fine), Ok(Some(Ok(9))));
    let st = ex.stack_stats();
    assert_eq!(st.in_use, 0, "the panicked fibers' stacks came back: {st:?}");
}
