//! The `may` peer of `fiber_yield` and `fiber_spawn`: may's stackful coroutines on one
//! worker thread (`may::config().set_workers(1)`, set before its scheduler first starts;
//! its default stack size and its pool of finished coroutines, which it reuses with
//! their stacks, so a spawn takes a pooled coroutine as keel's takes a pooled stack).
//!
//! Each trial is one coroutine spawned from the bench thread that times its own loop
//! (the clock starts and stops on the worker), so the cross-thread spawn and join that
//! start and end the trial are outside the timing:
//! - yield: the coroutine loops `may::coroutine::yield_now()` N times;
//! - spawn: the coroutine spawns N children one at a time, each returning its input plus
//!   one, and joins each (the parent parks, the child runs, its end unparks the parent).

use crate::harness::Timed;
use std::sync::Once;
use std::time::{Duration, Instant};

/// Configures may once, before its scheduler starts: one worker.
fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        may::config().set_workers(1);
    });
}

/// Runs `f` as a may coroutine and returns what it returns.
fn on_may(f: impl FnOnce() -> Result<Duration, String> + Send + 'static) -> Timed {
    init();
    // SAFETY: may's `spawn` is unsafe because a coroutine must not block its worker
    // thread in a way may cannot see (thread-local state held across a yield, std
    // blocking calls): `f` only yields, spawns and joins through may, and reads the clock.
    let h = unsafe { may::coroutine::spawn(f) };
    h.join().map_err(|_| "the may coroutine panicked".to_string())?
}

/// `fiber_yield`'s may impl.
pub(super) fn fiber_yield(iters: u64) -> Timed {
    on_may(move || {
        let start = Instant::now();
        for _ in 0..iters {
            may::coroutine::yield_now();
        }
        Ok(start.elapsed())
    })
}

/// `fiber_spawn`'s may impl.
pub(super) fn fiber_spawn(iters: u64) -> Timed {
    on_may(move || {
        let start = Instant::now();
        for i in 0..iters {
            let input = std::hint::black_box(i);
            // SAFETY: as in `on_may`: the child only computes.
            let child = unsafe { may::coroutine::spawn(move || input + 1) };
            match child.join() {
                Ok(r) if r == i + 1 => {}
                _ => return Err(format!("child {i} did not return {}", i + 1)),
            }
        }
        Ok(start.elapsed())
    })
}
