//! Readiness: the engine's epoll instance and, per descriptor, what is known of its
//! readiness and the ops waiting on it (tokio's and mio's shape: registered once,
//! edge-triggered, and a readiness state per descriptor kept in user space).
//!
//! Readiness rules (cited as "readiness rule N"; they are epoll rules 1-2 of
//! `epoll/mod.rs` applied to the engine's ops):
//! 1. A descriptor is registered once, edge-triggered (`EPOLLET`), for every readiness
//!    a poll may ask for (`INTEREST`: in, out, priority, the normal and band forms,
//!    `EPOLLRDHUP`), with the descriptor number as its data, when an op on it
//!    first has to wait; it stays registered (no `epoll_ctl` per wait) until keel closes
//!    it or learns that it was closed (rule 6). Adding it reports it at once if it is
//!    ready already (epoll's insert checks the level once), so no readiness is lost
//!    between the attempt that found it not ready and the registration.
//! 2. Each entry keeps `maybe`: the directions (in, out) that may be ready. An attempt
//!    that found a direction not ready (`EAGAIN`, a connect in progress, a poll with
//!    nothing), or a short read or write on a descriptor whose short transfer means
//!    drained (a stream socket, a pipe: `drains`), clears it; every event sets what it
//!    reports. A direction an event reported ended (`EPOLLRDHUP` for in, `EPOLLHUP` and
//!    `EPOLLERR` for both) stays maybe ready until the entry is renewed: an end raises
//!    no further edge, and an attempt returns at once (end of stream or the error), as
//!    tokio never clears its closed readiness, until an attempt says `EAGAIN` (which an
//!    ended direction never says: the end was a stale event's, from a file that no longer
//!    has the number). A direction not known not ready counts as maybe ready.
//! 3. An op's first attempt is skipped when its descriptor is registered and its
//!    direction is known not ready (`must_wait`): it waits at once, without a system call
//!    that would only say `EAGAIN`. This is sound because the registration is
//!    edge-triggered: readiness that comes after the attempt that cleared the direction
//!    raises an edge, and its event sets the direction again. Ops that must ask the
//!    kernel whatever was seen (a connect, a poll, a caller's own non-blocking flag, a
//!    read or write of an anonymous inode such as an eventfd or a timerfd, which refuses a
//!    buffer shorter than its 8 bytes with `EINVAL` whether or not it is ready, a transfer
//!    of nothing, which a pipe answers with 0 at once) always make their attempt.
//! 4. A wait that was not an observation (a multishot accept that ended its burst with
//!    connections maybe left) on a direction still maybe ready is not left to an edge
//!    that may never come: its descriptor goes on the `pending` list and its waiters try
//!    again in the next `epoll_wait` pass, as if an event had come.
//! 5. Registering fails with `EPERM` for a descriptor epoll cannot watch (a regular file,
//!    a directory): always ready, as poll(2) says. Any other failure ends the waiters with
//!    that errno. Either way nothing stays waiting on a registration that failed.
//! 6. Closes. A registration is keyed by (descriptor number, open file): once keel
//!    closes a descriptor, its entry must not be trusted for the next file with that
//!    number. So every close keel performs resets the entry (`forget`: registration
//!    deleted first where the engine closes, `renew`: state dropped where the close
//!    happened already): the engine's own CLOSE (before the pool runs it),
//!    `sync_cancel_fd` (which keel's closes call before `close(2)`), and every `close(2)`
//!    keel makes outside the engine, or descriptor it gives up, through the close log
//!    (`closes.rs`, read at the start of each `enter`); a descriptor number an ACCEPT,
//!    SOCKET or OPENAT returns is renewed as well. A renewed entry with waiters is
//!    registered again at once (an op still naming a closed number then ends with
//!    `EBADF`).
//! 7. A descriptor closed behind keel's back (its number reused) would leave a waiter
//!    behind a registration of the old file, and the new file unregistered: such a wait
//!    is found by revalidation (`revalidate.rs`): a wait older than a period re-checks
//!    its registration (`EPOLL_CTL_MOD`, `ENOENT` -> `EPOLL_CTL_ADD`, `EBADF` -> the
//!    waiters end with it), with backoff, bounded there. A registration of the old file
//!    left in the instance (the file open elsewhere through a duplicate) only brings
//!    stale events: harmless, since each woken op just tries again.
//! 8. Entries are a vector indexed by descriptor number (numbers are small and dense; an
//!    entry is a few words and keeps its waiter list's capacity for the next wait), made
//!    for the first `PREALLOCATED` numbers at creation: after a descriptor's first wait,
//!    waiting on it again allocates nothing.
//! 9. A POLL_ADD (`ready::poll`) names any descriptor, often one owned outside keel and
//!    closed without keel knowing: its wait re-checks a registration it finds
//!    (`EPOLL_CTL_MOD`, `ENOENT` -> `EPOLL_CTL_ADD`: revalidation rule 3 at once), one
//!    `epoll_ctl` per poll that waits, so a number reused since its last wait is
//!    registered anew rather than trusted.
//! 10. Wake one. An accept waits marked `ONE`: it takes what wakes it (a connection).
//!     An event (or a pending pass) wakes every waiter it satisfies except that of the
//!     `ONE` waiters it wakes only the oldest; when that one does not wait again (it took
//!     a connection, or ended with an error) the next oldest `ONE` waiter tries while the
//!     direction may still be ready (`take_one`), until one finds it not ready (`EAGAIN`:
//!     it waits again, at the back) or none is left. So one edge for many connections
//!     serves as many accepts as there are connections, and a connection wakes no accept
//!     that only finds `EAGAIN` but the one that ends the run (io_uring's accepts wait
//!     exclusively too). Bounded by the descriptor's waiters.

use super::entry::{Drains, Entry, drains_on_short_transfer, ended_of, maybe_of};
use rustix::event::epoll;
use rustix::io::Errno;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

/// Descriptor numbers with an entry from the start (readiness rule 8).
const PREALLOCATED: usize = 256;

/// In and out, as epoll names them.
pub(crate) const IN: u32 = libc::EPOLLIN as u32;
pub(crate) const OUT: u32 = libc::EPOLLOUT as u32;
pub(crate) const BOTH: u32 = IN | OUT;

/// A waiter's mark (never an event's): it takes what wakes it, so waiters so marked are
/// woken one at a time (readiness rule 10).
pub(crate) const ONE: u32 = libc::EPOLLEXCLUSIVE as u32;

/// `EPOLLERR | EPOLLHUP`: wake every waiter.
pub(crate) const ALWAYS: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;

/// What a registration asks for (readiness rule 1): every readiness a poll may wait for,
/// so that an event's mask holds whatever of it is ready.
pub(crate) const INTEREST: u32 = (libc::EPOLLIN
    | libc::EPOLLPRI
    | libc::EPOLLOUT
    | libc::EPOLLRDNORM
    | libc::EPOLLRDBAND
    | libc::EPOLLWRNORM
    | libc::EPOLLWRBAND
    | libc::EPOLLMSG
    | libc::EPOLLRDHUP
    | libc::EPOLLET) as u32;

/// What reports in, and out (readiness rule 2).
pub(crate) const IN_LIKE: u32 =
    (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLRDNORM | libc::EPOLLRDBAND | libc::EPOLLRDHUP) as u32;
pub(crate) const OUT_LIKE: u32 = (libc::EPOLLOUT | libc::EPOLLWRNORM | libc::EPOLLWRBAND) as u32;

/// What arming a descriptor came to (readiness rule 5).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Armed {
    Ok,
    /// `EPERM`: always ready; the caller tries its waiters (taken out) again.
    AlwaysReady,
    /// The waiters (taken out) end with this `-errno`.
    Failed(i32),
}

/// System calls the readiness path made, for tests and the module's cost claims.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// `epoll_ctl` calls.
    pub ctl: u64,
    /// First attempts skipped (readiness rule 3).
    pub skipped: u64,
    /// Waiters woken to try again (readiness rule 10).
    pub woken: u64,
}

/// The registrations (module doc).
#[derive(Debug)]
pub(crate) struct Readiness {
    pub(crate) epoll: OwnedFd,
    pub(crate) fds: Vec<Entry>,
    /// Ops waiting on all descriptors together.
    waiting: usize,
    /// Descriptors whose waiters try again without an event (readiness rule 4).
    pending: Vec<RawFd>,
    pub(crate) counts: Counts,
}

/// `fd` borrowed for one `epoll_ctl`.
fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: epoll_ctl only looks the number up (a closed or reused number is its
    // `EBADF`/`ENOENT`, which the callers handle); the borrow lives for that call only.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

impl Readiness {
    pub(crate) fn new() -> std::io::Result<Readiness> {
        let mut fds = Vec::new();
        fds.resize_with(PREALLOCATED, Entry::default);
        Ok(Readiness {
            epoll: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            fds,
            waiting: 0,
            pending: Vec::new(),
            counts: Counts::default(),
        })
    }

    fn entry(&mut self, fd: RawFd) -> Option<&mut Entry> {
        self.fds.get_mut(usize::try_from(fd).ok()?)
    }

    /// Op `i` waits for `events` on `fd` (arm it afterwards); `since`: the sweep now
    /// (revalidation starts counting when the first waiter comes).
    /// A negative `fd` never gets here: an op on one fails with `EBADF` before it waits.
    pub(crate) fn push(&mut self, fd: RawFd, i: u32, events: u32, since: u32) {
        let k = usize::try_from(fd).expect("keel bug: a wait on a negative descriptor");
        if k >= self.fds.len() {
            self.fds.resize_with(k + 1, Entry::default);
        }
        let e = &mut self.fds[k];
        if !e.has_waiters() {
            super::revalidate::first_wait(e, since);
        }
        e.waiters.push((i, events));
        self.waiting += 1;
    }

    /// Op `i` no longer waits on `fd`.
    pub(crate) fn remove(&mut self, fd: RawFd, i: u32) {
        if let Some(e) = self.entry(fd) {
            let before = e.waiters.len();
            e.waiters.retain(|&(w, _)| w != i);
            let gone = before - e.waiters.len();
            self.waiting -= gone;
        }
    }

    /// Whether `fd` is registered (readiness rule 1).
    pub(crate) fn is_registered(&self, fd: RawFd) -> bool {
        self.fds.get(usize::try_from(fd).unwrap_or(usize::MAX)).is_some_and(|e| e.registered)
    }

    /// Whether any op waits on any descriptor.
    pub(crate) fn any_waiting(&self) -> bool {
        self.waiting > 0
    }

    /// Readiness rule 3: whether an op on `fd` for `events` waits without an attempt.
    #[inline]
    pub(crate) fn must_wait(&mut self, fd: RawFd, events: u32) -> bool {
        let skip = self.entry(fd).is_some_and(|e| e.registered && e.maybe & events == 0);
        self.counts.skipped += u64::from(skip);
        skip
    }

    /// Readiness rule 2: an attempt found `events` of `fd` not ready (`EAGAIN`: so not
    /// ended either, whatever a stale event said).
    #[inline]
    pub(crate) fn not_ready(&mut self, fd: RawFd, events: u32) {
        if let Some(e) = self.entry(fd) {
            e.maybe &= !events;
            e.ended &= !events;
        }
    }

    /// Readiness rule 2: a short transfer drained `events` of `fd` (unless they ended).
    #[inline]
    pub(crate) fn drained(&mut self, fd: RawFd, events: u32) {
        if let Some(e) = self.entry(fd) {
            e.maybe &= !(events & !e.ended);
        }
    }

    /// Readiness rule 2: whether a short transfer on `fd` means it is drained (asked of
    /// the kernel once per entry: `fstat`, and `SO_TYPE` for a socket).
    pub(crate) fn drains(&mut self, fd: RawFd) -> bool {
        let Some(e) = self.entry(fd) else { return false };
        if e.drains == Drains::Unknown {
            e.drains = if drains_on_short_transfer(fd) { Drains::Yes } else { Drains::No };
        }
        e.drains == Drains::Yes
    }

    /// Whether [`arm`](Self::arm) has nothing to do for `fd`: no waiter, or registered
    /// with its waiters' directions known not ready (or pending already).
    #[inline]
    pub(crate) fn settled(&self, fd: RawFd) -> bool {
        let Some(e) = self.fds.get(usize::try_from(fd).unwrap_or(usize::MAX)) else { return true };
        match e.waiters.one {
            None => true,
            Some((_, ev)) if e.more_is_empty() => e.registered && (e.maybe & ev == 0 || e.pending),
            Some(_) => false,
        }
    }

    /// Readiness rules 1, 4 and 5: registers `fd` if its waiters need it. On
    /// `AlwaysReady` or `Failed`, the waiters are moved into `out`.
    pub(crate) fn arm(&mut self, fd: RawFd, out: &mut Vec<(u32, u32)>) -> Armed {
        let Some(e) = self.fds.get_mut(usize::try_from(fd).unwrap_or(usize::MAX)) else { return Armed::Ok };
        if !e.has_waiters() {
            return Armed::Ok;
        }
        if e.registered {
            if e.maybe & e.waiters.union() != 0 {
                self.make_pending(fd); // readiness rule 4
            }
            return Armed::Ok;
        }
        let flags = epoll::EventFlags::from_bits_retain(INTEREST);
        let data = epoll::EventData::new_u64(fd as u64);
        self.counts.ctl += 1;
        match epoll::add(&self.epoll, borrow(fd), data, flags) {
            Ok(()) | Err(Errno::EXIST) => {
                e.registered = true;
                Armed::Ok
            }
            Err(err) => self.fail(fd, err, out),
        }
    }

    /// Readiness rule 5: `fd`'s registration failed with `err`: its waiters go to `out`.
    pub(crate) fn fail(&mut self, fd: RawFd, err: Errno, out: &mut Vec<(u32, u32)>) -> Armed {
        let Some(e) = self.entry(fd) else { return Armed::Ok };
        e.reset();
        let n = e.waiters.len();
        e.waiters.drain_into(out);
        self.waiting -= n;
        if err == Errno::PERM { Armed::AlwaysReady } else { Armed::Failed(-err.raw_os_error()) }
    }

    /// `fd` reported `revents`: readiness rule 2, and moves the waiters it satisfies into
    /// `out` (of those marked `ONE`, the oldest only: readiness rule 10).
    pub(crate) fn take(&mut self, fd: RawFd, revents: u32, out: &mut Vec<(u32, u32)>) {
        let (waiting, counts) = (&mut self.waiting, &mut self.counts);
        let Some(e) = self.fds.get_mut(usize::try_from(fd).unwrap_or(usize::MAX)) else { return };
        e.ended |= ended_of(revents);
        e.maybe |= maybe_of(revents);
        let mut one = false;
        e.waiters.retain(|&(i, ev)| {
            let hit = revents & (ev | ALWAYS) != 0 && !(one && ev & ONE != 0);
            if hit {
                one |= ev & ONE != 0;
                out.push((i, ev));
                *waiting -= 1;
                counts.woken += 1;
            }
            !hit
        });
    }

    /// Readiness rule 10: the `ONE` waiter woken from `fd` did not wait again: moves the
    /// oldest other `ONE` waiter whose direction may be ready into `out`.
    pub(crate) fn take_one(&mut self, fd: RawFd, out: &mut Vec<(u32, u32)>) {
        let (waiting, counts) = (&mut self.waiting, &mut self.counts);
        let Some(e) = self.fds.get_mut(usize::try_from(fd).unwrap_or(usize::MAX)) else { return };
        let (maybe, mut one) = (e.maybe, false);
        e.waiters.retain(|&(i, ev)| {
            let hit = !one && ev & ONE != 0 && maybe & ev != 0;
            if hit {
                one = true;
                out.push((i, ev));
                *waiting -= 1;
                counts.woken += 1;
            }
            !hit
        });
    }

    /// [`take`](Self::take) for the usual entry, one waiter (`Entry::take_lone`); `None`
    /// (nothing done) when the entry has more: the caller then calls `take`.
    #[inline(always)]
    pub(crate) fn take_single(&mut self, fd: RawFd, revents: u32) -> Option<Option<u32>> {
        let Some(e) = self.fds.get_mut(usize::try_from(fd).unwrap_or(usize::MAX)) else { return Some(None) };
        let taken = e.take_lone(revents)?;
        let n = u64::from(taken.is_some());
        (self.waiting, self.counts.woken) = (self.waiting - n as usize, self.counts.woken + n);
        Some(taken)
    }

    /// Readiness rule 4: the pending descriptors, each with the directions that may be
    /// ready (the list is emptied; `out` is cleared first).
    pub(crate) fn take_pending(&mut self, out: &mut Vec<(RawFd, u32)>) {
        out.clear();
        for fd in self.pending.drain(..) {
            let Some(e) = self.fds.get_mut(fd as usize) else { continue };
            e.pending = false;
            out.push((fd, e.maybe));
        }
    }

    /// Readiness rule 4: `fd`'s waiters try again in the next pass.
    pub(crate) fn make_pending(&mut self, fd: RawFd) {
        let Some(e) = self.entry(fd) else { return };
        if !e.pending && e.has_waiters() {
            e.pending = true;
            self.pending.push(fd);
        }
    }

    /// Whether any descriptor is pending (the next `epoll_wait` must not block).
    pub(crate) fn any_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Readiness rule 6: `fd` is about to be closed by the engine: its registration goes.
    pub(crate) fn forget(&mut self, fd: RawFd) {
        let Some(e) = self.fds.get_mut(usize::try_from(fd).unwrap_or(usize::MAX)) else { return };
        if e.registered {
            self.counts.ctl += 1;
            let _ = epoll::delete(&self.epoll, borrow(fd));
        }
        e.reset();
    }

    /// Readiness rule 6: `fd` was closed (or given up, or is new): nothing known of it is
    /// kept. Whether ops wait on it (the caller arms it again).
    pub(crate) fn renew(&mut self, fd: RawFd) -> bool {
        let Some(e) = self.entry(fd) else { return false };
        e.reset();
        e.has_waiters()
    }

    /// Readiness rule 6 for every entry (the close log overflowed); the descriptors with
    /// waiters go to `out`.
    pub(crate) fn renew_all(&mut self, out: &mut Vec<RawFd>) {
        for (k, e) in self.fds.iter_mut().enumerate() {
            e.reset();
            if e.has_waiters() {
                out.push(k as RawFd);
            }
        }
    }

    /// One `epoll_wait` into `events` (`None`: no timeout); EINTR is no event.
    pub(crate) fn wait(
        &self,
        events: &mut Vec<epoll::Event>,
        timeout: Option<&rustix::time::Timespec>,
    ) -> std::io::Result<()> {
        events.clear();
        match epoll::wait(&self.epoll, rustix::buffer::spare_capacity(events), timeout) {
            Ok(_) | Err(Errno::INTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
