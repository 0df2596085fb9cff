//! `mem_task` (bytes per idle task): resident memory of N idle tasks, divided by N.
//!
//! Each impl is measured once per bench process, in a child process of its own (the
//! bench binary run again with `KEEL_BENCH_MEM=<impl>`), so that no memory freed by an
//! earlier case is reused and hides the growth: the child reads its resident set size
//! (`/proc/self/statm`), makes [`TASKS`] (fibers: [`FIBERS`]) tasks, runs them until each
//! has started and is waiting, reads the resident set size again and prints the
//! difference divided by the count. Every task body holds a 64-byte array ([`Body`])
//! across its wait, so the body size is stated and the same for every impl.
//!
//! - keel: future tasks in `TaskSlot<128>`s (the slot holds the task's header and its
//!   body: keel never allocates a task), one `Vec` of slots, each waiting in `rt::wait()`.
//! - keel-fiber: fiber tasks in `TaskSlot<160>`s, 64 KiB stacks from `MmapStacks` (one
//!   mapping each, with a guard page; its pages count only once touched), each waiting
//!   in `Fiber::wait`.
//! - tokio: `spawn`ed tasks on a current-thread runtime, each awaiting
//!   `std::future::pending()`.
//! - monoio: `monoio::spawn`ed tasks on its io_uring runtime (one thread, its defaults),
//!   each awaiting `std::future::pending()`, their join handles kept in a `Vec` reserved
//!   before the first reading: monoio keeps no list of its tasks, so a task that waits
//!   with nothing holding its waker or handle is freed (tokio's runtime owns its tasks).
//!
//! The harness gets the figure as a time ([`Unit::Bytes`]: bytes times iterations, as
//! nanoseconds), so its rounds and medians leave it unchanged.

use crate::goals::{Goal, Op};
use crate::harness::{Case, Impl, Timed, Unit};
use keel_core::{Fiber, FiberAttrs, TaskAttrs, TaskSlot, rt};
use std::sync::OnceLock;
use std::time::Duration;

/// The case.
pub const CASE: Case = Case {
    name: "mem_task",
    unit: Unit::Bytes,
    impls: &[
        Impl { name: "keel", run: report::<0> },
        Impl { name: "keel-fiber", run: report::<1> },
        Impl { name: "tokio", run: report::<2> },
        Impl { name: "monoio", run: report::<3> },
    ],
};

/// The goals of this module's case (see `crate::goals`).
pub const GOALS: &[Goal] = &[Goal::vs("mem_task", "keel", "tokio", Op::AtMost, 0.5)];

/// The impls' names, as the child is told them.
const KINDS: [&str; 4] = ["keel", "keel-fiber", "tokio", "monoio"];
/// Future tasks per child.
const TASKS: usize = 100_000;
/// Fiber tasks per child.
const FIBERS: usize = 10_000;
/// Body bytes of a fiber's slot (a fiber's body record takes 136 of them).
const FIBER_SLOT: usize = 160;
/// The environment variable that makes the bench binary a memory child.
pub const CHILD_ENV: &str = "KEEL_BENCH_MEM";

/// What every task body holds across its wait.
type Body = [u8; 64];

/// The bytes per task of impl `K`, measured in a child once per process.
fn report<const K: usize>(iters: u64) -> Timed {
    static R: [OnceLock<Result<f64, String>>; KINDS.len()] = [const { OnceLock::new() }; KINDS.len()];
    let bytes = R[K].get_or_init(|| spawn_child(KINDS[K])).clone()?;
    Ok(Duration::from_nanos((bytes.max(1.0) * iters as f64) as u64))
}

/// Runs the bench binary as a memory child for `kind` and parses its figure.
pub(super) fn spawn_child(kind: &str) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out =
        std::process::Command::new(exe).env(CHILD_ENV, kind).output().map_err(|e| format!("memory child: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("memory child {kind} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    parse_child(&stdout).ok_or_else(|| format!("memory child {kind} printed {stdout:?}"))
}

/// The child's output: `bytes <value>`.
pub(super) fn parse_child(out: &str) -> Option<f64> {
    let v: f64 = out.trim().strip_prefix("bytes ")?.parse().ok()?;
    (v.is_finite() && v > 0.0).then_some(v)
}

/// The resident set size in bytes.
fn rss() -> Result<u64, String> {
    let statm = std::fs::read_to_string("/proc/self/statm").map_err(|e| format!("/proc/self/statm: {e}"))?;
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).ok_or("bad statm")?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * page.max(1) as u64)
}

/// The memory child's work for `kind`: its bytes per task (`main` prints them).
pub fn child(kind: &str) -> Result<f64, String> {
    match kind {
        "keel" => keel(),
        "keel-fiber" => keel_fiber(),
        "tokio" => tokio(),
        "monoio" => monoio(),
        _ => Err(format!("unknown memory kind {kind}")),
    }
}

fn keel() -> Result<f64, String> {
    let ex = core::pin::pin!(super::keel_executor()?);
    let ex = ex.into_ref();
    let before = rss()?;
    let slots: &'static [TaskSlot<128>] = Vec::leak((0..TASKS).map(|_| TaskSlot::new()).collect());
    for s in slots {
        let h = s.create(TaskAttrs { name: "idle", ..TaskAttrs::default() }).map_err(|e| format!("create: {e}"))?;
        let body = async move {
            let held: Body = std::hint::black_box([7; 64]);
            rt::wait().await?;
            Ok::<u64, keel_core::TaskError>(u64::from(held[63]))
        };
        ex.attach(h, body).map_err(|e| format!("attach: {e}"))?;
    }
    ex.run(usize::MAX, Some(Duration::ZERO)).map_err(|e| format!("run: {e}"))?;
    if ex.attached() != TASKS || ex.stats().resumed != TASKS as u64 {
        return Err(format!("{} attached, {} started", ex.attached(), ex.stats().resumed));
    }
    let after = rss()?;
    Ok(after.saturating_sub(before) as f64 / TASKS as f64)
}

fn keel_fiber() -> Result<f64, String> {
    let before = rss()?;
    let stacks = keel_linux::MmapStacks::new().map_err(|e| format!("stacks: {e}"))?;
    let ex = keel_core::Executor::with_stacks(keel_linux::SleepDriver::new(), stacks, keel_core::Config::default())
        .map_err(|e| e.to_string())?;
    let ex = core::pin::pin!(ex);
    let ex = ex.into_ref();
    let slots: &'static [TaskSlot<FIBER_SLOT>] = Vec::leak((0..FIBERS).map(|_| TaskSlot::new()).collect());
    let attrs: FiberAttrs = super::FIBER_ATTRS;
    for s in slots {
        let h = s.create(TaskAttrs { name: "idle", ..TaskAttrs::default() }).map_err(|e| format!("create: {e}"))?;
        let body = |f: &mut Fiber| {
            let held: Body = std::hint::black_box([7; 64]);
            f.wait()?;
            Ok(u64::from(held[63]))
        };
        ex.attach_fiber(h, attrs, body).map_err(|e| format!("attach: {e}"))?;
    }
    ex.run(usize::MAX, Some(Duration::ZERO)).map_err(|e| format!("run: {e}"))?;
    if ex.attached() != FIBERS || ex.stats().resumed != FIBERS as u64 {
        return Err(format!("{} attached, {} started", ex.attached(), ex.stats().resumed));
    }
    let after = rss()?;
    Ok(after.saturating_sub(before) as f64 / FIBERS as f64)
}

fn tokio() -> Result<f64, String> {
    let rt = super::tokio_runtime()?;
    let before = rss()?;
    let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    rt.block_on(async {
        for _ in 0..TASKS {
            let started = started.clone();
            drop(tokio::spawn(async move {
                let held: Body = std::hint::black_box([7; 64]);
                started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                std::future::pending::<()>().await;
                std::hint::black_box(held);
            }));
        }
        // Let every task run to its wait (bounded: each yield lets the scheduler run a
        // batch of tasks).
        for _ in 0..TASKS {
            if started.load(std::sync::atomic::Ordering::Relaxed) == TASKS {
                break;
            }
            tokio::task::yield_now().await;
        }
    });
    let n = started.load(std::sync::atomic::Ordering::Relaxed);
    if n != TASKS {
        return Err(format!("{n} of {TASKS} tokio tasks started"));
    }
    let after = rss()?;
    // The runtime (and its tasks) must still be alive when the second reading is taken.
    drop(rt);
    Ok(after.saturating_sub(before) as f64 / TASKS as f64)
}

fn monoio() -> Result<f64, String> {
    let mut rt =
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().build().map_err(|e| format!("monoio runtime: {e}"))?;
    let mut handles = Vec::with_capacity(TASKS);
    let before = rss()?;
    let started = std::rc::Rc::new(std::cell::Cell::new(0usize));
    rt.block_on(async {
        for _ in 0..TASKS {
            let started = started.clone();
            handles.push(monoio::spawn(async move {
                let held: Body = std::hint::black_box([7; 64]);
                started.set(started.get() + 1);
                std::future::pending::<()>().await;
                std::hint::black_box(held);
            }));
        }
        // monoio runs its spawned tasks in order, and the main future only once they
        // have run to their waits (it polls the main future itself whenever it is
        // woken, so a yielding main future would starve them): a last task's end means
        // every task before it has started.
        monoio::spawn(async {}).await;
    });
    let n = started.get();
    if n != TASKS {
        return Err(format!("{n} of {TASKS} monoio tasks started"));
    }
    let after = rss()?;
    // The runtime (and its tasks) must still be alive when the second reading is taken.
    drop(handles);
    drop(rt);
    Ok(after.saturating_sub(before) as f64 / TASKS as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_child_line() {
        assert_eq!(parse_child("bytes 312.5\n"), Some(312.5));
        assert_eq!(parse_child("bytes 0"), None, "no growth is a failed measurement");
        assert_eq!(parse_child("312.5"), None);
        assert_eq!(parse_child("bytes NaN"), None);
    }

    #[test]
    fn rss_is_read() {
        assert!(rss().expect("statm") > 0);
    }
}
