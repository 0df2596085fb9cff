#![doc = include_str!("../README.md")]
//!
//! # This crate
//!
//! The counting allocator ([`CountingAlloc`], installed as the `#[global_allocator]` of
//! every binary that links this crate), the measured [`Window`], the report
//! ([`assert_alloc_free`], [`skip`]), and the set-up the tests share.

use core::pin::Pin;
use keel_core::{Driver, Executor, StackProvider, TaskAttrs, TaskHandle, TaskSlot};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Cycles every window measures.
pub const CYCLES: u64 = 1_000_000;

/// Cycles run before a window opens (first-use costs: the spare stack, the ring's
/// first enter, lazily initialised state).
pub const WARM_UP: u64 = 1_000;

/// The system allocator, counting. Every counter is process-wide: allocations on any
/// thread count (see the README: one test per process).
#[derive(Debug)]
pub struct CountingAlloc;

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

// Relaxed throughout: these are counters read by the thread that opened the window,
// after the code it measures ran on that same thread (program order suffices); an
// allocation on another thread that races with `close` may be missed, which is why no
// other thread may run during a window (README).
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static DEALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// A window is open.
static OPEN: AtomicBool = AtomicBool::new(false);
/// The first event in the open window: its kind (0: none yet), size and alignment.
static FIRST_KIND: AtomicU8 = AtomicU8::new(0);
static FIRST_SIZE: AtomicUsize = AtomicUsize::new(0);
static FIRST_ALIGN: AtomicUsize = AtomicUsize::new(0);
/// Backtraces still to print in the open window (`KEEL_ALLOC_BACKTRACE`).
static BACKTRACES: AtomicU32 = AtomicU32::new(0);
/// The thread that opened the window (`thread_mark`), and how many allocator calls in
/// the window were made on other threads.
static WINDOW_THREAD: AtomicUsize = AtomicUsize::new(0);
static ELSEWHERE: AtomicU64 = AtomicU64::new(0);
/// Allocator calls on the process's main thread (the harness's) while a window on
/// another thread was open: not counted in the window (see `note`).
static HARNESS: AtomicU64 = AtomicU64::new(0);

/// Whether the calling thread is the process's main thread (its thread id is the
/// process id). Two system calls, no allocation; asked only for a call made on another
/// thread than an open window's.
fn on_main_thread() -> bool {
    // SAFETY: `gettid` and `getpid` take no arguments, touch no memory and always succeed.
    unsafe { libc::syscall(libc::SYS_gettid) == libc::getpid() as libc::c_long }
}

std::thread_local! {
    /// This thread is inside the backtrace hook: its own allocations are not counted
    /// and do not recurse into the hook. Const-initialised with no destructor, so
    /// reaching it from the allocator never allocates.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// What an allocator call was.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `alloc` or `alloc_zeroed`.
    Alloc,
    /// `dealloc`.
    Dealloc,
    /// `realloc`.
    Realloc,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Alloc => 1,
            Kind::Dealloc => 2,
            Kind::Realloc => 3,
        }
    }

    fn from_code(c: u8) -> Option<Kind> {
        match c {
            1 => Some(Kind::Alloc),
            2 => Some(Kind::Dealloc),
            3 => Some(Kind::Realloc),
            _ => None,
        }
    }
}

/// One allocator call: the first one a window saw.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What it was.
    pub kind: Kind,
    /// Bytes (for `realloc`, the new size).
    pub size: usize,
    /// Alignment.
    pub align: usize,
}

fn in_hook() -> bool {
    IN_HOOK.try_with(Cell::get).unwrap_or(true)
}

/// A number unique to the calling thread among live threads (the address of its
/// `IN_HOOK`), found without allocating; 0 once its thread-locals are gone.
fn thread_mark() -> usize {
    IN_HOOK.try_with(|h| h as *const Cell<bool> as usize).unwrap_or(0)
}

/// Counts one allocator call (unless the backtrace hook made it), and records it if it
/// is the first in an open window.
fn note(kind: Kind, size: usize, align: usize) {
    if in_hook() {
        return;
    }
    if OPEN.load(Ordering::Relaxed) && thread_mark() != WINDOW_THREAD.load(Ordering::Relaxed) && on_main_thread() {
        // The harness's main thread (the test runs on a thread of its own): its waits
        // allocate on their own schedule (a channel context; past 60 s, the "running for
        // over 60 seconds" line), never in keel's code. Counted apart, not in the window.
        HARNESS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    match kind {
        Kind::Alloc => ALLOCS.fetch_add(1, Ordering::Relaxed),
        Kind::Dealloc => DEALLOCS.fetch_add(1, Ordering::Relaxed),
        Kind::Realloc => REALLOCS.fetch_add(1, Ordering::Relaxed),
    };
    if kind != Kind::Dealloc {
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
    if !OPEN.load(Ordering::Relaxed) {
        return;
    }
    if thread_mark() != WINDOW_THREAD.load(Ordering::Relaxed) {
        ELSEWHERE.fetch_add(1, Ordering::Relaxed);
    }
    if FIRST_KIND.compare_exchange(0, kind.code(), Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        FIRST_SIZE.store(size, Ordering::Relaxed);
        FIRST_ALIGN.store(align, Ordering::Relaxed);
    }
    if BACKTRACES.load(Ordering::Relaxed) > 0 {
        BACKTRACES.fetch_sub(1, Ordering::Relaxed);
        backtrace(kind, size, align);
    }
}

/// Prints where an allocator call inside a window came from (debugging aid; its own
/// allocations are not counted).
#[cold]
fn backtrace(kind: Kind, size: usize, align: usize) {
    let _ = IN_HOOK.try_with(|h| h.set(true));
    let bt = std::backtrace::Backtrace::force_capture();
    let _ =
        writeln!(std::io::stderr(), "alloc-free: {kind:?} of {size} bytes (align {align}) inside a window, at:\n{bt}");
    let _ = IN_HOOK.try_with(|h| h.set(false));
}

// SAFETY: every call forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees are ours; the counting touches only atomics and a const
// thread-local, and never allocates (the backtrace hook's allocations re-enter here,
// are recognised by `IN_HOOK` and go straight to `System`).
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(Kind::Alloc, layout.size(), layout.align());
        // SAFETY: the caller's `layout` duties are `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(Kind::Alloc, layout.size(), layout.align());
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(Kind::Dealloc, layout.size(), layout.align());
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(Kind::Realloc, new_size, layout.align());
        // SAFETY: as in `dealloc`, and `new_size` meets `realloc`'s duties (caller).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[derive(Copy, Clone, Debug)]
struct Raw {
    allocs: u64,
    deallocs: u64,
    reallocs: u64,
    bytes: u64,
}

impl Raw {
    fn now() -> Raw {
        Raw {
            allocs: ALLOCS.load(Ordering::Relaxed),
            deallocs: DEALLOCS.load(Ordering::Relaxed),
            reallocs: REALLOCS.load(Ordering::Relaxed),
            bytes: BYTES.load(Ordering::Relaxed),
        }
    }
}

/// What a window saw.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Counts {
    /// `alloc` and `alloc_zeroed` calls.
    pub allocs: u64,
    /// `dealloc` calls.
    pub deallocs: u64,
    /// `realloc` calls.
    pub reallocs: u64,
    /// Bytes asked for by allocations and reallocations.
    pub bytes: u64,
    /// How many of the calls were made on threads other than the window's.
    pub elsewhere: u64,
    /// Calls on the harness's main thread, left out of the counts (see `note`).
    pub harness: u64,
    /// The first allocator call, if any.
    pub first: Option<Event>,
    /// How long the window was open.
    pub elapsed: Duration,
}

impl Counts {
    /// Whether the window saw no allocator call at all.
    pub fn is_zero(&self) -> bool {
        self.allocs == 0 && self.deallocs == 0 && self.reallocs == 0
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} allocs, {} deallocs, {} reallocs", self.allocs, self.deallocs, self.reallocs)
    }
}

/// A measured window: every allocator call in the process between [`Window::open`] and
/// [`Window::close`] is counted. At most one is open at a time.
#[must_use = "close the window to read what it saw"]
#[derive(Debug)]
pub struct Window {
    start: Raw,
    started: Instant,
}

impl Window {
    /// Opens a window. Panics if one is open already.
    ///
    /// First it waits (up to two seconds) for every other thread of the process to be
    /// parked in a futex wait with no allocator call for a millisecond: the test
    /// harness's main thread allocates on its first wait for the test's result, which
    /// can fall into an early window otherwise (see [`settle`]).
    ///
    /// `KEEL_ALLOC_BACKTRACE=N` in the environment prints a backtrace of each of the
    /// first N allocator calls in the window (`1` if it is not a number).
    pub fn open() -> Window {
        // Read before the window opens: `var` allocates.
        let traces = std::env::var("KEEL_ALLOC_BACKTRACE").ok().map(|v| v.parse::<u32>().unwrap_or(1)).unwrap_or(0);
        if !settle(Duration::from_secs(2)) {
            say(
                "alloc-free: note: the process's other threads did not settle before this window; an allocation on one of them would count (the failure says how many)",
            );
        }
        assert!(!OPEN.swap(true, Ordering::Relaxed), "alloc-free: a window is open already (one at a time)");
        FIRST_KIND.store(0, Ordering::Relaxed);
        ELSEWHERE.store(0, Ordering::Relaxed);
        HARNESS.store(0, Ordering::Relaxed);
        WINDOW_THREAD.store(thread_mark(), Ordering::Relaxed);
        BACKTRACES.store(traces, Ordering::Relaxed);
        let started = Instant::now();
        Window { start: Raw::now(), started }
    }

    /// Closes the window and returns what it saw.
    pub fn close(self) -> Counts {
        let end = Raw::now();
        let elapsed = self.started.elapsed();
        let first = Kind::from_code(FIRST_KIND.load(Ordering::Relaxed)).map(|kind| Event {
            kind,
            size: FIRST_SIZE.load(Ordering::Relaxed),
            align: FIRST_ALIGN.load(Ordering::Relaxed),
        });
        let s = self.start;
        Counts {
            allocs: end.allocs - s.allocs,
            deallocs: end.deallocs - s.deallocs,
            reallocs: end.reallocs - s.reallocs,
            bytes: end.bytes - s.bytes,
            elsewhere: ELSEWHERE.load(Ordering::Relaxed),
            harness: HARNESS.load(Ordering::Relaxed),
            first,
            elapsed,
        }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        BACKTRACES.store(0, Ordering::Relaxed);
        OPEN.store(false, Ordering::Relaxed);
    }
}

/// Waits, up to `limit`, until every other thread of this process is parked in a
/// `futex` wait (from `/proc/self/task/<tid>/syscall`; io_uring's kernel workers,
/// `iou-*`, never run user code and are left out) and no allocator call was made for a
/// millisecond. Returns whether that happened (without `/proc`: after 20 ms, `false`).
///
/// Why: libtest runs each test on a thread of its own while its main thread waits for
/// the result, and that thread's first wait allocates (a channel context); right after
/// the test starts, that can land in a window.
pub fn settle(limit: Duration) -> bool {
    let start = Instant::now();
    let me = gettid();
    loop {
        let before = Raw::now();
        std::thread::sleep(Duration::from_millis(1));
        let quiet = Raw::now().allocs == before.allocs;
        match others_parked(me) {
            Some(true) if quiet => return true,
            None => {
                std::thread::sleep(Duration::from_millis(20));
                return false;
            }
            _ if start.elapsed() > limit => return false,
            _ => {}
        }
    }
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Whether every other thread is in a futex wait; `None` if `/proc` cannot tell.
fn others_parked(me: i32) -> Option<bool> {
    let dir = std::fs::read_dir("/proc/self/task").ok()?;
    for entry in dir {
        let entry = entry.ok()?;
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if tid == me {
            continue;
        }
        let path = entry.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.starts_with("iou-") {
            continue;
        }
        let syscall = std::fs::read_to_string(path.join("syscall")).ok()?;
        let nr = syscall.split_whitespace().next().and_then(|n| n.parse::<i64>().ok());
        if nr != Some(libc::SYS_futex) {
            return Some(false);
        }
    }
    Some(true)
}

/// Writes `line` to the process's stdout directly: `print!` goes through the test
/// harness's capture, this does not, so the line shows with or without `--nocapture`.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A leading newline: the harness has written "test <name> ... " without one.
    let _ = writeln!(out, "\n{line}");
    let _ = out.flush();
}

/// Prints what the window over `cycles` cycles of `what` counted, then fails if it
/// counted any allocation, deallocation or reallocation.
#[track_caller]
pub fn assert_alloc_free(what: &str, cycles: u64, counts: &Counts) {
    let ms = counts.elapsed.as_secs_f64() * 1e3;
    let per = counts.elapsed.as_nanos() as f64 / cycles.max(1) as f64;
    let harness = if counts.harness > 0 {
        format!(", {} harness calls on the main thread left out", counts.harness)
    } else {
        String::new()
    };
    say(&format!("alloc-free: {what}: {cycles} cycles, {counts} ({ms:.1} ms, {per:.1} ns/cycle{harness})"));
    if !counts.is_zero() {
        let first = match counts.first {
            Some(e) => format!("the first: {:?} of {} bytes (align {})", e.kind, e.size, e.align),
            None => "the first was not recorded".to_string(),
        };
        panic!(
            "alloc-free: {what} allocated inside its window: {counts} ({} bytes, {} of the calls on other threads) over \
             {cycles} cycles; {first}. Re-run this test with KEEL_ALLOC_BACKTRACE=1 for where.",
            counts.bytes, counts.elsewhere
        );
    }
}

/// Prints a loud skip line for `what` (counted as skipped by `make alloc-free`).
pub fn skip(what: &str, why: &str) {
    say(&format!("alloc-free: {what}: SKIPPED: {why}"));
}

/// A created task in a fresh, leaked slot of `N` body bytes (slots are `'static` by
/// design; a leaked one is set-up, outside any window).
pub fn task<const N: usize>(name: &'static str) -> TaskHandle {
    let slot: &'static TaskSlot<N> = Box::leak(Box::new(TaskSlot::new()));
    slot.create(TaskAttrs { name, ..TaskAttrs::default() }).expect("a fresh slot")
}

/// Runs exactly `n` items of work (resumptions or completions).
pub fn run_items<D: Driver, S: StackProvider>(ex: Pin<&Executor<D, S>>, n: u64) {
    let mut done = 0u64;
    while done < n {
        let left = usize::try_from(n - done).unwrap_or(usize::MAX);
        done += ex.run(left, None).unwrap_or_else(|e| panic!("run: {e}")) as u64;
    }
}

/// Runs until nothing is attached.
pub fn run_to_end<D: Driver, S: StackProvider>(ex: Pin<&Executor<D, S>>) {
    while ex.attached() > 0 {
        ex.run(usize::MAX, None).unwrap_or_else(|e| panic!("run: {e}"));
    }
}

/// Runs one item at a time until `done()` holds (a task whose i/o completes at once
/// stays ready, so a longer `run` could go far past the point asked for).
pub fn run_until<D: Driver, S: StackProvider>(ex: Pin<&Executor<D, S>>, mut done: impl FnMut() -> bool) {
    while !done() {
        assert!(ex.attached() > 0, "every task completed before the condition held");
        ex.run(1, None).unwrap_or_else(|e| panic!("run: {e}"));
    }
}

/// Cycles the measured task has completed: its body calls [`one`](Progress::one) per
/// cycle. Relaxed throughout: bumped and read on the executor's thread.
#[derive(Debug)]
pub struct Progress(AtomicU64);

impl Progress {
    /// None done yet.
    pub const fn new() -> Self {
        Progress(AtomicU64::new(0))
    }

    /// One more cycle done.
    pub fn one(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Cycles done.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// Measures the task just attached to `ex`, which runs `WARM_UP + CYCLES` cycles and
/// counts each in `progress` (from zero): runs it through the warm-up, opens a window
/// over exactly `CYCLES` cycles, runs it to its end, and asserts the window saw no
/// allocator call.
pub fn measure_progress<D: Driver, S: StackProvider>(ex: Pin<&Executor<D, S>>, progress: &Progress, what: &str) {
    progress.0.store(0, Ordering::Relaxed);
    run_until(ex, || progress.count() >= WARM_UP);
    let from = progress.count();
    let w = Window::open();
    run_until(ex, || progress.count() >= WARM_UP + CYCLES);
    let counts = w.close();
    run_to_end(ex);
    assert_eq!(progress.count() - from, CYCLES);
    assert_eq!(from, WARM_UP);
    assert_alloc_free(what, CYCLES, &counts);
}

/// A ring driver, or `None` (after a loud skip line for `what`) when this system has
/// no io_uring for us: `ENOSYS` (an old kernel, a seccomp filter) or `EPERM`
/// (`kernel.io_uring_disabled`, a container's policy). Any other failure fails the test.
pub fn ring_or_skip(what: &str, cfg: keel_linux::RingConfig) -> Option<keel_linux::RingDriver> {
    match keel_linux::RingDriver::new(cfg) {
        Ok(r) => Some(r),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            skip(what, &format!("io_uring is unavailable here ({e})"));
            None
        }
        Err(e) => panic!("{what}: RingDriver::new failed: {e}"),
    }
}

/// Attaches `body` as the next run of `*task` through `h` (a foreign thread's attach),
/// spinning while the executor has not yet released the task's previous run.
pub fn attach_when_released<F: core::future::Future<Output = ()> + Send + 'static>(
    h: &keel_core::ExecutorHandle,
    task: &mut TaskHandle,
    body: F,
) {
    let mut body = body;
    loop {
        match h.attach(*task, body) {
            Ok(run) => {
                *task = run;
                return;
            }
            Err(keel_core::AttachError::OwnedElsewhere(b)) => {
                body = b;
                std::hint::spin_loop();
            }
            Err(e) => panic!("attach: {e}"),
        }
    }
}
