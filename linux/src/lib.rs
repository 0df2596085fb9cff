//! keel's Linux layer. At this stage: the monotonic clock through rustix and
//! [`SleepDriver`], a driver with no ring that parks by sleeping (the seed's
//! pure-compute executor, `entries = 0`). The io_uring driver comes with file i/o.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod buf;
pub mod clock;
pub mod fs;
pub mod overflow;
pub mod panic;
mod regbuf;
pub mod ring;
pub mod sleep;
pub mod stack;
pub mod ucontext;

pub use clock::monotonic_now;
pub use fs::{File, FiberFs};
pub use ring::{RingConfig, RingDriver, RingOp};
pub use sleep::SleepDriver;
pub use overflow::set_alt_stack;
pub use panic::catch_panics;
pub use stack::MmapStacks;
