//! The program keel's gdb test (`core/gdb/test.sh`) debugs: an executor (the io_uring
//! driver, accounting on) on a spawned thread with four tasks, three of them suspended
//! in known functions when the fourth, running, calls `keel_gdb_demo_break` (where the
//! test's breakpoint is):
//!
//! | id | name | kind | CPU / I/O priority | where it is at the breakpoint |
//! |---|---|---|---|---|
//! | 1 | waiter | asm fiber | high / low | suspended (wait) in `demo_wait_here` |
//! | 2 | sleeper | ucontext fiber | low / normal | suspended (timer) in `demo_sleep_here` |
//! | 3 | reader | future | normal / high | suspended (io): a read of an empty pipe in flight |
//! | 4 | probe | asm fiber | low / normal | running, in `keel_gdb_demo_break` |
//!
//! After the breakpoint the probe wakes the waiter and writes a byte into the pipe, the
//! timer fires, every task finishes and the program prints `gdb_demo: done` and exits 0.
//! Without gdb it runs the same way.

use core::pin::pin;
use core::time::Duration;
use keel_core::{
    Cancelled, Executor, Fiber, FiberAttrs, IoStatus, Priorities, Priority, TaskAttrs, TaskHandle, TaskSlot,
};
use keel_linux::{File, MmapStacks, RingConfig, RingDriver};
use std::io::Write;

static SLOTS: [TaskSlot<512>; 4] = [const { TaskSlot::new() }; 4];

fn create(i: usize, cpu: Priority, io: Priority, name: &'static str) -> TaskHandle {
    SLOTS[i].create(TaskAttrs { priority: Priorities { cpu, io }, name }).expect("fresh slot")
}

/// The waiter's suspension point (a frame `keel bt 1` shows).
#[inline(never)]
fn demo_wait_here(f: &mut Fiber) -> Result<(), Cancelled> {
    let r = f.wait();
    core::hint::black_box(&r);
    r
}

/// The sleeper's suspension point (a frame `keel bt 2` shows).
#[inline(never)]
fn demo_sleep_here(f: &mut Fiber) -> Result<(), Cancelled> {
    let r = f.sleep(Duration::from_millis(20));
    core::hint::black_box(&r);
    r
}

/// Where the test stops, inside the running probe fiber.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn keel_gdb_demo_break(step: u32) -> u32 {
    core::hint::black_box(step) + 1
}

fn run_executor() -> u64 {
    let ring = RingDriver::new(RingConfig::default()).expect("io_uring");
    let ex = Executor::with_stacks(ring, MmapStacks::new().expect("mmap stacks"), keel_linux::panic::config())
        .expect("config")
        .with_accounting::<keel_core::TscAccounting>();
    let ex = pin!(ex);
    let ex = ex.into_ref();
    let attrs = FiberAttrs::default();
    let waiter = ex
        .attach_fiber(create(0, Priority::High, Priority::Low, "waiter"), attrs, |f: &mut Fiber| demo_wait_here(f))
        .expect("attach waiter");
    ex.attach_fiber_with::<keel_linux::ucontext::UcontextSwitch, _, _>(
        create(1, Priority::Low, Priority::Normal, "sleeper"),
        attrs,
        |f: &mut Fiber| demo_sleep_here(f),
    )
    .map_err(|e| e.split().0)
    .expect("attach sleeper");
    let (pipe_out, pipe_in) = std::io::pipe().expect("pipe");
    let reader = File::from(std::os::fd::OwnedFd::from(pipe_out));
    ex.attach(create(2, Priority::Normal, Priority::High, "reader"), async move {
        let (got, _buf) = keel_linux::fs::read(&reader, vec![0; 1], 0).await;
        got.map(u64::from).map_err(|e| keel_core::TaskError::Failed(e.raw().into()))
    })
    .map_err(|e| e.split().0)
    .expect("attach reader");
    let probe = ex
        .attach_fiber(create(3, Priority::Low, Priority::Normal, "probe"), attrs, move |_f: &mut Fiber| {
            // A status block for the test to print from the caller's frame (`up`).
            let status = pin!(IoStatus::new());
            core::hint::black_box(&status);
            let n = keel_gdb_demo_break(1);
            waiter.wake();
            (&pipe_in).write_all(b"!").expect("pipe write");
            Ok::<u64, keel_core::TaskError>(u64::from(n))
        })
        .expect("attach probe");
    while ex.attached() > 0 {
        ex.run(64, Some(Duration::from_secs(5))).expect("run");
    }
    match ex.result(probe) {
        Ok(Some(Ok(n))) => n,
        other => panic!("the probe ended with {other:?}"),
    }
}

fn main() {
    let n = std::thread::Builder::new().name("keel-exec".into()).spawn(run_executor).unwrap().join().unwrap();
    assert_eq!(n, 2);
    println!("gdb_demo: done");
}
