#![doc = include_str!("../README.md")]
//!
//! # This crate
//!
//! keel's Linux layer: the monotonic clock (rustix), [`SleepDriver`] (no ring: parks by
//! sleeping, for a pure-compute executor), [`RingDriver`] (io_uring) with
//! file i/o ([`fs`]), socket i/o ([`net`]), readiness waits on any descriptor
//! ([`ready`]), signals as events ([`signal`]), deadlines on any operation ([`deadline`]),
//! per-read/write flags ([`rw_flags`]), descriptor transfer between the fixed-file
//! tables of rings ([`transfer`]), typed flags ([`flags`]) and registered buffers, guarded mmap fiber stacks ([`MmapStacks`]) with
//! an overflow reporter ([`overflow`]), the panic catcher for fibers ([`panic`](mod@panic)) and the
//! `ucontext` switcher ([`ucontext`]).
//!
//! # Features
//!
//! - `log` (off by default): keel-linux's one-line notices (the ring set-up flags it fell
//!   back to, the unpark mechanism, the I/O priority class, the clock source, an enter
//!   that failed, operations a dropped driver leaked) go through the [`log`](https://docs.rs/log)
//!   crate, target `keel`. Without it they are not written anywhere: the library never
//!   writes to stderr, except the stack-overflow report and a failed `ucontext` call, each
//!   right before the process aborts. What a program may act on is queryable either way:
//!   [`RingDriver::flags`], [`RingDriver::unpark_kind`], [`RingDriver::realtime_ioprio`],
//!   [`RingDriver::cq_nodrop`], [`tsc::Calibration::source`].
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod buf;
pub mod clock;
pub mod deadline;
pub mod epoll;
mod errno;
mod fd;
pub mod flags;
pub mod fs;
pub mod join;
pub mod net;
mod notice;
pub mod overflow;
pub mod panic;
pub mod pbuf;
pub mod pool;
pub mod ready;
mod regbuf;
pub mod ring;
pub mod rw_flags;
pub mod signal;
mod signal_future;
pub mod sleep;
mod slot_op;
pub mod stack;
pub mod transfer;
pub mod tsc;
pub mod ucontext;
mod waitq;

pub use clock::monotonic_now;
pub use fs::{FiberFs, File};
pub use join::{Futex, join_blocking};
pub use overflow::set_alt_stack;
pub use panic::catch_panics;
pub use ring::{
    Backend, BackendChoice, RingConfig, RingDriver, RingOp, RingUnavailable, UnparkKind, UnparkMode, ring_availability,
};
pub use sleep::SleepDriver;
pub use stack::MmapStacks;
