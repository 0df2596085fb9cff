//! The kernel's worker pool (io-wq): how many threads it may run for an executor, and
//! naming another executor's ring at set-up (`IORING_SETUP_ATTACH_WQ`).
//!
//! io_uring runs what cannot complete without blocking (buffered file i/o that misses the
//! page cache, `openat`, `statx`, `splice`, `IOSQE_ASYNC` operations, ...) on kernel
//! worker threads, `iou-wrk-<tid>`. Measured on Linux 6.18 (`linux/tests/ring_iowq.rs`
//! checks each point):
//!
//! 1. **One pool per submitting thread.** Since 5.12 the pool belongs to the thread that
//!    submits (its `io_uring_task`), not to a ring: every ring that thread submits to,
//!    so every keel executor on it, shares one pool. Workers are named after that thread.
//! 2. **The cap** (`IORING_REGISTER_IOWQ_MAX_WORKERS`, [`RingConfig::iowq_max_workers`],
//!    [`RingDriver::set_iowq_max_workers`]) bounds that pool: `[bounded, unbounded]`
//!    workers (bounded: work on regular files and block devices; unbounded: work that may
//!    wait indefinitely, such as sockets, pipes and other non-regular files). 0 leaves a
//!    limit as it is; the previous limits come back. The ring also remembers the cap and
//!    applies it to any other thread that later submits to it. Work beyond the cap waits
//!    in the pool's queue: it is not refused.
//! 3. **`ATTACH_WQ` shares no pool between threads** here: the kernel checks that the
//!    named descriptor is a ring (`EINVAL` if not, `ENXIO` if it is closed) and, for a ring
//!    without `SQPOLL` (keel never sets it), does nothing more. An executor on another
//!    thread keeps its own pool (measured: its workers are named after its thread and the
//!    first ring's cap does not bound them). To share one pool, run the executors on one
//!    thread; to bound the process, cap each executor.
//!
//! Cold: set-up and a register call; nothing here is on the hot path.

use super::config::RingConfig;
use super::driver::RingDriver;
use keel_core::Errno;
use std::os::fd::RawFd;

/// Another executor's ring, for [`RingConfig::attach_wq`]: its descriptor's number, taken
/// by [`RingDriver::worker_pool`]. A number, not a hold: if that ring is gone by the time
/// it is named, set-up fails (`ENXIO`), or names whatever took the number (`EINVAL` if not
/// a ring). Nothing unsafe follows either way (iowq rule 3: the kernel only checks it).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct WorkerPool(RawFd);

impl WorkerPool {
    /// The ring descriptor's number.
    pub fn raw(self) -> RawFd {
        self.0
    }

    /// Names descriptor number `fd` as another executor's ring (one a foreign-language
    /// handle carries as a number): the kernel checks it at set-up (iowq rule 3).
    pub fn from_raw(fd: RawFd) -> Self {
        WorkerPool(fd)
    }

    /// Names descriptor number `fd` as if it were a ring (for tests of the kernel's check).
    #[doc(hidden)]
    pub fn from_raw_for_tests(fd: RawFd) -> Self {
        WorkerPool(fd)
    }
}

impl RingDriver {
    /// This executor's ring, to name in another's [`RingConfig::attach_wq`] (iowq rule 3).
    pub fn worker_pool(&self) -> WorkerPool {
        WorkerPool(self.ring.raw_fd())
    }

    /// Caps the worker pool of this executor's thread at `max = [bounded, unbounded]`
    /// threads (iowq rule 2; 0 leaves one as it is) and returns the limits before. `EINVAL`
    /// from the kernel for a limit it refuses.
    pub fn set_iowq_max_workers(&self, max: [u32; 2]) -> Result<[u32; 2], Errno> {
        let mut m = max;
        // Kernel rule 2: the epoll engine has no kernel worker pool.
        let ring = self.ring.uring().ok_or(crate::errno::EOPNOTSUPP)?;
        ring.submitter().register_iowq_max_workers(&mut m).map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
        Ok(m)
    }
}

/// Applies `cfg`'s cap at creation (iowq rule 2).
pub(super) fn apply(ring: &io_uring::IoUring, cfg: &RingConfig) -> std::io::Result<()> {
    if cfg.iowq_max_workers != [0, 0] {
        let mut m = cfg.iowq_max_workers;
        ring.submitter().register_iowq_max_workers(&mut m)?;
    }
    Ok(())
}
