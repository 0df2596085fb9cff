//! The epoll engine: io_uring's submission and completion queues performed in user space
//! on epoll, for where io_uring is switched off. The ring driver ([`RingDriver`]) runs on
//! either backend (`ring/kernel.rs`): it pushes the same SQEs and reaps the same CQEs, and
//! the engine carries each SQE out with ordinary system calls.
//!
//! Why SQEs: an SQE is already a complete, driver-neutral description of an operation
//! (opcode, descriptor, address, length, offset, flags), the one every keel operation is
//! built as; performing it here keeps one state machine above both backends (slots,
//! kept results, cancels, deadlines, drains), so their semantics cannot drift apart, and
//! the ring's own path pays nothing for the second backend.
//!
//! Engine rules (cited as "engine rule N"; each part's own rules are in its file: op
//! rules in `ops.rs`, start rules in `start.rs`, link rules in `links.rs`, cancel rules
//! in `cancel.rs`, readiness rules in `ready.rs`, revalidation rules in
//! `revalidate.rs`, close-log rules in `closes.rs`, timer rules in `timers.rs`, pool rules
//! in `pool.rs`, net rules in `perform_net.rs`, multi-poll rules in `multi_poll.rs`,
//! transfer rules (the plain send and receive's own path) in `transfer.rs`; the event
//! loop is `events.rs`):
//! 1. `enter(min_complete, deadline)` takes the whole SQ and starts it (start rules),
//!    then, until `min_complete` CQEs are ready or `deadline` passed: fires due timers,
//!    and waits in one `epoll_wait` for the nearest of the deadline and the next timer
//!    (rounded up to the millisecond: epoll never wakes early). It never waits while
//!    enough CQEs are ready; with `min_complete` 0 it looks once (a zero-timeout
//!    `epoll_wait`, only if an op waits on a descriptor or the pool) and returns. EINTR
//!    is a wake with no event.
//! 2. Each event handled tries the woken ops again (net rules); descriptors stay
//!    registered, edge-triggered, with their readiness kept per descriptor (readiness
//!    rules 1-4), so a wait costs no `epoll_ctl` and an op whose descriptor is known not
//!    ready waits without trying; the pool's eventfd brings the pool's results (pool rule
//!    4). An `epoll_wait` handles at most `EVENTS`, then the pending descriptors
//!    (readiness rule 4). While ops wait on descriptors, an `enter` that waits wakes at
//!    least once per revalidation period (revalidation rule 1).
//! 3. Where operations run: sockets, pipes, eventfds, ttys on readiness, on the executor's
//!    thread, never blocking it (net rules); regular files, block devices, directories,
//!    and open, close, statx, unlink, rename, mkdir, fsync, fallocate, sync_file_range in
//!    the blocking pool (`EngineConfig::file_threads`; 0 performs them at once on the
//!    executor's thread, blocking it for each); timers in the engine's heap.
//! 4. The CQ grows as needed and never drops a CQE (there is no overflow to report).
//! 5. Dropping the engine waits for the pool's running jobs and joins its threads (pool
//!    rule 5); ops waiting on readiness or timers are dropped with it (their memory is
//!    the caller's, and nothing touches it after the drop).
//! 6. The kernel completes operations while nobody enters; the engine only inside
//!    `enter`. So an `enter` first fires the timers already due and, when its SQEs hold a
//!    cancel, first looks (zero-timeout `epoll_wait`) for readiness that already came:
//!    a cancel then finds what io_uring's would find, and an operation that completed
//!    (or timed out) before the cancel keeps its result.
//!
//! What is performed where (io_uring 6.x semantics; CQE `res` as the kernel's):
//!
//! | opcodes | how |
//! |---|---|
//! | NOP | at once |
//! | READ, WRITE, READV, WRITEV | regular file, block device, directory: the pool; else readiness (net rule 1); offset -1 is the current position |
//! | FSYNC (DATASYNC), SYNC_FILE_RANGE, FALLOCATE, OPENAT, OPENAT2, CLOSE, STATX, UNLINKAT, RENAMEAT, MKDIRAT | the pool |
//! | SEND, RECV, SENDMSG, RECVMSG, ACCEPT (also multishot), CONNECT, POLL_ADD | readiness (net rules); multishot POLL_ADD on an edge-triggered instance (multi-poll rules) |
//! | SOCKET, BIND, LISTEN, SHUTDOWN, URING_CMD setsockopt | at once (net rule 5) |
//! | TIMEOUT (count 0; relative or ABS on MONOTONIC, BOOTTIME, REALTIME), LINK_TIMEOUT | the timer heap (link rules) |
//! | ASYNC_CANCEL (user_data, FD, FD+USERDATA, ANY, ALL) | at once (cancel rules) |
//! | READ_FIXED, WRITE_FIXED, FIXED_FD_INSTALL, FILES_UPDATE, MSG_RING, SEND_ZC, READ_MULTISHOT, multishot RECV, any other opcode; `IOSQE_FIXED_FILE`, `IOSQE_BUFFER_SELECT`, `IOSQE_IO_DRAIN`; direct-descriptor results (`file_index`); TIMEOUT with a count | `-EOPNOTSUPP` (start rule 4) |
//!
//! Cost: this is the fallback where io_uring is switched off, built for plain system
//! calls rather than for keel's hot-path rules. Taking, performing and completing an
//! SQE allocates nothing while the ops in flight fit the slab sized at creation (the
//! larger of the SQ and CQ sizes) and each descriptor has one waiter (readiness rule 8;
//! a descriptor numbered past the preallocated entries, a second waiter on one, a
//! multishot poll's first use, a CQ past its size, a cancel's scan and the first growth
//! of the pending and sweep lists allocate). In the steady state of a connection (a
//! receive, then a send) the system calls are the transfers themselves and the shared
//! `epoll_wait`: no `epoll_ctl`, no attempt that only says `EAGAIN` (readiness rules
//! 1-3). The pool takes a lock per job; a cancel scans the ops in flight. Every loop is
//! bounded: by the SQEs taken, the ops in flight, the timers due,
//! `EVENTS` per wait, the pending descriptors, a sweep's entries, the close log's `LOG`
//! numbers (or, past it, the entries), and (`MSG_WAITALL`) the bytes asked for.
//!
//! [`RingDriver`]: crate::ring::RingDriver
#![allow(unsafe_code)] // reading SQE fields; performing operations on caller-owned memory

mod cancel;
pub(crate) mod closes;
mod entry;
mod events;
mod links;
mod multi_poll;
mod ops;
mod perform_fs;
mod perform_net;
mod pool;
mod prep;
mod ready;
mod revalidate;
mod sqe;
mod start;
#[cfg(test)]
mod tests;
mod timers;
mod transfer;

use io_uring::{cqueue, opcode, squeue};
use keel_core::Instant;
use ops::Ops;
use pool::Pool;
use ready::Readiness;
use rustix::event::epoll;
use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use timers::Timers;

/// Events handled per `epoll_wait` (engine rule 2).
pub(crate) const EVENTS: usize = 64;

/// The `data` of the pool eventfd's registration (descriptors are never negative).
const POOL_DATA: u64 = u64::MAX;

/// How the engine performs file operations.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Threads of the blocking pool that performs file operations (0: performed
    /// synchronously on the executor's thread).
    pub file_threads: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { file_threads: 4 }
    }
}

/// The engine (module doc).
pub(crate) struct Engine {
    sq: Vec<squeue::Entry>,
    sq_entries: usize,
    cq_entries: usize,
    cq: VecDeque<cqueue::Entry>,
    ops: Ops,
    /// Ops chosen to start in this pass (start rules).
    starts: VecDeque<u32>,
    ready: Readiness,
    timers: Timers,
    pool: Option<Pool>,
    events: Vec<epoll::Event>,
    /// Waiters taken out of a registration, to try again (scratch, keeps its capacity).
    woken: Vec<(u32, u32)>,
    multi: multi_poll::MultiPolls,
    /// Pool results taken (scratch).
    results: Vec<(pool::Key, i32)>,
    /// Jobs handed to the pool whose result has not come back (queued or running).
    pool_jobs: usize,
    /// The close log's count read so far (close-log rule 2).
    closes_seen: u64,
    /// Revalidation (`revalidate.rs`): the period (ns), the next sweep's instant, the
    /// sweeps so far, and the descriptors due (scratch).
    period: u64,
    next_sweep: Option<u64>,
    sweeps: u32,
    due: Vec<RawFd>,
    /// Pending descriptors taken (scratch, readiness rule 4).
    pend: Vec<(RawFd, u32)>,
}

impl core::fmt::Debug for Engine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("epoll", &self.raw_fd())
            .field("sq", &self.sq.len())
            .field("cq", &self.cq.len())
            .field("in_flight", &self.ops.live())
            .finish()
    }
}

/// A CQE as the kernel would post it.
pub(crate) fn cqe(user_data: u64, res: i32, flags: u32) -> cqueue::Entry {
    #[repr(C)]
    struct RawCqe {
        user_data: u64,
        res: i32,
        flags: u32,
    }
    const _: () = assert!(core::mem::size_of::<cqueue::Entry>() == core::mem::size_of::<RawCqe>());
    // SAFETY: `cqueue::Entry` is `#[repr(C)]` around `io_uring_cqe` {u64 user_data, i32 res,
    // u32 flags} (16 bytes, asserted): the same layout as `RawCqe`; every bit pattern is valid.
    unsafe { core::mem::transmute::<RawCqe, cqueue::Entry>(RawCqe { user_data, res, flags }) }
}

impl Engine {
    /// An engine with an SQ of `sq_entries` and room for `cq_entries` CQEs before its CQ
    /// grows (it never drops one: engine rule 4).
    pub(crate) fn new(sq_entries: u32, cq_entries: u32, cfg: EngineConfig) -> io::Result<Engine> {
        let ready = Readiness::new()?;
        let multi = multi_poll::MultiPolls::new(&ready.epoll)?;
        let pool = match cfg.file_threads {
            0 => None,
            n => {
                let p = Pool::new(n)?;
                let data = epoll::EventData::new_u64(POOL_DATA);
                epoll::add(&ready.epoll, p.eventfd(), data, epoll::EventFlags::IN)?;
                Some(p)
            }
        };
        Ok(Engine {
            sq: Vec::with_capacity(sq_entries as usize),
            sq_entries: sq_entries as usize,
            cq_entries: cq_entries as usize,
            cq: VecDeque::with_capacity(cq_entries as usize),
            ops: Ops::with_capacity(sq_entries.max(cq_entries) as usize),
            starts: VecDeque::with_capacity(sq_entries as usize),
            ready,
            timers: Timers::default(),
            pool,
            events: Vec::with_capacity(EVENTS),
            woken: Vec::with_capacity(EVENTS),
            results: Vec::with_capacity(EVENTS),
            multi,
            pool_jobs: 0,
            closes_seen: closes::count(),
            period: revalidate::PERIOD_NS,
            next_sweep: None,
            sweeps: 0,
            due: Vec::new(),
            pend: Vec::new(),
        })
    }

    /// SQEs queued and not yet taken by an [`enter`](Self::enter).
    #[inline(always)]
    pub(crate) fn sq_len(&self) -> usize {
        self.sq.len()
    }

    /// The SQ's size.
    #[inline(always)]
    pub(crate) fn sq_capacity(&self) -> usize {
        self.sq_entries
    }

    /// The CQEs the CQ holds before it grows (it never drops one).
    pub(crate) fn cq_capacity(&self) -> usize {
        self.cq_entries
    }

    /// Queues a copy of `sqe`; `false` if the SQ is full.
    ///
    /// # Safety
    /// As for an SQE pushed into a kernel ring: the memory it names stays valid (and, for
    /// what the operation writes, unused by anything else) until its CQE has been taken,
    /// and the descriptors it names stay open until then.
    #[inline(always)]
    pub(crate) unsafe fn push(&mut self, sqe: &squeue::Entry) -> bool {
        if self.sq.len() == self.sq_entries {
            return false;
        }
        self.sq.push(sqe.clone());
        true
    }

    /// [`push`](Self::push) with `user_data` set in the engine's copy (the SQE is copied
    /// once).
    ///
    /// # Safety
    /// As for [`push`](Self::push).
    #[inline(always)]
    pub(crate) unsafe fn push_as(&mut self, sqe: &squeue::Entry, user_data: u64) -> bool {
        // SAFETY: the caller's contract, as for `push`.
        unsafe { self.push_flagged(sqe, user_data, 0) }
    }

    /// [`push_as`](Self::push_as) with `flags` (`IOSQE_*`) added to the engine's copy's
    /// (a skip pair's head, pair rule 7).
    ///
    /// # Safety
    /// As for [`push`](Self::push).
    #[inline(always)]
    pub(crate) unsafe fn push_flagged(&mut self, sqe: &squeue::Entry, user_data: u64, flags: u8) -> bool {
        if self.sq.len() == self.sq_entries {
            return false;
        }
        self.sq.push(sqe.clone());
        if let Some(e) = self.sq.last_mut() {
            let raw = sqe::RawSqe::view_mut(e);
            raw.user_data = user_data;
            raw.flags |= flags;
        }
        true
    }

    /// `io_uring_enter` (engine rule 1): starts every queued SQE in order, then waits
    /// until at least `min_complete` CQEs are ready or `deadline` (absolute,
    /// `CLOCK_MONOTONIC`) passes.
    pub(crate) fn enter(&mut self, min_complete: u32, deadline: Option<Instant>) -> io::Result<()> {
        self.take_closes(); // readiness rule 6: before any SQE names a renewed number
        // Engine rule 6: what the kernel would have completed by now comes first (with no
        // timer queued nothing can be due: the clock is not read).
        if !self.timers.is_empty() {
            self.expire_timers(timers::now());
        }
        if self.sq.iter().any(|e| e.get_opcode() == u32::from(opcode::AsyncCancel::CODE)) && self.waits_on_events() {
            self.wait_once(Some(0))?;
        }
        self.take_sq();
        self.run_starts();
        let deadline = deadline.map(|d| d.as_nanos());
        let mut looked = false;
        loop {
            let now = timers::now();
            if !self.timers.is_empty() {
                self.expire_timers(now);
            }
            self.sweep_if_due(now);
            self.run_starts();
            if self.cq.len() >= min_complete as usize {
                if min_complete > 0 || looked || !self.waits_on_events() {
                    return Ok(());
                }
                looked = true;
                self.wait_once(Some(0))?;
                continue;
            }
            if deadline.is_some_and(|d| now >= d) {
                return Ok(());
            }
            let until = [deadline, self.timers.next(&self.ops), self.sweep_deadline()].into_iter().flatten().min();
            self.wait_once(until.map(|u| u.saturating_sub(now)))?;
        }
    }

    /// Whether an op waits on a descriptor or in the pool (something only an event ends).
    fn waits_on_events(&self) -> bool {
        self.ready.any_waiting() || self.pool_jobs > 0
    }

    /// Whether no CQE waits to be taken.
    #[inline(always)]
    pub(crate) fn cq_is_empty(&self) -> bool {
        self.cq.is_empty()
    }

    /// Moves up to `out.len()` CQEs into `out`, oldest first.
    pub(crate) fn fill<'a>(&mut self, out: &'a mut [MaybeUninit<cqueue::Entry>]) -> &'a mut [cqueue::Entry] {
        let mut n = 0;
        while n < out.len() {
            let Some(c) = self.cq.pop_front() else { break };
            out[n].write(c);
            n += 1;
        }
        // SAFETY: the first `n` entries were just written; `MaybeUninit<T>` has `T`'s layout.
        unsafe { &mut *(&mut out[..n] as *mut [MaybeUninit<cqueue::Entry>] as *mut [cqueue::Entry]) }
    }

    /// Whether the engine performs `opcode` (the others complete with `-EOPNOTSUPP`; so
    /// do some forms of the ones it performs: start rule 4).
    pub(crate) fn supports(code: u8) -> bool {
        matches!(
            code,
            opcode::Nop::CODE
                | opcode::Read::CODE
                | opcode::Write::CODE
                | opcode::Readv::CODE
                | opcode::Writev::CODE
                | opcode::Fsync::CODE
                | opcode::SyncFileRange::CODE
                | opcode::Fallocate::CODE
                | opcode::OpenAt::CODE
                | opcode::OpenAt2::CODE
                | opcode::Close::CODE
                | opcode::Statx::CODE
                | opcode::UnlinkAt::CODE
                | opcode::RenameAt::CODE
                | opcode::MkDirAt::CODE
                | opcode::Socket::CODE
                | opcode::Bind::CODE
                | opcode::Listen::CODE
                | opcode::Connect::CODE
                | opcode::Accept::CODE
                | opcode::Send::CODE
                | opcode::Recv::CODE
                | opcode::SendMsg::CODE
                | opcode::RecvMsg::CODE
                | opcode::Shutdown::CODE
                | opcode::SetSockOpt::CODE
                | opcode::PollAdd::CODE
                | opcode::Timeout::CODE
                | opcode::LinkTimeout::CODE
                | opcode::AsyncCancel::CODE
        )
    }

    /// Operations taken and not yet completed.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.live()
    }

    /// The epoll instance's descriptor (what a debugger shows).
    pub(crate) fn raw_fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.ready.epoll.as_raw_fd()
    }
}
