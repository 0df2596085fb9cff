//! The executor: a driver, the scheduler state, and the run loop.
//!
//! An executor is pinned before use (tasks and wakers hold its address), then used
//! through `Pin<&Executor<D>>`, which is `Copy`:
//!
//! ```
//! use core::pin::pin;
//! use keel_core::{Executor, Config, TaskSlot, TaskAttrs, sim::SimDriver};
//! static TASK: TaskSlot = TaskSlot::new();
//! let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
//! let ex = ex.into_ref();
//! let run = ex.attach(TASK.create(TaskAttrs::default()).unwrap(), async { 7u64 }).unwrap();
//! assert_eq!(ex.run(10, None), Ok(1));
//! assert_eq!(ex.result(run), Ok(Some(Ok(7))));
//! ```
//!
//! Same-thread only: every method here. The executor is `!Send` and `!Sync`; what
//! other threads may do is wake tasks through `TaskHandle::wake` and wakers.
//!
//! A body's panic, in its poll or in its `Drop`, propagates out of the call that ran it
//! (`run`, `cancel`, `shutdown`, the executor's drop) after the task has completed as
//! `TaskError::Panicked` with its body dropped exactly once (body rule 1); the executor
//! stays usable. A second panic while one unwinds aborts, as anywhere in Rust.
//!
//! The scheduler's parts, one responsibility a file:
//!
//! | file | what |
//! |---|---|
//! | `sched.rs` | `Sched`: the state, attach, resume, wake, timers, completion routing (sched rules) |
//! | `executor.rs` | `Executor`: construction and the same-thread API |
//! | `config.rs`, `stats.rs` | configuration; counters and times |
//! | `run.rs` | the run loop |
//! | `run_queue.rs` | the three-level ready queue |
//! | `lend.rs` | reaching the driver, and lending it to a closure (driver rules) |
//! | `submit.rs` | admission and submission (room rules) |
//! | `intake.rs` | wakes, attaches and dispatched tasks other threads hand in |
//! | `attach.rs` | attaching fibers (a stack from the pool) |
//! | `remote.rs` | `ExecutorHandle`: attaching from other threads |
//! | `spawn.rs` | a running task attaching another on its own executor (spawn rules) |
//! | `cancel.rs` | cancel, destroy, release |
//! | `joiners.rs` | a completed run's result to its joins (join rules) |
//! | `teardown.rs` | `shutdown` and the executor's drop (teardown rules) |
//! | `work_source.rs` | the interface a dispatcher is served through |
//! | `debug.rs` | the debugger descriptor and the registry of live executors |

mod attach;
mod cancel;
mod config;
pub mod debug;
mod events;
mod executor;
mod intake;
mod joiners;
mod lend;
pub mod remote;
mod run;
pub(crate) mod run_queue;
/// The run queue's fuzz harness: the proptest twin in `make test`, and under `--cfg
/// keel_fuzz` the cargo-fuzz target `run_queue` (fuzz/); not part of the API.
#[cfg(any(test, keel_fuzz))]
#[doc(hidden)]
pub mod run_queue_fuzz;
pub(crate) mod sched;
mod spawn;
mod stats;
mod submit;
mod teardown;
pub(crate) mod work_source;

pub use crate::mailbox::{HandleSlot, Unparker};
pub use cancel::CancelOutcome;
pub use config::Config;
pub use executor::Executor;
pub use lend::DEFERRED_DRIVER_OPS;
pub use remote::ExecutorHandle;
pub use spawn::SpawnError;
pub use stats::ExecStats;
pub use teardown::{LEAK_IDS, LeakedFibers, Shutdown, TEARDOWN_ROUNDS, leaked_fibers};

/// How many run-loop passes in a row may find a foreign push half done (inbox rule 3)
/// before the executor parks anyway; the producer's unpark check then ends the park (park
/// rule 2). Each such pass costs a spin hint. Zero under loom, so the models park on
/// every push in progress they reach.
#[cfg(not(keel_loom))]
pub const INBOX_BUSY_SPINS: u32 = 64;
/// See the non-loom definition: zero under loom.
#[cfg(keel_loom)]
pub const INBOX_BUSY_SPINS: u32 = 0;
