//! The driver's configuration ([`RingConfig`]), its counters ([`RingStats`]) and
//! `RingDriver::new`. The driver allocates here, at creation (slots, orphan table, cancel
//! queue, spill list, submission record), and when provided buffers are registered, so
//! submitting and reaping allocate nothing (cancel rule 4 in the `ring` module doc is the
//! one cold exception). Creation probes what the kernel offers (set-up flags, MSG_RING, the
//! realtime I/O class) and keeps the answers for the accessors (`RingDriver::flags`,
//! `unpark_kind`, `realtime_ioprio`).
//!
//! A polled ring (`RingConfig::iopoll`; cited as "iopoll rule N"), from what the kernel
//! does on one (measured on 6.18, `linux/tests/iopoll_kernel.rs`):
//! 1. **Reads and writes of `O_DIRECT` files only.** The kernel completes any other read
//!    or write (a buffered file, a pipe, a socket; an `O_DIRECT` read on a device without
//!    poll queues, where a write may still complete: `linux/tests/iopoll_direct.rs`) with
//!    `EOPNOTSUPP`, and refuses every other operation but `NOP` (open,
//!    close, fsync, poll, socket calls, cancels, timeouts) with `EINVAL`: that is the
//!    typed error a task gets. Open the files on another executor (or with `open(2)`).
//! 2. **No deadline, no chain.** An operation with a deadline, or one that links a
//!    successor (`RingOp::linked`), is refused with `EOPNOTSUPP` before anything is
//!    submitted (the kernel takes no `LINK_TIMEOUT` there, and a chain's successor could
//!    then be refused after its head went in).
//! 3. **No cancel takes.** The kernel refuses `ASYNC_CANCEL`; a cancelled task's polled
//!    operation completes by itself (polling ends it), and the task waits for it.
//! 4. **Park spins.** `io_uring_enter(GETEVENTS)` on a polled ring polls and returns at
//!    once, with or without a timeout, so a parked executor busy-polls (timers still fire
//!    on time). Other threads unpark it through `IORING_REGISTER_SEND_MSG_RING` only (an
//!    eventfd read is a read it refuses): `RingDriver::new` fails with `InvalidInput` for
//!    `UnparkMode::Eventfd` and with `Unsupported` on a kernel without MSG_RING (6.13).

use super::direct::Direct;
use super::driver::RingDriver;
use super::kernel::Kernel;
use super::setup;
use super::setup::RingFlags;
use super::shared::Shared;
use super::slots::Slots;
use super::unpark::{self, UnparkKind, UnparkMode};
use crate::notice::notice;
use std::io;
use std::marker::PhantomData;
use std::rc::Rc;

/// How the ring is made.
#[derive(Copy, Clone, Debug)]
pub struct RingConfig {
    /// SQ entries, 1 to 32768, rounded up to a power of two (by the kernel, and by the
    /// epoll engine alike).
    pub entries: u32,
    /// CQ entries (at least `entries`; at most 65536), rounded up to a power of two.
    pub cq_entries: u32,
    /// Operation slots: the most operations in flight at once.
    pub slots: u32,
    /// Registered buffers (0: none) and their size.
    pub registered_buffers: u16,
    /// Bytes per registered buffer.
    pub registered_buffer_size: usize,
    /// Slots in the ring's fixed-file table (0: none); `FiberFs::open_direct` installs
    /// descriptors there.
    pub registered_files: u32,
    /// Keep the `off` field of the first this-many SQEs submitted (tests read the
    /// submission order from it); 0: keep nothing.
    pub record_submissions: usize,
    /// How other threads unpark the executor (`Auto`: MsgRing where the kernel has it,
    /// else the eventfd; see `ring/unpark.rs`).
    pub unpark: UnparkMode,
    /// Caps the kernel's worker pool of the executor's thread at `[bounded, unbounded]`
    /// threads (`IORING_REGISTER_IOWQ_MAX_WORKERS`; `[0, 0]`: the kernel's defaults). See
    /// `ring/iowq.rs`: the pool is the thread's, shared by every executor on it.
    pub iowq_max_workers: [u32; 2],
    /// Set the ring up with `IORING_SETUP_ATTACH_WQ` naming another executor's ring
    /// ([`RingDriver::worker_pool`]). The kernel checks the name; it shares a pool only
    /// within one thread, where executors share it anyway (iowq rule 3 in `ring/iowq.rs`).
    pub attach_wq: Option<super::iowq::WorkerPool>,
    /// Polled completions (`IORING_SETUP_IOPOLL`, iopoll rules in this module's doc): the
    /// kernel polls the device for read and write completions instead of taking an
    /// interrupt. For `O_DIRECT` files on devices with poll queues only.
    pub iopoll: bool,
    /// Which backend performs the operations (`Auto`: io_uring where this process may use
    /// it, else the epoll engine; see [`BackendChoice`]).
    pub backend: BackendChoice,
    /// Threads of the epoll engine's pool for file operations (0: performed on the
    /// executor's thread). Unused on io_uring.
    pub file_threads: u32,
}

/// Which backend [`RingDriver::new`] sets up (chooser rules in `ring/choose.rs`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring, unless setting up a ring, one enter or one register call fails with
    /// `EPERM`, `EACCES` or `ENOSYS` (a seccomp profile, `kernel.io_uring_disabled`, a
    /// kernel without it): then the epoll engine. The environment variable `KEEL_DRIVER`
    /// (`ring` or `epoll`) forces either for every `Auto` driver of the process.
    #[default]
    Auto,
    /// io_uring or an error.
    Ring,
    /// The epoll engine.
    Epoll,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            entries: 256,
            cq_entries: 1024,
            slots: 1024,
            registered_buffers: 0,
            registered_buffer_size: 4096,
            registered_files: 0,
            record_submissions: 0,
            unpark: UnparkMode::Auto,
            iowq_max_workers: [0, 0],
            attach_wq: None,
            iopoll: false,
            backend: BackendChoice::Auto,
            file_threads: 4,
        }
    }
}

/// Ring counters.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// Enters that failed with EAGAIN, EBUSY or EINTR (their SQEs were kept and retried).
    pub enter_retries: u64,
    /// SQEs prepared.
    pub submitted: u64,
    /// CQEs reaped.
    pub completed: u64,
    /// CQEs for slots that had been reused or freed (dropped).
    pub stale: u64,
    /// Extra enters made to flush an overflowed CQ.
    pub overflow_flushes: u64,
    /// Extra enters a reap made because the kernel had left completion work pending
    /// (`IORING_SQ_TASKRUN`; the `ring` module doc, Batching).
    pub reap_follow_ups: u64,
    /// Multishot results that did not fit their slot's queue and went to the spill list
    /// (completion rule 2).
    pub multishot_spilled: u64,
    /// Multishot operations the driver cancelled because their queue filled (completion rule 2).
    pub multishot_throttled: u64,
    /// Multishot results dropped because the spill list was full too (completion rule 2: a
    /// descriptor is closed, a provided buffer goes back to the ring).
    pub multishot_lost: u64,
    /// SEND_ZC notifications (`IORING_CQE_F_NOTIF`) received (completion rule 4).
    pub zc_notifs: u64,
    /// Deadline timers that fired (`ETIME`, deadline rule 3).
    pub deadlines_fired: u64,
    /// Deadline timers that fired on an operation the kernel could not cancel (the
    /// timer's CQE says `EALREADY`, or `ENOENT` for work already running in io-wq: the
    /// operation completed with its own result, deadline rule 3).
    pub deadlines_uncancellable: u64,
}

/// The unpark of a polled ring (iopoll rule 4): MSG_RING, probed on a plain ring (a polled
/// one's enter does not wait for the probe's CQE).
fn polled_unpark() -> io::Result<UnparkKind> {
    let mut plain = io_uring::IoUring::new(2)?;
    if !unpark::msg_ring_works(&mut plain) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a polled ring (iopoll) is unparked through IORING_REGISTER_SEND_MSG_RING (kernel 6.13), which this kernel lacks",
        ));
    }
    Ok(UnparkKind::MsgRing)
}

/// io_uring's `IORING_MAX_ENTRIES`: the most SQ entries a ring may ask for (without
/// `IORING_SETUP_CLAMP`, which keel does not set, a larger size is `EINVAL`).
pub(crate) const MAX_ENTRIES: u32 = 32768;
/// io_uring's `IORING_MAX_CQ_ENTRIES` (`2 * IORING_MAX_ENTRIES`).
pub(crate) const MAX_CQ_ENTRIES: u32 = 2 * MAX_ENTRIES;

/// The configuration's own contradictions, refused with `InvalidInput` before a backend
/// is chosen, so a caller's mistake gets the same error on io_uring and on the epoll
/// engine (where a ring-only setting would otherwise be refused first, as `Unsupported`).
/// Sizes past the kernel's maximum are among them: io_uring refuses them with `EINVAL`,
/// and the epoll engine, which has no maximum of its own, would otherwise try to
/// allocate them (`u32::MAX` entries: an abort).
fn check(cfg: &RingConfig) -> io::Result<()> {
    let invalid = |what: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, what.to_owned()));
    if cfg.entries == 0 || cfg.slots == 0 || cfg.slots > 1 << 30 {
        return invalid(
            "entries and slots must be at least 1 (and slots below 2^30); use SleepDriver for an executor with no ring",
        );
    }
    if cfg.entries > MAX_ENTRIES || cfg.cq_entries > MAX_CQ_ENTRIES {
        return invalid(
            "entries must be at most 32768 and cq_entries at most 65536 (the kernel's IORING_MAX_ENTRIES and IORING_MAX_CQ_ENTRIES)",
        );
    }
    if cfg.registered_buffers > 0 && cfg.registered_buffer_size == 0 {
        return invalid("registered_buffer_size must be at least 1");
    }
    if cfg.iopoll && cfg.unpark == UnparkMode::Eventfd {
        return invalid("a polled ring (iopoll) cannot read an unpark eventfd: use UnparkMode::Auto");
    }
    Ok(())
}

/// Whether High I/O priority may use the realtime class, with the notice (once a
/// process) when it may not: on both backends, since the epoll engine's pool orders its
/// jobs by the same I/O priority values.
fn realtime_ioprio_allowed() -> bool {
    let rt_allowed = setup::realtime_ioprio_allowed();
    static SAID: std::sync::Once = std::sync::Once::new();
    if !rt_allowed {
        SAID.call_once(|| notice!(info, "no CAP_SYS_NICE or CAP_SYS_ADMIN: High I/O priority uses the best-effort class, level 0, not the realtime class"));
    }
    rt_allowed
}

impl RingDriver {
    /// Creates the ring on this thread (expensive: syscalls and allocation, once).
    pub fn new(cfg: RingConfig) -> io::Result<Self> {
        check(&cfg)?;
        let (mut ring, flags) = match super::choose::choose(&cfg)? {
            super::choose::Chosen::Ring(ring, flags) => (ring, flags),
            super::choose::Chosen::Epoll(engine) => return Self::on_engine(cfg, engine),
        };
        super::iowq::apply(&ring, &cfg)?;
        let unpark_kind = if cfg.iopoll {
            polled_unpark()?
        } else {
            // Probed on this ring while it is fresh (nothing submitted, CQ empty): `unpark.rs`.
            match cfg.unpark {
                UnparkMode::Auto if unpark::msg_ring_works(&mut ring) => UnparkKind::MsgRing,
                UnparkMode::Auto | UnparkMode::Eventfd => UnparkKind::Eventfd,
            }
        };
        let eventfd = match unpark_kind {
            UnparkKind::Eventfd => Some(rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
            )?),
            UnparkKind::MsgRing => None,
        };
        if !ring.params().is_feature_nodrop() {
            notice!(warn, "this kernel lacks IORING_FEAT_NODROP: a CQ overflow could lose completions");
        }
        let registered = crate::regbuf::Registered::new(&ring, cfg.registered_buffers, cfg.registered_buffer_size)?;
        if cfg.registered_files > 0 {
            ring.submitter().register_files_sparse(cfg.registered_files)?;
        }
        let rt_allowed = realtime_ioprio_allowed();
        let mut kernel = Kernel::Uring(ring, None);
        kernel.register_ring_fd();
        Ok(Self::assemble(cfg, kernel, flags, unpark_kind, eventfd, registered, rt_allowed))
    }

    /// The driver on the epoll engine (kernel rule 2: what needs a kernel ring was refused
    /// by the chooser before the engine was made).
    fn on_engine(cfg: RingConfig, engine: Box<crate::epoll::engine::Engine>) -> io::Result<Self> {
        let eventfd =
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK)?;
        let rt_allowed = realtime_ioprio_allowed();
        let kernel = Kernel::Epoll(engine);
        Ok(Self::assemble(cfg, kernel, RingFlags::default(), UnparkKind::Eventfd, Some(eventfd), None, rt_allowed))
    }

    fn assemble(
        cfg: RingConfig,
        ring: Kernel,
        flags: RingFlags,
        unpark_kind: UnparkKind,
        eventfd: Option<std::os::fd::OwnedFd>,
        registered: Option<crate::regbuf::Registered>,
        rt_allowed: bool,
    ) -> Self {
        let skip_pairs = super::pair::kernel_pairs(&ring, flags.iopoll);
        RingDriver {
            ring,
            flags,
            slots: Slots::new(cfg.slots),
            direct: Direct::new(cfg.slots as usize),
            pairs: super::pair::Pairs::new(cfg.slots / 2, skip_pairs),
            pending_cancels: Vec::with_capacity(cfg.slots as usize),
            pending_closes: Vec::with_capacity(cfg.slots as usize),
            tail_linked: false,
            inject: None,
            rt_allowed,
            shared: {
                let shared = Rc::new(Shared::new(cfg.slots as usize));
                shared.set_regbuf(registered);
                shared
            },
            spill: Vec::with_capacity(2 * cfg.cq_entries.max(cfg.entries) as usize),
            spill_plain_max: 2 * cfg.cq_entries.max(cfg.entries) as usize,
            stats: RingStats::default(),
            record: Vec::with_capacity(cfg.record_submissions),
            unpark_kind,
            unparker_given: false,
            eventfd,
            eventfd_buf: Box::new(0),
            eventfd_rearm: false,
            eventfd_armed: false,
            closing: false,
            _not_send: PhantomData,
        }
    }
}
