#![no_std]
#![no_main]
#![doc = include_str!("../README.md")]

use core::cell::UnsafeCell;
use core::fmt::Write;
use core::pin::{Pin, pin};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use core::time::Duration;
use keel_core::sim::{SimDriver, SimOp};
use keel_core::{
    CancelOutcome, Config, Executor, Fiber, FiberAttrs, IoStatus, Priorities, Priority, RegionStacks, TaskAttrs,
    TaskError, TaskHandle, TaskPool, rt,
};

// The C library: its start-up code (crt1's `_start`) calls our `main` and `exit`s with
// what it returns; we also use `write` for messages and `_exit` on a panic.
#[link(name = "c")]
unsafe extern "C" {
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    fn _exit(status: i32) -> !;
}

/// Exit status of a panic (every failed check has its own status, 10 and up).
const PANICKED: i32 = 101;

/// Exit status if anything tried to unwind.
const UNWOUND: i32 = 102;

/// Writes to standard error with `write(2)`: no buffer, no allocation.
struct Stderr;

impl Write for Stderr {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let mut b = s.as_bytes();
        while !b.is_empty() {
            // SAFETY: `b` is a live buffer of `b.len()` bytes.
            let n = unsafe { write(2, b.as_ptr(), b.len()) };
            if n <= 0 {
                return Err(core::fmt::Error);
            }
            b = &b[n as usize..];
        }
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = writeln!(Stderr, "keel-nostd-consumer: panicked: {info}");
    // SAFETY: `_exit` ends the process at once; nothing is left to uphold.
    unsafe { _exit(PANICKED) }
}

/// The precompiled `core` is built for unwinding, so its landing pads name the unwinder's
/// personality routine, which std would provide. Nothing here unwinds (`panic = "abort"`,
/// and no foreign code throws), so it is never called; if it ever were, it ends the
/// process rather than guess.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() -> ! {
    let _ = writeln!(Stderr, "keel-nostd-consumer: an unwind was attempted");
    // SAFETY: as in `panic`.
    unsafe { _exit(UNWOUND) }
}

/// What the task bodies did, in order (bodies are `'static`, so the log is a static).
struct Log {
    bytes: [AtomicU8; 64],
    len: AtomicUsize,
}

impl Log {
    const fn new() -> Self {
        Log { bytes: [const { AtomicU8::new(0) }; 64], len: AtomicUsize::new(0) }
    }

    fn push(&self, b: u8) {
        // Relaxed: one thread; atomics only because a static must be `Sync`.
        let i = self.len.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.bytes.get(i) {
            slot.store(b, Ordering::Relaxed);
        }
    }

    /// Whether the log holds exactly `expected`; clears it.
    fn take_is(&self, expected: &[u8]) -> bool {
        let len = self.len.swap(0, Ordering::Relaxed);
        len == expected.len() && expected.iter().zip(&self.bytes).all(|(e, b)| b.load(Ordering::Relaxed) == *e)
    }
}

static LOG: Log = Log::new();

/// Every task of the program: storage declared up front, nothing allocated.
static TASKS: TaskPool<16, 512> = TaskPool::new();

/// Memory for fiber stacks (two of 32 KiB, carved by `RegionStacks`).
struct StackMemory(UnsafeCell<[u8; 2 * 32 * 1024 + 16]>);

// SAFETY: the memory is reached only through the one `&'static mut` that `run_checks`
// makes, once, on the one thread.
unsafe impl Sync for StackMemory {}

static STACK_MEMORY: StackMemory = StackMemory(UnsafeCell::new([0; 2 * 32 * 1024 + 16]));

/// A failed check: its exit status and what it checked.
struct Failed(i32, &'static str);

fn check(ok: bool, status: i32, what: &'static str) -> Result<(), Failed> {
    if ok { Ok(()) } else { Err(Failed(status, what)) }
}

type Ex<'a> = Pin<&'a Executor<SimDriver, RegionStacks>>;

fn task(cpu: Priority, name: &'static str) -> Result<TaskHandle, Failed> {
    TASKS
        .create(TaskAttrs { priority: Priorities { cpu, io: Priority::Normal }, name })
        .map_err(|_| Failed(20, "create a task"))
}

fn run_all(ex: Ex<'_>) -> Result<usize, Failed> {
    let mut items = 0;
    while ex.attached() > 0 {
        items += ex.run(64, None).map_err(|_| Failed(21, "run"))?;
        check(items < 100_000, 22, "run: runaway")?;
    }
    Ok(items)
}

fn result_is(ex: Ex<'_>, h: TaskHandle, v: u64) -> bool {
    ex.result(h) == Ok(Some(Ok(v)))
}

/// Each CPU priority runs before the one below it, whatever the attach order.
fn priorities(ex: Ex<'_>) -> Result<(), Failed> {
    let mut runs = [None; 3];
    for (i, (p, tag)) in
        [(Priority::Low, b'L'), (Priority::Normal, b'N'), (Priority::High, b'H')].into_iter().enumerate()
    {
        let h = task(p, "prio")?;
        let body = async move {
            LOG.push(tag);
            u64::from(tag)
        };
        runs[i] = Some(ex.attach(h, body).map_err(|_| Failed(23, "attach"))?);
    }
    run_all(ex)?;
    check(LOG.take_is(b"HNL"), 10, "priorities: High, then Normal, then Low")?;
    for (run, tag) in runs.into_iter().zip([b'L', b'N', b'H']) {
        check(run.is_some_and(|h| result_is(ex, h, u64::from(tag))), 14, "priorities: results")?;
    }
    Ok(())
}

/// Tasks of one priority take turns, FIFO, when they yield.
fn yields(ex: Ex<'_>) -> Result<(), Failed> {
    let mut runs = [None; 2];
    for (i, tag) in [b'a', b'b'].into_iter().enumerate() {
        let body = async move {
            for _ in 0..3 {
                LOG.push(tag);
                rt::yield_now().await?;
            }
            Ok::<(), TaskError>(())
        };
        runs[i] = Some(ex.attach(task(Priority::Normal, "yield")?, body).map_err(|_| Failed(23, "attach"))?);
    }
    run_all(ex)?;
    check(LOG.take_is(b"ababab"), 11, "yields: FIFO within a priority")?;
    check(runs.into_iter().all(|r| r.is_some_and(|h| result_is(ex, h, 0))), 14, "yields: results")
}

/// Timers fire in deadline order on the simulated driver's virtual clock.
fn timers(ex: Ex<'_>) -> Result<(), Failed> {
    let start = ex.now();
    let mut runs = [None; 3];
    for (i, (ms, tag)) in [(30, b'c'), (10, b'a'), (20, b'b')].into_iter().enumerate() {
        let body = async move {
            rt::sleep(Duration::from_millis(ms)).await?;
            LOG.push(tag);
            Ok::<u64, TaskError>(ms)
        };
        runs[i] = Some(ex.attach(task(Priority::Normal, "sleep")?, body).map_err(|_| Failed(23, "attach"))?);
    }
    run_all(ex)?;
    check(LOG.take_is(b"abc"), 12, "timers: deadline order")?;
    check(ex.now().saturating_since(start) == Duration::from_millis(30), 13, "timers: virtual time")?;
    for (run, ms) in runs.into_iter().zip([30, 10, 20]) {
        check(run.is_some_and(|h| result_is(ex, h, ms)), 14, "timers: results")?;
    }
    Ok(())
}

/// A stackful task on keel's own switch, its stack carved from static memory.
fn fiber(ex: Ex<'_>) -> Result<(), Failed> {
    let body = |f: &mut Fiber| -> Result<u64, TaskError> {
        LOG.push(b'f');
        f.yield_now()?;
        f.sleep(Duration::from_millis(5))?;
        LOG.push(b'F');
        Ok(42)
    };
    let h = ex.attach_fiber(
        task(Priority::High, "fiber")?,
        FiberAttrs { stack_size: 16 * 1024, ..FiberAttrs::DEFAULT },
        body,
    );
    let h = h.map_err(|_| Failed(23, "attach"))?;
    run_all(ex)?;
    check(LOG.take_is(b"fF") && result_is(ex, h, 42), 15, "fiber: yield, sleep, result")?;
    check(ex.stack_stats().created == 1, 15, "fiber: one stack")
}

/// An NT-style status block: initiate a simulated read, wait for its completion.
fn io(ex: Ex<'_>) -> Result<(), Failed> {
    let body = async {
        let st = pin!(IoStatus::new());
        let op = SimOp::new(7).after(Duration::from_millis(4)).with_result(Ok(512));
        keel_core::initiate::<SimDriver>(st.as_ref(), op).await.map_err(|_| TaskError::Failed(1))?;
        if keel_core::suspend_until_completed_io(1).await? != 1 {
            return Err(TaskError::Failed(2));
        }
        match st.result() {
            Some(Ok(n)) => Ok(u64::from(n)),
            _ => Err(TaskError::Failed(3)),
        }
    };
    let h = ex.attach(task(Priority::Normal, "io")?, body).map_err(|_| Failed(23, "attach"))?;
    run_all(ex)?;
    check(result_is(ex, h, 512), 16, "io: a status block completes with the driver's result")
}

/// A sleeping task cancelled: its sleep returns `Cancelled`, and so does the run.
fn cancel(ex: Ex<'_>) -> Result<(), Failed> {
    let body = async {
        rt::sleep(Duration::from_secs(3600)).await?;
        Ok::<u64, TaskError>(1)
    };
    let h = ex.attach(task(Priority::Normal, "cancel")?, body).map_err(|_| Failed(23, "attach"))?;
    check(ex.run(1, None).is_ok(), 17, "cancel: the task starts")?;
    check(ex.cancel(h) == Ok(CancelOutcome::Resumes), 17, "cancel: a sleeping task resumes")?;
    run_all(ex)?;
    check(ex.result(h) == Ok(Some(Err(TaskError::Cancelled))), 17, "cancel: the run ends cancelled")
}

/// One task attached again and again with the handle of its previous run.
fn reuse(ex: Ex<'_>) -> Result<(), Failed> {
    let mut h = task(Priority::Low, "reuse")?;
    let before = ex.stats().completed;
    for i in 0..1000u64 {
        h = ex.attach(h, async move { i * 2 }).map_err(|_| Failed(18, "reuse: attach"))?;
        run_all(ex)?;
        check(result_is(ex, h, i * 2), 18, "reuse: result")?;
    }
    check(ex.stats().completed - before == 1000, 18, "reuse: completed count")
}

fn run_checks() -> Result<usize, Failed> {
    // SAFETY: the only reference ever made to `STACK_MEMORY`'s bytes (`run_checks` runs
    // once, from `main`).
    let memory: &'static mut [u8] = unsafe { &mut *STACK_MEMORY.0.get() };
    let stacks = RegionStacks::new(memory, 32 * 1024, 0).map_err(|_| Failed(24, "region stacks"))?;
    let ex =
        pin!(Executor::with_stacks(SimDriver::new(), stacks, Config::default()).map_err(|_| Failed(25, "executor"))?);
    let ex = ex.into_ref();
    let checks: [fn(Ex<'_>) -> Result<(), Failed>; 7] = [priorities, yields, timers, fiber, io, cancel, reuse];
    for c in checks {
        c(ex)?;
    }
    Ok(checks.len())
}

/// Entry point, called by the C runtime. Exit status 0: every check passed; otherwise
/// the status names the check that failed (see the README).
#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    // The deliberately broken builds (check.sh): link a dependency that pulls in alloc
    // or std. Neither builds, which is the point.
    #[cfg(any(feature = "leak-alloc", feature = "leak-std"))]
    core::hint::black_box(keel_nostd_leak::touch());
    match run_checks() {
        Ok(n) => {
            let _ = writeln!(Stderr, "keel-nostd-consumer: {n} checks passed (no_std, no alloc, no unwinding)");
            0
        }
        Err(Failed(status, what)) => {
            let _ = writeln!(Stderr, "keel-nostd-consumer: FAILED: {what} (exit status {status})");
            status
        }
    }
}
