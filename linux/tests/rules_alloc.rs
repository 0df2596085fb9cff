//! Rules that promise "allocates nothing", checked with a counting allocator: every
//! allocation, reallocation and deallocation made on the test's thread while a window is
//! open is counted. Set-up (executor, ring, buffers, task attach) happens before the
//! window; the window covers only the paths the rules name.

mod net_util;

use core::time::Duration;
use keel_core::{Fiber, TaskError};
use keel_linux::RingConfig;
use keel_linux::fs::{self, FiberFs};
use net_util::{executor, fattrs, task};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::rc::Rc;

struct Counting;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator may run while the thread's locals are torn down.
    let _ = MEASURING.try_with(|m| {
        if m.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: forwards every call to the system allocator unchanged; the counting touches
// only const-initialised thread locals (no allocation of its own).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note();
        // SAFETY: `p` came from `System.alloc` with `l` (every allocation goes there).
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        // SAFETY: as in `dealloc`.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Runs `f` with the window open; the number of allocator calls on this thread meanwhile.
fn counted(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(0));
    MEASURING.with(|m| m.set(true));
    f();
    MEASURING.with(|m| m.set(false));
    COUNT.with(|c| c.get())
}

/// Two fibers hand the only registered buffer back and forth 500 times: each claim
/// waits in the queue, each release grants the buffer to the waiter, which collects it.
/// Queue, grants and releases stay within what was allocated at creation.
#[test]
fn regbuf_rule_6_claims_waits_grants_and_releases_allocate_nothing() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    const ROUNDS: u32 = 500;
    let ex = executor(RingConfig { registered_buffers: 1, ..RingConfig::default() });
    let ex = ex.as_ref();
    let handoffs = Rc::new(Cell::new(0u32));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let h = handoffs.clone();
        tasks.push(
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
                for _ in 0..ROUNDS {
                    let b = f.claim_buffer().map_err(|_| TaskError::Failed(1))?;
                    h.set(h.get() + 1);
                    f.yield_now()?; // the other fiber queues for it meanwhile
                    drop(b); // granted to the waiter
                }
                Ok(0)
            })
            .unwrap(),
        );
    }
    let n = counted(|| {
        let t0 = std::time::Instant::now();
        while ex.attached() > 0 && t0.elapsed() < Duration::from_secs(10) {
            let _ = ex.run(1024, Some(Duration::from_millis(5)));
        }
    });
    assert_eq!(handoffs.get(), 2 * ROUNDS);
    for t in tasks {
        assert_eq!(ex.result(t), Ok(Some(Ok(0))));
    }
    assert_eq!(n, 0, "allocator calls during {} claims and releases", 2 * ROUNDS);
}

/// A future's owned operation (`fs::nop`) takes a slot and gives it back at its
/// completion, 1000 times: the slots and their free list were allocated at creation.
#[test]
fn slot_rule_5_taking_and_freeing_slots_allocates_nothing() {
    const ROUNDS: u32 = 1000;
    let ex = executor(RingConfig { slots: 8, ..RingConfig::default() });
    let ex = ex.as_ref();
    let done = Rc::new(Cell::new(0u32));
    let d = done.clone();
    // The future is boxed at attach (before the window); its awaits allocate nothing.
    let t = ex
        .attach(task(), async move {
            for _ in 0..ROUNDS {
                fs::nop().await.map_err(|_| TaskError::Failed(1))?;
                d.set(d.get() + 1);
            }
            Ok(0)
        })
        .unwrap();
    let n = counted(|| {
        let t0 = std::time::Instant::now();
        while ex.attached() > 0 && t0.elapsed() < Duration::from_secs(10) {
            let _ = ex.run(1024, Some(Duration::from_millis(5)));
        }
    });
    assert_eq!(done.get(), ROUNDS);
    assert_eq!(ex.result(t), Ok(Some(Ok(0))));
    assert_eq!(n, 0, "allocator calls during {ROUNDS} slot operations");
}
