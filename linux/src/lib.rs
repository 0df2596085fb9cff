//! keel's Linux layer. At this stage: the monotonic clock through rustix and
//! [`SleepDriver`], a driver with no ring that parks by sleeping (the seed's
//! pure-compute executor, `entries = 0`). The io_uring driver comes with file i/o.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod sleep;

pub use clock::monotonic_now;
pub use sleep::SleepDriver;
