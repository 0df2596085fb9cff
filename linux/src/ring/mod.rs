//! The io_uring driver: keel-core's `Driver` on a real ring.
//!
//! - Set-up (`setup.rs`): SINGLE_ISSUER, DEFER_TASKRUN, COOP_TASKRUN, SUBMIT_ALL where the
//!   kernel has them, probed, with a fallback and one notice (`notice.rs`). The ring is created on the
//!   thread that runs the executor, and `RingDriver` is `!Send`.
//! - Batching: submitting only fills SQEs; the run loop enters the kernel once per pass
//!   (`reap`, plus the bounded follow-ups below): `io_uring_enter(to_submit, 0, GETEVENTS)`
//!   whenever anything is in flight, so a busy executor still reaps (with DEFER_TASKRUN
//!   completions are posted only inside such an enter), and once more when it parks:
//!   `GETEVENTS | EXT_ARG` with an absolute timeout at the next timer's deadline (no
//!   timerfd, no timeout SQE). From kernel 6.13 one such enter (min_complete 0) runs at
//!   most 20 deferred completions (`IO_LOCAL_TW_DEFAULT_MAX`) and leaves the rest for the
//!   next enter: without more, a burst of 64 ready receives would come back 20 at a time
//!   and the run loop would resume only part of it. So while the kernel says work is
//!   still pending (`IORING_SQ_TASKRUN`, from `TASKRUN_FLAG`) and the reap has room, `reap`
//!   enters again, at most `REAP_FOLLOW_UPS` more times: the pass sees the whole burst.
//! - Room: `submit_capacity` is the smaller of free SQ entries and the operations that may
//!   still go in flight (`RingConfig::slots`, direct and slot operations together); the
//!   core queues initiators by I/O priority when it is zero.
//! - Completions: a status block's plain operation carries its completion token in its
//!   `user_data` (`direct.rs`: no table on the hot path); a send that links a receive goes
//!   in with `CQE_SKIP_SUCCESS` and one CQE completes both (`pair.rs`); every other operation's
//!   `user_data` names a slot and its generation (`slots.rs`); internal SQEs carry a tag
//!   neither can have, and so do the CQEs another ring posts when it sends a descriptor
//!   here (`transfer` rule 5: they go to the ring's inbox); stale slot CQEs are counted
//!   and dropped.
//! - Hot-path loops and their bounds: a drain copies CQEs out in batches of 32, at most
//!   `reap_batch` per pass; a direct submission searches the orphan table only while it is
//!   non-empty, at most `orphans + 1` times (direct rule 4); a completion scans the queued
//!   cancels only while some are queued (at most the operations in flight).
//! - Unpark (keel-core park rule 3): another thread posts a CQE into the ring with
//!   `IORING_REGISTER_SEND_MSG_RING` (kernel 6.13, probed once per process), or writes an
//!   eventfd the ring keeps a read armed on (the fallback): `unpark.rs`.
//! - CQ overflow: with `IORING_FEAT_NODROP` the kernel keeps overflowed CQEs; `reap` enters
//!   again with GETEVENTS to flush them while the overflow flag is set.
//! - Errors of `io_uring_enter` (EAGAIN, EBUSY, EINTR) leave the SQEs in the ring and the
//!   operations in their slots: they are retried at the next enter and never freed while
//!   the kernel may still run them.
//! - Lifetimes (`shared.rs`): values that outlive a poll (a kept op's future, a multishot,
//!   a provided buffer) hold an `Rc` of the driver's shared state, never a pointer to the
//!   driver, and may be dropped after it. The executor's drop asks the driver to cancel
//!   everything left (`Driver::cancel_all`: `IORING_ASYNC_CANCEL_ANY`); the driver's own
//!   `Drop` cancels and waits again (at most [`DROP_WAIT`]) and leaks, never frees, what
//!   the kernel has not finished.
//!
//! Operations that complete more than once, and results nobody takes
//! (cited as "completion rule N"):
//! 1. **Multishot** (`RingOp::multishot`: accept, recv): a CQE with `IORING_CQE_F_MORE`
//!    does not free the slot. Each CQE's (result, flags) is queued in the slot's fixed FIFO
//!    (`slots::MULTI_Q` entries) in CQE order and the task's wake token is told once per
//!    CQE; the task takes results in order (`take_multi`). The CQE without F_MORE is the
//!    last result: the op stops counting as in flight then, and the slot is freed when the
//!    task takes that last result.
//! 2. **Bounded queues**: when a slot's FIFO fills, the driver cancels the op (throttle);
//!    CQEs the kernel had already posted go to one driver-wide spill list and are taken
//!    after the FIFO, so order holds. The op's final `ECANCELED` from a throttle carries
//!    `KEEL_REARM` in its flags and the net layer re-arms instead of reporting it. Results
//!    without a provided buffer (accepted connections, errors) may fill 2 x CQ entries of
//!    the spill list; beyond that such a result is given back (rule 3: the connection is
//!    closed, its peer sees it) and counted in `RingStats::multishot_lost`. Results that
//!    hold a provided buffer (received data) are never dropped: they are at most the buffer
//!    ring's count, and the spill list keeps that much more room for them (allocated when
//!    the ring is registered), so no received byte is ever lost.
//! 3. **Results nobody takes** (an abandoned op's, queued results of a dropped multishot, a
//!    stale CQE): a descriptor is closed (`close(2)`; a fixed-file index through an
//!    internal `CLOSE` SQE), a provided buffer goes back to the buffer ring.
//! 4. **SEND_ZC**: a non-multishot op whose CQE has F_MORE (and no F_NOTIF) keeps its slot,
//!    and its owned buffer, and holds the result; the `IORING_CQE_F_NOTIF` CQE completes
//!    the op with that held result. So the task hears of a zero-copy send only once the
//!    kernel no longer reads its buffer.
//! 5. **Provided buffers**: a CQE with `IORING_CQE_F_BUFFER` carries the buffer id in its
//!    upper 16 flag bits; `take_full` and `take_multi` hand the flags to the net layer,
//!    which turns them into a `net::ProvidedBuf` (pbuf rule 2).
//!
//! Operations submitted with a wake token (`keel_core::try_submit`: kept operations,
//! multishots; cited as "wake-token rule N"):
//! 1. The slot, not the task, holds what the operation names (buffer, descriptor, the
//!    registered buffer of an abandoned op) until its last CQE; the value that submitted it
//!    (`slot_op::SlotOp`, `net::Multishot`) takes the result, or abandons the op (shared
//!    rule 2). So the operation never holds its task's run: a body that returns, or is
//!    dropped, while such a value lives on elsewhere (moved into `main`, another task)
//!    completes at once (io_status rule 5 in keel-core), and whatever the kernel writes
//!    later lands in memory the slot still owns.
//! 2. The token names a task run (address and generation): a CQE for a run that has ended
//!    wakes nothing, also when the slot's task runs again (keel-core drops a wake whose
//!    generation is not the task's current one), so no later run gets a stale wake.
//! 3. Whoever polls the value and finds its operation not done points the token at its own
//!    task run (`RingDriver::rewake`, one store), so a value moved to another task of the
//!    same executor, or kept for a later run, wakes the task that waits on it now. On
//!    another executor it gets `EXDEV`; outside any task `EPERM` (the op stays with its
//!    driver and is abandoned when the value goes).
//!
//! Cancel requests (`Driver::cancel`; cited as "cancel rule N"):
//! 1. **Never lost.** A cancel for an operation that may still complete is queued until it
//!    is in the SQ: at once if the SQ has room and no task's link chain is open, else at
//!    the next enter (which moves queued cancels into the SQ before it submits). The queue
//!    holds one entry per operation that may be in flight, allocated at creation with
//!    `RingConfig::slots` entries.
//! 2. **One per operation.** A cancel for an operation whose cancel is already queued adds
//!    nothing (the caller may ask many times: a cancelled fiber, its executor's cancel, a
//!    status block dropped, executor drop).
//! 3. **Only for live operations.** A cancel for a slot operation that has ended (its final
//!    CQE reaped) is not queued, and the queued cancel of an operation is dropped when its
//!    final CQE is reaped (a direct operation's too, direct rule 5). With rule 2 the queue
//!    then never holds more entries than operations in flight, which are at most `slots`:
//!    it cannot overflow.
//! 4. Should it be full anyway (cancels naming `user_data`s the driver cannot check: a
//!    direct operation's), the driver moves cancels into the SQ, submits the SQ to make
//!    room, drops entries for ended slot operations, and only then grows the queue (cold,
//!    allocates): a live cancel is never dropped, so executor drop never waits on an
//!    operation nobody cancelled.

mod abandon;
pub mod availability;
mod cancel;
mod choose;
mod complete;
mod config;
mod direct;
mod driver;
mod enter;
pub mod iowq;
pub mod kernel;
pub mod op;
mod pair;
pub mod setup;
pub(crate) mod shared;
pub(crate) mod slots;
/// The slot table's fuzz harness: the proptest twin in `make test`, and under `--cfg
/// keel_fuzz` the cargo-fuzz target `ring_slots` (fuzz/); not part of the API.
#[cfg(any(test, keel_fuzz))]
#[doc(hidden)]
pub mod slots_fuzz;
mod submit;
mod teardown;
mod unpark;

pub use availability::{RingUnavailable, ring_availability};
pub(crate) use complete::{KEEL_REARM, MultiNext, cqueue_more, to_result};
pub use config::{BackendChoice, RingConfig, RingStats};
pub use driver::RingDriver;
pub(crate) use driver::lent_mut;
pub use iowq::WorkerPool;
pub use kernel::Backend;
pub use op::RingOp;
pub use setup::RingFlags;
pub use teardown::DROP_WAIT;
pub use unpark::{UnparkKind, UnparkMode};
