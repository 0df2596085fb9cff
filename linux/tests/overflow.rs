//! Stack overflow reports, in child processes: this test binary runs itself again with
//! `KEEL_OVERFLOW_CHILD=<case>`, filtered to the `child` test, which then plays that case
//! and is expected to die. Each test is named after the overflow or stack rule it guards
//! (`linux/src/overflow.rs`, `linux/src/stack.rs`).

use core::hint::black_box;
use core::pin::pin;
use core::time::Duration;
use keel_core::{Executor, Fiber, FiberAttrs, StackProvider, TaskAttrs, TaskHandle, TaskResult, TaskSlot};
use keel_linux::{MmapStacks, SleepDriver};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

const CHILD_ENV: &str = "KEEL_OVERFLOW_CHILD";
/// Not a whole number of pages: the report gives the size rounded up.
const REQUESTED: usize = 40_000;

fn task(name: &'static str) -> TaskHandle {
    let slot: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
    slot.create(TaskAttrs { name, ..Default::default() }).unwrap()
}

/// Recurses with 512-byte frames until the stack runs out.
#[inline(never)]
fn bottomless(depth: u64) -> u64 {
    let mut frame = [0u8; 512];
    frame[depth as usize % 512] = 1;
    let frame = black_box(frame);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    bottomless(depth + 1) + u64::from(frame[0])
}

/// A write to an address nothing is mapped at (not a guard region).
fn wild_write() {
    let p = black_box(16usize) as *mut u8;
    // SAFETY: not safe at all: this is the fault the child is here to take.
    unsafe { p.write_volatile(1) };
}

/// Runs one fiber on `MmapStacks` created on this thread, after printing its task id.
fn run_fiber(body: fn(&mut Fiber) -> TaskResult) {
    let stacks = MmapStacks::new().expect("MmapStacks");
    let ex = pin!(Executor::with_stacks(SleepDriver::new(), stacks, keel_linux::panic::config()).unwrap());
    let ex = ex.into_ref();
    for _ in 0..3 {
        task("other"); // so the id is not simply 1
    }
    let h = task("child");
    eprintln!("child: task {}", h.id());
    ex.attach_fiber(h, FiberAttrs { stack_size: REQUESTED, ..FiberAttrs::DEFAULT }, body).unwrap();
    while ex.attached() > 0 {
        ex.run(1000, Some(Duration::from_secs(10))).unwrap();
    }
}

/// A first fiber (task 4) runs on a pooled stack and returns; a second (task 5) gets the
/// same stack from the pool and overflows: the report must name task 5.
fn run_two_fibers_on_one_stack() {
    let stacks = MmapStacks::new().expect("MmapStacks");
    let ex = pin!(Executor::with_stacks(SleepDriver::new(), stacks, keel_linux::panic::config()).unwrap());
    let ex = ex.into_ref();
    for _ in 0..3 {
        task("other");
    }
    let first = task("first");
    let attrs = FiberAttrs { stack_size: REQUESTED, ..FiberAttrs::DEFAULT };
    ex.attach_fiber(first, attrs, |f: &mut Fiber| -> TaskResult {
        f.yield_now()?;
        Ok(0)
    })
    .unwrap();
    while ex.attached() > 0 {
        ex.run(1000, Some(Duration::from_secs(10))).unwrap();
    }
    let h = task("child");
    eprintln!("child: task {}", h.id());
    ex.attach_fiber(h, attrs, overflowing_fiber).unwrap();
    while ex.attached() > 0 {
        ex.run(1000, Some(Duration::from_secs(10))).unwrap();
    }
}

fn overflowing_fiber(f: &mut Fiber) -> TaskResult {
    f.yield_now()?;
    Ok(bottomless(0))
}

fn faulting_fiber(f: &mut Fiber) -> TaskResult {
    f.yield_now()?;
    wild_write();
    Ok(0)
}

extern "C" fn earlier_handler(sig: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let msg = b"child: the earlier handler got the fault\n";
    // SAFETY: write and _exit are async-signal-safe; `msg` is valid.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(40 + sig);
    }
}

fn set_default_segv() {
    // SAFETY: SIG_DFL for SIGSEGV, before anything else in this child installs a handler.
    assert_ne!(unsafe { libc::signal(libc::SIGSEGV, libc::SIG_DFL) }, libc::SIG_ERR);
}

/// The child side: plays the case named in `KEEL_OVERFLOW_CHILD`. Without it (an
/// ordinary test run) this is a helper with nothing to do.
#[test]
fn child() {
    let Ok(case) = std::env::var(CHILD_ENV) else { return };
    // No core dumps from the deaths that follow.
    rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit { current: Some(0), maximum: None },
    )
    .ok();
    match case.as_str() {
        "overflow" => run_fiber(overflowing_fiber),
        "overflow-in-second-thread" => {
            let _first = MmapStacks::new().unwrap(); // the handler is installed from this thread
            std::thread::spawn(|| run_fiber(overflowing_fiber)).join().unwrap();
        }
        "wild-write-in-fiber" => run_fiber(faulting_fiber),
        "wild-write-default-action" => {
            set_default_segv();
            let _stacks = MmapStacks::new().unwrap();
            wild_write();
        }
        "sent-default-action" => {
            set_default_segv();
            let _stacks = MmapStacks::new().unwrap();
            // SAFETY: raising a signal is safe; it is expected to kill us.
            unsafe { libc::raise(libc::SIGSEGV) };
        }
        "earlier-handler" => {
            // SAFETY: an SA_SIGINFO handler that only calls async-signal-safe functions.
            unsafe {
                let mut act: libc::sigaction = core::mem::zeroed();
                act.sa_sigaction = earlier_handler as *const () as usize;
                act.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&mut act.sa_mask);
                assert_eq!(libc::sigaction(libc::SIGSEGV, &act, core::ptr::null_mut()), 0);
            }
            let _stacks = MmapStacks::new().unwrap();
            wild_write();
        }
        "earlier-handler-installed-twice" => {
            // SAFETY: as in "earlier-handler".
            unsafe {
                let mut act: libc::sigaction = core::mem::zeroed();
                act.sa_sigaction = earlier_handler as *const () as usize;
                act.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&mut act.sa_mask);
                assert_eq!(libc::sigaction(libc::SIGSEGV, &act, core::ptr::null_mut()), 0);
            }
            // Two installs (each `MmapStacks::new` calls it): the second must not take
            // keel's own handler for the "previous" one.
            let _a = MmapStacks::new().unwrap();
            let _b = MmapStacks::new().unwrap();
            keel_linux::overflow::install().unwrap();
            wild_write();
        }
        "overflow-after-registry-churn" => {
            // More stacks mapped and unmapped than the registry has entries: each must
            // give its entry back when unmapped, or the fiber's stack finds none.
            let mut stacks = MmapStacks::new().unwrap();
            for _ in 0..keel_linux::overflow::REGISTRY_CAPACITY + 16 {
                let s = stacks.allocate(REQUESTED).unwrap();
                assert_ne!(s.tag, keel_linux::stack::UNREGISTERED, "a stack found the registry full");
                // SAFETY: just allocated by `stacks`, used by nothing.
                unsafe { stacks.release(s) };
            }
            run_fiber(overflowing_fiber);
        }
        "overflow-on-a-reused-stack" => run_two_fibers_on_one_stack(),
        other => panic!("unknown child case {other}"),
    }
    eprintln!("child: case {case} survived");
    std::process::exit(3);
}

/// Runs case `case` in a child; its exit status and stderr.
fn run_child(case: &str) -> (ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, case)
        .output()
        .expect("spawn the child");
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The id the child printed.
fn child_task_id(stderr: &str) -> u32 {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("child: task "))
        .unwrap_or_else(|| panic!("no task id in:\n{stderr}"));
    line.trim().parse().unwrap()
}

fn assert_overflow_reported(case: &str) {
    assert_overflow_reported_for(case, 4);
}

fn assert_overflow_reported_for(case: &str, want_id: u32) {
    let (status, stderr) = run_child(case);
    let id = child_task_id(&stderr);
    assert_eq!(id, want_id, "the child's task");
    let size = REQUESTED.next_multiple_of(rustix::param::page_size());
    let expected = format!("keel: stack overflow in task {id} (stack {size} bytes)\n");
    assert_eq!(stderr.matches(&expected).count(), 1, "expected {expected:?} once in:\n{stderr}");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}\n{stderr}");
}

/// The overflow lands in a registered guard region: reported with the stack's size (as
/// mapped: rounded up to pages) and aborted.
#[test]
fn overflow_rule_3_an_overflow_in_a_registered_guard_region_is_reported_with_the_stack_size_then_aborts() {
    assert_overflow_reported("overflow");
}

/// The report names the task the stack was handed to (its id, 4, is not simply 1).
#[test]
fn overflow_rule_4_the_report_names_the_task_the_stack_was_assigned_to() {
    let (_, stderr) = run_child("overflow");
    assert_eq!(child_task_id(&stderr), 4);
    assert!(stderr.contains("keel: stack overflow in task 4 "), "{stderr}");
}

/// A stack reused from the pool is assigned to its new task, so the report names the
/// task that overflowed, not the stack's previous one.
#[test]
fn stack_rule_2_a_reused_stack_is_reported_with_its_new_task() {
    assert_overflow_reported_for("overflow-on-a-reused-stack", 5);
}

/// Stacks give their registry entries back when unmapped: after more stacks than the
/// registry holds came and went, an overflow is still reported.
#[test]
fn stack_rule_1_stacks_unregister_when_unmapped_so_the_registry_never_fills() {
    assert_overflow_reported("overflow-after-registry-churn");
}

/// `MmapStacks::new` installs the handler and sets the alternate stack on its own thread:
/// a fiber on another thread's `MmapStacks` is reported there.
#[test]
fn overflow_rule_2_an_overflow_on_another_thread_is_reported_on_its_own_alternate_stack() {
    assert_overflow_reported("overflow-in-second-thread");
}

/// Installing again (every `MmapStacks::new`, an explicit `install`) keeps the first
/// install's previous action: a fault that is not an overflow still reaches the handler
/// installed before keel (a second install would chain keel's handler to itself).
#[test]
fn overflow_rule_1_installed_once_so_the_earlier_handler_stays_the_previous_action() {
    let (status, stderr) = run_child("earlier-handler-installed-twice");
    assert!(stderr.contains("child: the earlier handler got the fault\n"), "{status:?}\n{stderr}");
    assert!(!stderr.contains("keel:"), "{stderr}");
    assert_eq!(status.code(), Some(40 + libc::SIGSEGV), "{status:?}\n{stderr}");
}

fn assert_chained_segv(case: &str) -> String {
    let (status, stderr) = run_child(case);
    assert!(!stderr.contains("keel:"), "not an overflow, yet:\n{stderr}");
    assert!(!stderr.contains("survived"), "{stderr}");
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}\n{stderr}");
    stderr
}

#[test]
fn overflow_rule_5_a_wild_write_in_a_fiber_is_chained_to_the_earlier_handler_and_kills_by_sigsegv() {
    // The earlier handler is std's (it reports only its own threads' guard pages).
    let stderr = assert_chained_segv("wild-write-in-fiber");
    child_task_id(&stderr);
}

#[test]
fn overflow_rule_5_a_fault_with_the_default_action_before_is_re_raised_as_sigsegv() {
    assert_chained_segv("wild-write-default-action");
}

#[test]
fn overflow_rule_5_a_sent_sigsegv_with_the_default_action_before_still_kills() {
    assert_chained_segv("sent-default-action");
}

#[test]
fn overflow_rule_5_an_earlier_siginfo_handler_gets_faults_that_are_not_overflows() {
    let (status, stderr) = run_child("earlier-handler");
    assert!(stderr.contains("child: the earlier handler got the fault\n"), "{stderr}");
    assert!(!stderr.contains("keel:"), "{stderr}");
    assert_eq!(status.code(), Some(40 + libc::SIGSEGV), "{status:?}\n{stderr}");
}
