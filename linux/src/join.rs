//! Blocking a thread on a task's result: keel-core's [`ThreadWait`] on `futex(2)`.
//!
//! `FUTEX_WAIT_BITSET` with an absolute `CLOCK_MONOTONIC` deadline on the word keel-core
//! names (a task record's `done` word, join rule 5 in keel-core's `task/join.rs`), and
//! `FUTEX_WAKE` of every waiter, which the executor ending the run calls on its thread
//! (one syscall, only for a run a blocked thread announced itself to).
//!
//! ```
//! use core::pin::pin;
//! use keel_core::{Config, Executor, TaskAttrs, TaskSlot};
//! use keel_linux::SleepDriver;
//! static T: TaskSlot = TaskSlot::new();
//! let ex = pin!(Executor::new(SleepDriver::new(), Config::default()).unwrap());
//! let ex = ex.into_ref();
//! let run = ex.attach(T.create(TaskAttrs::default()).unwrap(), async { 6u64 }).unwrap();
//! std::thread::scope(|s| {
//!     let joiner = s.spawn(move || keel_linux::join_blocking(run, Some(std::time::Duration::from_secs(10))));
//!     while ex.attached() > 0 {
//!         ex.run(8, None).unwrap();
//!     }
//!     assert_eq!(joiner.join().unwrap(), Ok(Ok(6)));
//! });
//! ```

use crate::clock::monotonic_now;
use core::time::Duration;
use keel_core::join::ThreadWait;
use keel_core::{Instant, JoinError, TaskHandle, TaskResult};
use rustix::thread::futex;
use rustix::time::Timespec;
use std::num::NonZeroU32;
use std::sync::atomic::AtomicU32;

/// `futex(2)` as keel-core's [`ThreadWait`].
#[derive(Copy, Clone, Debug, Default)]
pub struct Futex;

impl ThreadWait for Futex {
    type Deadline = Instant;

    fn deadline_after(timeout: Duration) -> Instant {
        monotonic_now().saturating_add(timeout)
    }

    fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> bool {
        let ts = deadline.map(|t| {
            let ns = t.as_nanos();
            Timespec { tv_sec: (ns / 1_000_000_000) as i64, tv_nsec: (ns % 1_000_000_000) as i64 }
        });
        let all = NonZeroU32::new(u32::MAX).expect("non-zero");
        // Returns at once if the word no longer holds `expected` (EAGAIN); EINTR and
        // ETIMEDOUT end this wait too: the caller looks again, and the deadline decides.
        let _ = futex::wait_bitset(word, futex::Flags::PRIVATE, expected, ts.as_ref(), all);
        deadline.is_none_or(|at| monotonic_now() < at)
    }

    fn wake_all(word: &AtomicU32) {
        let _ = futex::wake(word, futex::Flags::PRIVATE, u32::MAX);
    }
}

/// Blocks this thread until run `task` completes, at most `timeout`
/// (`keel_core::join::join_blocking` with [`Futex`]). Not from an executor's own thread:
/// it would stop that executor; give it a timeout where that can happen.
pub fn join_blocking(task: TaskHandle, timeout: Option<Duration>) -> Result<TaskResult, JoinError> {
    keel_core::join::join_blocking::<Futex>(task, timeout)
}
