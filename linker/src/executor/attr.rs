//! How an executor is made (`keel_executor_attr`): the ring and what is registered on it,
//! time accounting, the kernel's worker pool (executor rule 4).

use super::{Inner, exec_anywhere, keel_executor};
use crate::result::err;
use core::sync::atomic::Ordering;
use keel_core::Executor;
use keel_linux::ring::WorkerPool;
use keel_linux::{Backend, BackendChoice, MmapStacks, RingConfig, RingDriver, SleepDriver};

/// How an executor is made. All zeros: a pure-compute executor (no ring).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct keel_executor_attr {
    /// io_uring submission queue entries (a power of two); 0: no ring, the executor parks
    /// by sleeping and its tasks cannot do i/o (`-EOPNOTSUPP`).
    pub ring_entries: u32,
    /// Registered buffers to set up on the ring (0: none).
    pub registered_buffers: u16,
    /// Bytes per registered buffer (0: 4096).
    pub registered_buffer_size: u32,
    /// Nonzero: account time from the CPU's timestamp counter, per task and per
    /// executor (`keel_executor_get_times`, `keel_task_get_times`): one `rdtsc` per task
    /// resumption. Zero: no clock reads on the hot path, and the times stay 0.
    pub accounting: u8,
    /// Indices in the ring's fixed-file table (0: none), for descriptor transfer
    /// (`keel_fixed_register`, `keel_fixed_send`, `keel_fixed_receive`).
    pub registered_files: u32,
    /// Nonzero: a polled ring (`IORING_SETUP_IOPOLL`, keel-linux's iopoll rules 1-4) for
    /// `O_DIRECT` reads and writes on devices with poll queues. Any other read or write
    /// completes with `-EOPNOTSUPP`, other operations with `-EINVAL`, an operation inside
    /// `keel_within` with `-EOPNOTSUPP`; an idle executor busy-polls. Creating one needs
    /// `IORING_REGISTER_SEND_MSG_RING` (kernel 6.13): `-EOPNOTSUPP` without it.
    pub iopoll: u8,
    /// Caps the kernel's worker pool (io-wq) of the executor's thread at this many threads
    /// for work on regular files and block devices (`IORING_REGISTER_IOWQ_MAX_WORKERS`,
    /// executor rule 4); 0: the limit stays as it is. Work beyond the cap waits in the
    /// pool's queue, it is not refused. Needs a ring (`-EINVAL` without `ring_entries`).
    pub iowq_bounded_workers: u32,
    /// As `iowq_bounded_workers`, for work that may wait indefinitely (sockets, pipes,
    /// other non-regular files).
    pub iowq_unbounded_workers: u32,
    /// Another executor (of any thread) whose ring this one names at set-up
    /// (`IORING_SETUP_ATTACH_WQ`, executor rule 4); the null handle: none. The kernel
    /// shares a pool only between executors of one thread, which share it anyway: from
    /// another thread this checks the ring and nothing more. Needs a ring (`-EINVAL`
    /// without `ring_entries`); `-ESTALE` for a handle of no live executor, `-EINVAL`
    /// for an executor without a ring.
    pub attach_wq: keel_executor,
    /// Buffers in the ring's provided-buffer ring (a power of two up to 32768; 0: none),
    /// which the kernel picks from for multishot reads (`keel_read_multi_*`). Needs a ring
    /// (`-EINVAL` without `ring_entries`, or for a count that is no power of two).
    pub provided_buffers: u16,
    /// Bytes per provided buffer (0: 4096).
    pub provided_buffer_size: u32,
    /// Which backend performs the ring's operations: `KEEL_BACKEND_AUTO` (0: io_uring,
    /// or the epoll engine where io_uring is denied with `EPERM`, `EACCES` or `ENOSYS`),
    /// `KEEL_BACKEND_RING` (io_uring or the error) or `KEEL_BACKEND_EPOLL`; any other
    /// value is `-EINVAL`. `keel_executor_backend` says which was used. Registered
    /// buffers and files, provided buffers, `iopoll` and the worker-pool settings need
    /// io_uring: `-EOPNOTSUPP` on the epoll engine.
    pub backend: u8,
    /// Threads of the epoll engine's pool for file operations (0: 4); unused on io_uring.
    pub file_threads: u32,
}

/// `keel_executor_attr::backend`: io_uring where allowed, else the epoll engine.
pub const KEEL_BACKEND_AUTO: u8 = 0;
/// `keel_executor_attr::backend`: io_uring only.
pub const KEEL_BACKEND_RING: u8 = 1;
/// `keel_executor_attr::backend`: the epoll engine.
pub const KEEL_BACKEND_EPOLL: u8 = 2;

/// The worker pool `attr.attach_wq` names, if any (executor rule 4).
fn attach_wq_of(attr: &keel_executor_attr) -> Result<Option<WorkerPool>, i64> {
    if attr.attach_wq.is_null() {
        return Ok(None);
    }
    let s = exec_anywhere(attr.attach_wq)?;
    // Relaxed: written before the Release of the generation that `exec_anywhere` acquired.
    let fd = s.ring_fd.load(Ordering::Relaxed);
    // Acquire: pairs with init's Release store; a storage re-made since reads as stale.
    if s.live_gen.load(Ordering::Acquire) != attr.attach_wq.generation {
        return Err(err(libc::ESTALE));
    }
    if fd < 0 {
        return Err(err(libc::EINVAL));
    }
    Ok(Some(WorkerPool::from_raw(fd)))
}

/// A set-up error as a negated errno.
fn io_error(e: std::io::Error) -> i64 {
    match (e.raw_os_error(), e.kind()) {
        (Some(n), _) => -(n as i64),
        (None, std::io::ErrorKind::Unsupported) => err(libc::EOPNOTSUPP),
        (None, std::io::ErrorKind::InvalidInput) => err(libc::EINVAL),
        (None, _) => err(libc::EIO),
    }
}

/// The executor `attr` describes and its ring's descriptor (-1: none).
pub(super) fn make_inner(attr: &keel_executor_attr) -> Result<(Inner, i32), i64> {
    let wants_ring = attr.iowq_bounded_workers != 0
        || attr.iowq_unbounded_workers != 0
        || !attr.attach_wq.is_null()
        || attr.provided_buffers != 0;
    if attr.ring_entries == 0 && wants_ring {
        return Err(err(libc::EINVAL));
    }
    let backend = match attr.backend {
        KEEL_BACKEND_AUTO => BackendChoice::Auto,
        KEEL_BACKEND_RING => BackendChoice::Ring,
        KEEL_BACKEND_EPOLL => BackendChoice::Epoll,
        _ => return Err(err(libc::EINVAL)),
    };
    let attach_wq = attach_wq_of(attr)?;
    let stacks = MmapStacks::new().map_err(|e| -(e.0 as i64))?;
    let cfg = keel_linux::panic::config();
    if attr.ring_entries == 0 {
        let ex = Executor::with_stacks(SleepDriver::new(), stacks, cfg).map_err(|_| err(libc::EINVAL))?;
        let inner = if attr.accounting != 0 { Inner::SleepAcct(ex.with_accounting()) } else { Inner::Sleep(ex) };
        return Ok((inner, -1));
    }
    if !attr.ring_entries.is_power_of_two() {
        return Err(err(libc::EINVAL));
    }
    let mut ring = RingDriver::new(RingConfig {
        entries: attr.ring_entries,
        cq_entries: attr.ring_entries.saturating_mul(4),
        registered_buffers: attr.registered_buffers,
        registered_buffer_size: if attr.registered_buffer_size == 0 {
            4096
        } else {
            attr.registered_buffer_size as usize
        },
        registered_files: attr.registered_files,
        iopoll: attr.iopoll != 0,
        iowq_max_workers: [attr.iowq_bounded_workers, attr.iowq_unbounded_workers],
        attach_wq,
        backend,
        file_threads: if attr.file_threads == 0 { 4 } else { attr.file_threads },
        ..RingConfig::default()
    })
    .map_err(io_error)?;
    if attr.provided_buffers != 0 {
        let size = if attr.provided_buffer_size == 0 { 4096 } else { attr.provided_buffer_size };
        ring.enable_provided_buffers(attr.provided_buffers, size).map_err(io_error)?;
    }
    // Only a kernel ring may be named by another executor's `attach_wq`.
    let fd = if ring.backend() == Backend::Ring { ring.worker_pool().raw() } else { -1 };
    let ex = Executor::with_stacks(ring, stacks, cfg).map_err(|_| err(libc::EINVAL))?;
    let inner = if attr.accounting != 0 { Inner::RingAcct(ex.with_accounting()) } else { Inner::Ring(ex) };
    Ok((inner, fd))
}
