#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]
#![debugger_visualizer(gdb_script_file = "../gdb/keel.py")]

//! keel's `#![no_std]`, allocation-free core: executors with three CPU and three I/O
//! priority levels, task slots reused across runs, wake rules that hold across threads,
//! timers, NT-style i/o status blocks, stackless and stackful tasks, and a deterministic
//! simulated driver. The project README (the crate doc of keel-linux) has the tour.
//!
//! ```
//! use core::pin::pin;
//! use keel_core::{Config, Executor, TaskAttrs, TaskSlot, rt, sim::SimDriver};
//! static T: TaskSlot = TaskSlot::new();
//! let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
//! let ex = ex.into_ref();
//! let run = ex.attach(T.create(TaskAttrs::default()).unwrap(), async {
//!     rt::sleep(core::time::Duration::from_secs(3)).await?; // virtual time
//!     Ok(7)
//! }).unwrap();
//! while ex.attached() > 0 { ex.run(8, None).unwrap(); }
//! assert_eq!(ex.result(run), Ok(Some(Ok(7))));
//! assert_eq!(ex.now().as_nanos(), 3_000_000_000);
//! ```
//!
//! # Crate map
//!
//! - [`task`]: task slots, handles, the lifecycle ([`task::state`]) and wake rules.
//! - [`Executor`]: attach, run, cancel, destroy; the run loop.
//! - [`rt`]: what a future task awaits: `yield_now`, `sleep`, `sleep_until`, `wait`.
//! - [`wait`]: semaphore, mutex, event and bounded channel, for fibers and futures.
//! - [`join`]: waiting for another task's result (futures, fibers, threads).
//! - [`io_status`]: NT-style status blocks.
//! - [`Driver`] and [`sim::SimDriver`].
//!
//! # Layers
//!
//! Each module imports only from its own layer and the layers below it; `core/tests/layers.rs`
//! (run by `make test`) reads every `crate::`, `super::` and `self::` path in non-test code
//! and fails on one that points up. Bottom to top:
//!
//! ```text
//! 7 api       rt cx io_status dispatch loom_api wait join spawn
//! 6 exec      exec fiber
//! 5 task      task io_status::block
//! 4 driver    driver driver_debug sim
//! 3 switching switch arch
//! 2 mailbox   mailbox
//! 1 base      sync list clock error priority acct stack timer
//! ```
//!
//! - **base**: intrusive lists, the loom-switchable atomics, time, errors, priorities,
//!   accounting, stack providers and their pool, the timer heap. Nothing here knows a task.
//! - **mailbox**: everything another thread touches of an executor (inbox, park word,
//!   unparker, handle slot) and the cross-thread protocol, stated once: wake, inbox, park
//!   and remote rules.
//! - **switching**: the `FiberSwitch` trait and keel's own assembly switch.
//! - **driver**: the `Driver` trait, i/o tokens and results, and the simulated driver.
//! - **task**: task slots (header, trailer, body), the lifecycle, the waker, claiming an
//!   unowned task, and the i/o status block a header links (`io_status::block`). A task
//!   names its owner by the owner's mailbox, never by the scheduler.
//! - **exec**: the scheduler (`Sched`: run queue, attach, resume, timers, completion
//!   routing, admission, cancel, teardown), the `Executor` around it, and fibers, which
//!   the scheduler attaches and resumes and which give their stacks back to its pool (so
//!   the two are one layer). The scheduler reaches the driver through a vtable and a
//!   dispatcher through the `WorkSource` interface, never the types above it.
//! - **api**: what task code calls (`rt`, `io_status`), and the dispatcher, which feeds
//!   executors through `WorkSource`, and the wait primitives (`wait`).
//!
//! # Hot path
//!
//! On the executor's own thread, attach (of a task this executor owns), run, wake,
//! yield, timer firing and completion routing take no lock, no atomic
//! read-modify-write and no allocation. Their loops and bounds:
//!
//! | loop | bound |
//! |---|---|
//! | `run` items | `max_items` |
//! | tasks resumed per pass (between two reaps) | the ready tasks at the pass's start, at most `Config::resume_batch` |
//! | inbox drain per pass | `Config::inbox_batch` |
//! | passes that find a foreign push half done (inbox rule 3) | `exec::INBOX_BUSY_SPINS` in a row, then the executor parks and the producer unparks it |
//! | completions reaped per pass | `Config::reap_batch` |
//! | timers fired per pass | `Config::timer_batch` |
//! | run-queue pop | the three priority levels |
//! | timer-heap merge | the number of armed timers (pairing heap, O(log n) amortized) |
//! | cancel of a task's i/o | the task's operations in flight |
//! | granting submission room | the room the driver reports, and the waiting tasks |
//! | spare-stack search | `Config::max_spare_stacks` |
//! | dispatcher take (pop) | three priority levels; each CAS retry means another thread's CAS succeeded (lock-free) |
//! | unparking a dispatcher worker | `dispatch::MAX_WORKERS` |
//! | accounting | one `rdtsc` per resumption with `TscAccounting`, none without |
//! | wait primitives (same-thread flavour): a try, a take, a give | O(1): three priority levels; `add_permits(n)` wakes at most `n`, `Event::set` and `close` each waiter queued once |
//!
//! What is not on the hot path, and says so: claiming an unowned task (one CAS),
//! releasing or destroying a task, a wake from another thread (a CAS loop, lock-free,
//! then one swap, then one fence and at most one CAS and one syscall to unpark), a
//! foreign attach (one CAS to claim, one swap to push, the same unpark), dropping an
//! executor (waits for wakes and attaches in flight to it).
//!
//! # Thread safety
//!
//! Same-thread only: `Executor` (`!Send`) and everything a task calls. From any thread:
//! `TaskHandle::wake`/`waker`, `ExecutorHandle::attach`, `Dispatcher::submit`/`quit`.

// loom brings std; the models' per-thread switches use its thread locals.
#[cfg(keel_loom)]
extern crate std;

pub mod acct;
pub mod arch;
pub mod clock;
pub mod cx;
pub mod dispatch;
pub mod driver;
pub mod driver_debug;
pub mod error;
pub mod exec;
pub mod fiber;
pub mod io_status;
pub mod join;
pub mod list;
#[cfg(keel_loom)]
#[doc(hidden)]
pub mod loom_api;
pub(crate) mod mailbox;
pub mod priority;
pub mod rt;
pub mod sim;
pub mod spawn;
pub mod stack;
pub mod switch;
pub(crate) mod sync;
pub mod task;
pub mod timer;
pub mod wait;

pub use acct::{Accounting, ExecTimesSnapshot, NoAccounting, TaskTimesSnapshot, TickScale, TscAccounting};
pub use arch::AsmSwitch;
pub use clock::Instant;
pub use cx::TaskCx;
pub use dispatch::Dispatcher;
pub use driver::{Driver, DriverMut, IoResult, NoIo, OpId, Park};
pub use driver_debug::DriverDebug;
pub use error::{
    AttachError, CancelError, Cancelled, ConfigError, DestroyError, DriverBusy, DriverError, Errno, InitiateError,
    RunError, StaleHandle, TaskError, TaskResult,
};
pub use exec::{
    CancelOutcome, Config, ExecStats, Executor, ExecutorHandle, HandleSlot, LEAK_IDS, LeakedFibers, Shutdown,
    TEARDOWN_ROUNDS, Unparker, leaked_fibers,
};
pub use fiber::{FP_CONTROL_CHECKED, Fiber, FiberAttrs, PairRefused, PanicCatcher};
pub use io_status::{
    Completion, DriverPtr, IoStatus, NextIo, NotSubmitted, SubmitRefused, initiate, suspend_until_completed_io,
    try_submit, try_submit_from, try_submit_now,
};
pub use join::JoinError;
pub use priority::{Priorities, Priority};
pub use spawn::SpawnError;
pub use stack::{NoStacks, RegionStacks, Stack, StackProvider, StackStats};
pub use switch::FiberSwitch;
pub use task::state::{SuspendReason, TaskState};
pub use task::{CreateError, SwitcherKind, TaskAttrs, TaskHandle, TaskPool, TaskSlot};
