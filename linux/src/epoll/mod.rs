//! keel on epoll, for where io_uring is switched off (container seccomp profiles,
//! `kernel.io_uring_disabled`; see [`ring_availability`](crate::ring_availability)): the
//! engine that performs io_uring's SQEs in user space, under the ring driver's state
//! machine (`ring/kernel.rs`; [`RingConfig::backend`](crate::RingConfig::backend) chooses).

pub(crate) mod engine;

pub use engine::EngineConfig;
pub use engine::closes::note_closed;
