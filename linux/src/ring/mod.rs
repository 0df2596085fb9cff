//! The io_uring driver: keel-core's `Driver` on a real ring.
//!
//! - Set-up (`setup.rs`): SINGLE_ISSUER, DEFER_TASKRUN, COOP_TASKRUN, SUBMIT_ALL where
//!   the kernel has them, probed, with a fallback and one log line. The ring is created
//!   on the thread that runs the executor, and `RingDriver` is `!Send`.
//! - Batching: submitting only fills SQEs; the run loop enters the kernel at most once
//!   per pass (`reap`): `io_uring_enter(to_submit, 0, GETEVENTS)` whenever anything is
//!   in flight, so a busy executor still reaps (with DEFER_TASKRUN completions are posted
//!   only inside such an enter), and once more when it parks: `GETEVENTS | EXT_ARG` with
//!   an absolute timeout at the next timer's deadline (no timerfd, no timeout SQE).
//! - Room: `submit_capacity` is the smaller of free SQ entries and free operation slots;
//!   the core queues initiators by I/O priority when it is zero.
//! - Completions: `user_data` names a slot and its generation (`slots.rs`); internal SQEs
//!   carry a tag no slot can have; stale CQEs are counted and dropped.
//! - CQ overflow: with `IORING_FEAT_NODROP` the kernel keeps overflowed CQEs; `reap`
//!   enters again with GETEVENTS to flush them while the overflow flag is set.
//! - Errors of `io_uring_enter` (EAGAIN, EBUSY, EINTR) leave the SQEs in the ring and the
//!   operations in their slots: they are retried at the next enter and never freed while
//!   the kernel may still run them.

mod driver;
pub mod op;
pub mod setup;
pub(crate) mod slots;

pub use driver::{RingConfig, RingDriver, RingStats};
pub use op::RingOp;
pub use setup::RingFlags;
