//! Ring set-up: the flags keel wants, probed at start, with a fallback and one notice
//! (`notice.rs`) on kernels that lack them.
//!
//! Wanted: `SINGLE_ISSUER` (one thread submits: the executor's), `DEFER_TASKRUN`
//! (completions are posted only inside `io_uring_enter(GETEVENTS)` on that thread, so
//! the kernel never interrupts the executor), `COOP_TASKRUN` with `TASKRUN_FLAG` (the
//! kernel sets `IORING_SQ_TASKRUN` while completion work is pending: the `ring` module
//! doc, Batching), and
//! `SUBMIT_ALL` (keep submitting a batch past a failing SQE). Fallbacks, in order: all
//! of them; without DEFER_TASKRUN; COOP_TASKRUN + TASKRUN_FLAG + SUBMIT_ALL; none.

use io_uring::IoUring;
use std::io;

/// Which set-up flags the ring got.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct RingFlags {
    /// `IORING_SETUP_SINGLE_ISSUER`.
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN`.
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN`, with `IORING_SETUP_TASKRUN_FLAG`.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SUBMIT_ALL`.
    pub submit_all: bool,
}

/// Builds a ring of `entries` SQEs and `cq_entries` CQEs with the best flags the kernel has,
/// attached to the worker pool of ring `attach_wq` if given (`ring/iowq.rs`).
pub(crate) fn build(entries: u32, cq_entries: u32, attach_wq: Option<i32>) -> io::Result<(IoUring, RingFlags)> {
    let attempts = [
        RingFlags { single_issuer: true, defer_taskrun: true, coop_taskrun: true, submit_all: true },
        RingFlags { single_issuer: true, defer_taskrun: false, coop_taskrun: true, submit_all: true },
        RingFlags { single_issuer: false, defer_taskrun: false, coop_taskrun: true, submit_all: true },
        RingFlags::default(),
    ];
    let mut last = None;
    for (attempt, flags) in attempts.iter().enumerate() {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq_entries.max(entries));
        if let Some(fd) = attach_wq {
            builder.setup_attach_wq(fd);
        }
        if flags.single_issuer {
            builder.setup_single_issuer();
        }
        if flags.defer_taskrun {
            builder.setup_defer_taskrun();
        }
        if flags.coop_taskrun {
            builder.setup_coop_taskrun();
            builder.setup_taskrun_flag();
        }
        if flags.submit_all {
            builder.setup_submit_all();
        }
        match builder.build(entries) {
            Ok(ring) => {
                if attempt > 0 {
                    crate::notice::notice!(
                        info,
                        "io_uring set-up fell back to {flags:?} (this kernel refused the preferred flags: {last:?})"
                    );
                }
                return Ok((ring, *flags));
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
}

/// Whether this process may use the realtime I/O class (CAP_SYS_NICE or CAP_SYS_ADMIN in
/// its effective set), read once from /proc/self/status.
pub(crate) fn realtime_ioprio_allowed() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    let Some(line) = status.lines().find(|l| l.starts_with("CapEff:")) else { return false };
    let Ok(caps) = u64::from_str_radix(line["CapEff:".len()..].trim(), 16) else { return false };
    const CAP_SYS_ADMIN: u64 = 21;
    const CAP_SYS_NICE: u64 = 23;
    caps & (1 << CAP_SYS_NICE | 1 << CAP_SYS_ADMIN) != 0
}
