#![doc = include_str!("../README.md")]
//!
//! # This crate
//!
//! keel's Linux layer: the monotonic clock (rustix), [`SleepDriver`] (no ring: parks by
//! sleeping, the seed's pure-compute executor, `entries = 0`), [`RingDriver`] (io_uring) with
//! file i/o ([`fs`]) and registered buffers, guarded mmap fiber stacks ([`MmapStacks`]) with
//! an overflow reporter ([`overflow`]), the panic catcher for fibers ([`panic`](mod@panic)) and the
//! `ucontext` switcher ([`ucontext`]).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod buf;
pub mod clock;
mod fd;
pub mod fs;
mod kept;
pub mod net;
pub mod overflow;
pub mod panic;
pub mod pbuf;
pub mod pool;
mod regbuf;
pub mod ring;
pub mod sleep;
pub mod stack;
pub mod tsc;
pub mod ucontext;
mod waitq;

pub use clock::monotonic_now;
pub use fs::{FiberFs, File};
pub use overflow::set_alt_stack;
pub use panic::catch_panics;
pub use ring::{RingConfig, RingDriver, RingOp, UnparkKind, UnparkMode};
pub use sleep::SleepDriver;
pub use stack::MmapStacks;
