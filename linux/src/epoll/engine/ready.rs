//! Readiness: the engine's epoll instance and, per descriptor, the ops waiting on it.
//!
//! Readiness rules (cited as "readiness rule N"; they are epoll rules 1-2 of
//! `epoll/mod.rs` applied to the engine's ops):
//! 1. A descriptor with waiting ops is registered once, `EPOLLONESHOT`, for the union of
//!    what they wait for, with the descriptor number as its data. An event disarms it;
//!    after the event's ops were tried again it is re-armed for the ops still waiting, so
//!    no event is lost between two waits. With no waiter left it is armed for nothing
//!    (a descriptor nobody waits for reports nothing, yet stays registered for the next).
//! 2. `arm` skips the system call when the armed set already is the union.
//! 3. Registering fails with `EPERM` for a descriptor epoll cannot watch (a regular file,
//!    a directory): always ready, as poll(2) says. Any other failure ends the waiters with
//!    that errno. Either way nothing stays waiting on a registration that failed.
//!
//!    One-shot rather than edge-triggered and registered for good: a re-arm costs one
//!    `epoll_ctl` per wait, but it is also what notices a descriptor closed and its
//!    number reused behind the engine's back (the modify fails with `ENOENT`, rule 5);
//!    a permanent registration would leave a wait on the new descriptor unregistered.
//! 4. Entries are a vector indexed by descriptor number (numbers are small and dense; an
//!    entry is a few words and keeps its waiter list's capacity for the next wait), made
//!    for the first `PREALLOCATED` numbers at creation: after a descriptor's first wait,
//!    waiting on it again allocates nothing.
//! 5. A registration is keyed by the descriptor number: a descriptor closed (and its
//!    number reused) under it gives `ENOENT` on the next modify, and the engine adds the
//!    new one; a stale event is harmless, since each woken op just tries again.

use rustix::event::epoll;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

/// Descriptor numbers with an entry from the start (readiness rule 4).
const PREALLOCATED: usize = 256;

/// `EPOLLERR | EPOLLHUP`: wake every waiter.
const ALWAYS: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;

#[derive(Debug, Default)]
struct Entry {
    /// (op index, events).
    waiters: Waiters,
    /// The events armed (0: not armed).
    armed: u32,
    registered: bool,
}

/// A descriptor's waiters, oldest first: (op index, events). The first sits inline, so
/// the usual one waiter per descriptor never allocates; `one` is `None` only when `more`
/// is empty.
#[derive(Debug, Default)]
struct Waiters {
    one: Option<(u32, u32)>,
    more: Vec<(u32, u32)>,
}

impl Waiters {
    fn push(&mut self, w: (u32, u32)) {
        if self.one.is_none() { self.one = Some(w) } else { self.more.push(w) }
    }

    fn len(&self) -> usize {
        usize::from(self.one.is_some()) + self.more.len()
    }

    fn union(&self) -> u32 {
        self.more.iter().fold(self.one.map_or(0, |w| w.1), |acc, w| acc | w.1)
    }

    /// Keeps the waiters `keep` says, calling it oldest first.
    fn retain(&mut self, mut keep: impl FnMut(&(u32, u32)) -> bool) {
        let first = self.one.map(|w| keep(&w));
        self.more.retain(|w| keep(w));
        if first == Some(false) {
            self.one = if self.more.is_empty() { None } else { Some(self.more.remove(0)) };
        }
    }

    fn drain_into(&mut self, out: &mut Vec<(u32, u32)>) {
        out.extend(self.one.take());
        out.append(&mut self.more);
    }
}

/// What arming a descriptor came to (readiness rule 3).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Armed {
    Ok,
    /// `EPERM`: always ready; the caller tries its waiters (taken out) again.
    AlwaysReady,
    /// The waiters (taken out) end with this `-errno`.
    Failed(i32),
}

/// The registrations (module doc).
#[derive(Debug)]
pub(crate) struct Readiness {
    pub(crate) epoll: OwnedFd,
    fds: Vec<Entry>,
    /// Ops waiting on all descriptors together.
    waiting: usize,
}

impl Readiness {
    pub(crate) fn new() -> std::io::Result<Readiness> {
        let mut fds = Vec::new();
        fds.resize_with(PREALLOCATED, Entry::default);
        Ok(Readiness { epoll: epoll::create(epoll::CreateFlags::CLOEXEC)?, fds, waiting: 0 })
    }

    fn entry(&mut self, fd: RawFd) -> Option<&mut Entry> {
        self.fds.get_mut(usize::try_from(fd).ok()?)
    }

    /// Op `i` waits for `events` on `fd` (arm it afterwards).
    /// A negative `fd` never gets here: an op on one fails with `EBADF` before it waits.
    pub(crate) fn push(&mut self, fd: RawFd, i: u32, events: u32) {
        let k = usize::try_from(fd).expect("keel bug: a wait on a negative descriptor");
        if k >= self.fds.len() {
            self.fds.resize_with(k + 1, Entry::default);
        }
        self.fds[k].waiters.push((i, events));
        self.waiting += 1;
    }

    /// Op `i` no longer waits on `fd` (arm it afterwards).
    pub(crate) fn remove(&mut self, fd: RawFd, i: u32) {
        if let Some(e) = self.entry(fd) {
            let before = e.waiters.len();
            e.waiters.retain(|&(w, _)| w != i);
            let gone = before - e.waiters.len();
            self.waiting -= gone;
        }
    }

    /// Whether any op waits on any descriptor.
    pub(crate) fn any_waiting(&self) -> bool {
        self.waiting > 0
    }

    /// Readiness rules 1-3: (re-)arms `fd` for its waiters. On `AlwaysReady` or `Failed`,
    /// the waiters are moved into `out`.
    pub(crate) fn arm(&mut self, fd: RawFd, out: &mut Vec<(u32, u32)>) -> Armed {
        let waiting = &mut self.waiting;
        let Some(e) = self.fds.get_mut(usize::try_from(fd).unwrap_or(usize::MAX)) else { return Armed::Ok };
        let union = e.waiters.union();
        if union == e.armed {
            return Armed::Ok; // readiness rule 2
        }
        // SAFETY: the waiting ops name `fd`, which their callers keep open until the ops'
        // CQEs (`Engine::push`); it is borrowed for these calls only.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        let flags = epoll::EventFlags::from_bits_retain(union) | epoll::EventFlags::ONESHOT;
        let data = epoll::EventData::new_u64(fd as u64);
        let r = if e.registered {
            match epoll::modify(&self.epoll, b, data, flags) {
                Err(rustix::io::Errno::NOENT) => epoll::add(&self.epoll, b, data, flags),
                other => other,
            }
        } else {
            epoll::add(&self.epoll, b, data, flags)
        };
        match r {
            Ok(()) => {
                e.registered = true;
                e.armed = union;
                Armed::Ok
            }
            Err(err) => {
                e.registered = false;
                e.armed = 0;
                *waiting -= e.waiters.len();
                e.waiters.drain_into(out);
                if err == rustix::io::Errno::PERM { Armed::AlwaysReady } else { Armed::Failed(-err.raw_os_error()) }
            }
        }
    }

    /// `fd` reported `revents` (and is disarmed): moves the waiters it satisfies into `out`.
    pub(crate) fn take(&mut self, fd: RawFd, revents: u32, out: &mut Vec<(u32, u32)>) {
        let waiting = &mut self.waiting;
        let Some(e) = self.fds.get_mut(usize::try_from(fd).unwrap_or(usize::MAX)) else { return };
        e.armed = 0;
        e.waiters.retain(|&(i, ev)| {
            let hit = revents & (ev | ALWAYS) != 0;
            if hit {
                out.push((i, ev));
                *waiting -= 1;
            }
            !hit
        });
    }

    /// `fd` is about to be closed: its registration goes.
    pub(crate) fn forget(&mut self, fd: RawFd) {
        let Some(e) = self.fds.get_mut(usize::try_from(fd).unwrap_or(usize::MAX)) else { return };
        if e.registered {
            // SAFETY: as in `arm`; the close that follows has not happened yet.
            let _ = epoll::delete(&self.epoll, unsafe { BorrowedFd::borrow_raw(fd) });
            e.registered = false;
            e.armed = 0;
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
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
