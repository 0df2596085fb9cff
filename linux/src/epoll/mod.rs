//! A readiness driver on epoll, for where io_uring is switched off (container seccomp
//! profiles, `kernel.io_uring_disabled`; see [`ring_availability`](crate::ring_availability)).
//!
//! It runs keel's tasks, fibers, timers and wait primitives like any driver, and performs
//! [`EpollOp`]s: operations described as plain data (no SQE), carried out on readiness.
//! Today those are a no-op and waiting for a descriptor's readiness; the file and socket
//! operations of `fs` and `net` still name the ring driver.
//!
//! Epoll rules (cited as "epoll rule N"; the table's own are in `table.rs`):
//! 1. One epoll instance per driver. A descriptor with waiting operations is registered
//!    once, `EPOLLONESHOT`, for the union of what its waiters wait for, with the
//!    descriptor number as its data; after an event (which disarms it) or a cancel, it is
//!    re-armed for the waiters left, if any. So an event is never lost between two waits
//!    and a descriptor nobody waits for reports nothing.
//! 2. A descriptor epoll cannot watch (`EPERM`: a regular file or a directory, always
//!    ready for poll(2)) completes its wait at once with the asked-for `POLLIN`/`POLLOUT`
//!    bits, as poll(2) would; any other registration error completes the operation with
//!    that errno. Nothing is left waiting on a registration that failed.
//! 3. Unparking (park rule 3) writes to an eventfd registered level-triggered in the same
//!    epoll instance, so an unpark before `epoll_wait` makes it return at once; `park`
//!    drains the eventfd when it reports.
//! 4. `park` does not sleep while completions wait to be reaped; it waits in one
//!    `epoll_wait` until the deadline (rounded up to the next millisecond: epoll never
//!    wakes early), an event or an unpark, and handles at most `EVENTS` events per call.
//! 5. `cancel_all` (the executor going) ends every waiting operation with `ECANCELED`.
#![allow(unsafe_code)] // the unparker's context is the eventfd's number, used from any thread

pub(crate) mod engine;
mod op;
mod table;

pub use engine::EngineConfig;
pub use op::EpollOp;

use crate::clock::monotonic_now;
use crate::flags::PollFlags;
use keel_core::driver::IoToken;
use keel_core::{Driver, DriverDebug, Errno, Instant, IoResult, OpId, Park, Unparker};
use op::EpollKind;
use rustix::event::epoll;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use table::Table;

/// Events handled per `epoll_wait` (epoll rule 4).
const EVENTS: usize = 64;

/// The `data` of the unpark eventfd's registration (descriptors are never negative).
const UNPARK_DATA: u64 = u64::MAX;

/// How an [`EpollDriver`] is made.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EpollConfig {
    /// Operations in flight at once (a submit beyond them is refused with `EBUSY`, and the
    /// executor queues the task by I/O priority).
    pub slots: u32,
}

impl Default for EpollConfig {
    fn default() -> Self {
        EpollConfig { slots: 1024 }
    }
}

/// The readiness driver (module doc).
pub struct EpollDriver {
    epoll: OwnedFd,
    /// The unpark eventfd (epoll rule 3).
    unpark: OwnedFd,
    unparker_given: bool,
    table: Table,
    events: Vec<epoll::Event>,
}

impl EpollDriver {
    /// Makes the epoll instance and the unpark eventfd (once; allocates the table).
    pub fn new(cfg: EpollConfig) -> Result<Self, Errno> {
        if cfg.slots == 0 || cfg.slots > 1 << 30 {
            return Err(Errno::EINVAL);
        }
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(errno)?;
        let unpark =
            rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK)
                .map_err(errno)?;
        epoll::add(&epoll, &unpark, epoll::EventData::new_u64(UNPARK_DATA), epoll::EventFlags::IN).map_err(errno)?;
        Ok(EpollDriver {
            epoll,
            unpark,
            unparker_given: false,
            table: Table::new(cfg.slots),
            events: Vec::with_capacity(EVENTS),
        })
    }

    /// Epoll rule 1: (re-)arms `fd` for what its waiters wait for, if any. A failure ends
    /// every waiter of `fd` (epoll rule 2).
    fn arm(&mut self, fd: RawFd) {
        let interest = self.table.interest(fd);
        if interest == 0 {
            return;
        }
        // SAFETY: the waiters' operations were made with `EpollOp::poll`, whose contract
        // keeps `fd` open until they complete or are cancelled; it is borrowed for the call.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let flags = epoll::EventFlags::from_bits_retain(u32::from(interest)) | epoll::EventFlags::ONESHOT;
        let data = epoll::EventData::new_u64(fd as u64);
        let armed = match epoll::modify(&self.epoll, borrowed, data, flags) {
            Err(rustix::io::Errno::NOENT) => epoll::add(&self.epoll, borrowed, data, flags),
            other => other,
        };
        match armed {
            Ok(()) => {}
            // Epoll rule 2: a regular file or directory is always ready.
            Err(rustix::io::Errno::PERM) => {
                let ready =
                    crate::ready::poll_bits(PollFlags::IN | PollFlags::OUT | PollFlags::RDNORM | PollFlags::WRNORM);
                self.table.ready(fd, ready, 0);
            }
            Err(e) => self.table.fail(fd, Errno(e.raw_os_error())),
        }
    }

    /// Epoll rule 4: one `epoll_wait` with `timeout` (`None`: no timeout), then the events.
    fn wait(&mut self, timeout: Option<&rustix::time::Timespec>) -> Result<(), Errno> {
        self.events.clear();
        match epoll::wait(&self.epoll, rustix::buffer::spare_capacity(&mut self.events), timeout) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(errno(e)),
        }
        let always = crate::ready::poll_bits(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL);
        for k in 0..self.events.len() {
            let (flags, data) = (self.events[k].flags, self.events[k].data.u64());
            if data == UNPARK_DATA {
                let mut buf = [0u8; 8];
                let _ = rustix::io::read(&self.unpark, &mut buf); // epoll rule 3
                continue;
            }
            let fd = data as RawFd;
            // Epoll's event bits are poll(2)'s in their low 16 bits.
            self.table.ready(fd, (flags.bits() & 0xffff) as u16, always);
            self.arm(fd);
        }
        Ok(())
    }
}

impl core::fmt::Debug for EpollDriver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EpollDriver")
            .field("epoll", &self.epoll)
            .field("in_flight", &self.table.in_flight())
            .field("slots", &self.table.capacity())
            .finish()
    }
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

fn eventfd_unpark(fd: usize) {
    // SAFETY: the driver's unpark eventfd, open while any thread may unpark (Driver
    // contract item 5: the driver outlives its executor's unparks).
    let fd = unsafe { BorrowedFd::borrow_raw(fd as RawFd) };
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

// SAFETY: the Driver contract: every accepted operation holds a slot that reaches `Done`
// once and is reaped once with its token (table rules 1-2; `cancel_all` ends the waiting
// ones); `in_flight` counts slots not reaped; an operation owns no memory (a poll names a
// descriptor only); `cancel`/`retarget` check the id's generation; the unparker's
// eventfd lives as long as the driver.
unsafe impl Driver for EpollDriver {
    type Op = EpollOp;

    fn now(&self) -> Instant {
        monotonic_now()
    }

    fn submit(&mut self, op: EpollOp, token: IoToken) -> Result<OpId, (EpollOp, Errno)> {
        if self.table.free_count() == 0 {
            return Err((op, Errno::EBUSY));
        }
        let id = match op.kind {
            EpollKind::Nop => self.table.start_done(token, Ok(0)),
            EpollKind::Poll { fd, events } => {
                let id = self.table.start_waiting(token, fd, events);
                self.arm(fd);
                id
            }
        };
        Ok(id.expect("free_count counted a free slot"))
    }

    fn cancel(&mut self, id: OpId) {
        if let Some(fd) = self.table.cancel(id) {
            self.arm(fd);
        }
    }

    fn retarget(&mut self, id: OpId, token: IoToken) {
        self.table.retarget(id, token);
    }

    fn reap<F: FnMut(IoToken, IoResult)>(&mut self, max: usize, sink: &mut F) -> usize {
        if !self.table.has_done() && self.table.in_flight() > 0 {
            // Readiness that came while the executor ran: no wait.
            let _ = self.wait(Some(&rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 }));
        }
        let mut n = 0;
        while n < max {
            let Some((token, result)) = self.table.pop_done() else { break };
            sink(token, result);
            n += 1;
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.table.in_flight()
    }

    fn submit_capacity(&self) -> usize {
        self.table.free_count()
    }

    fn park(&mut self, deadline: Option<Instant>) -> Result<Park, Errno> {
        if self.table.has_done() {
            return Ok(Park::Woke); // epoll rule 4
        }
        if deadline.is_none() && self.table.in_flight() == 0 && !self.unparker_given {
            return Ok(Park::Stalled);
        }
        let timeout = deadline.map(|d| {
            // Rounded up to whole milliseconds below (epoll rule 4).
            let left = d.as_nanos().saturating_sub(monotonic_now().as_nanos());
            let ms = left.div_ceil(1_000_000);
            rustix::time::Timespec { tv_sec: (ms / 1000) as i64, tv_nsec: ((ms % 1000) * 1_000_000) as i64 }
        });
        self.wait(timeout.as_ref())?;
        Ok(Park::Woke)
    }

    fn unparker(&mut self, _park_word: *const u32) -> Option<Unparker> {
        self.unparker_given = true;
        Some(Unparker { ctx: self.unpark.as_raw_fd() as usize, unpark: eventfd_unpark })
    }

    fn cancel_all(&mut self) {
        self.table.cancel_all(); // epoll rule 5
    }

    fn debug_descriptor(&self) -> DriverDebug {
        DriverDebug {
            fd: self.epoll.as_fd().as_raw_fd(),
            op_slots: self.table.capacity() as u32,
            ..DriverDebug::named("epoll")
        }
    }
}
