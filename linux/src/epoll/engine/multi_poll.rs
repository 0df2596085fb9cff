//! Multishot polls (`IORING_POLL_ADD_MULTI`): a CQE with `IORING_CQE_F_MORE` for every
//! wake-up of the descriptor, as io_uring's multishot poll reports wake-ups, not levels.
//!
//! Multi-poll rules (cited as "multi-poll rule N"):
//! 1. Their descriptors sit in a second epoll instance, edge-triggered and registered
//!    for as long as a multishot poll waits on them (for the union of what those wait
//!    for, with the descriptor number as data); that instance is registered, level-
//!    triggered, in the engine's own, so its events reach the same `epoll_wait`. Edge
//!    triggering gives one event per wake-up; a level registration would report a
//!    descriptor with unread data again and again.
//! 2. Registering reports a descriptor that is ready already (epoll's insert checks the
//!    level once), as io_uring's multishot poll posts at once when armed on a ready one.
//! 3. Each event posts, for each multishot poll of the descriptor it concerns, the ready
//!    mask (what it asked for, plus `POLLERR`/`POLLHUP`/`POLLNVAL`/`POLLRDHUP`) with
//!    `IORING_CQE_F_MORE`. Its cancel (or a registration error) ends it with a last CQE
//!    without the flag, and its descriptor's registration shrinks or goes.
//! 4. The descriptor stays open while a multishot poll waits on it (`Engine::push`): its
//!    registration is removed before the op's last CQE, never after a close.

use super::Engine;
use super::ops::State;
use super::perform_net::UNMASK;
use super::sqe::IORING_CQE_F_MORE;
use rustix::event::epoll;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

/// The `data` of the edge-triggered instance's registration in the engine's epoll.
pub(crate) const MULTI_DATA: u64 = u64::MAX - 1;

/// The multishot polls (module doc).
#[derive(Default)]
pub(crate) struct MultiPolls {
    /// The edge-triggered instance, made with the engine (so the engine's descriptors
    /// are the same before and after a multishot poll).
    et: Option<OwnedFd>,
    /// (descriptor, op, events) of every multishot poll waiting.
    polls: Vec<(RawFd, u32, u32)>,
    events: Vec<epoll::Event>,
}

impl core::fmt::Debug for MultiPolls {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MultiPolls").field("et", &self.et).field("polls", &self.polls).finish()
    }
}

impl MultiPolls {
    fn union(&self, fd: RawFd) -> u32 {
        self.polls.iter().filter(|p| p.0 == fd).fold(0, |acc, p| acc | p.2)
    }

    /// Multi-poll rule 1: (re-)registers `fd` for its polls' union (`was`: the union
    /// before the change); `Err(-errno)` if epoll refused.
    fn register(&self, fd: RawFd, was: u32) -> Result<(), i32> {
        let et = self.et.as_ref().expect("keel bug: a multishot poll without its epoll instance");
        let now = self.union(fd);
        // SAFETY: a waiting multishot poll keeps `fd` open (multi-poll rule 4).
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        let data = epoll::EventData::new_u64(fd as u64);
        let flags = epoll::EventFlags::from_bits_retain(now) | epoll::EventFlags::ET;
        let r = match (was, now) {
            (0, 0) => Ok(()),
            (_, 0) => epoll::delete(et, b),
            (0, _) => epoll::add(et, b, data, flags),
            _ if was == now => Ok(()),
            _ => epoll::modify(et, b, data, flags),
        };
        r.map_err(|e| -e.raw_os_error())
    }
}

impl MultiPolls {
    /// The edge-triggered instance, registered in `epoll` (multi-poll rule 1).
    pub(crate) fn new(epoll: &OwnedFd) -> std::io::Result<MultiPolls> {
        let et = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(epoll, et.as_fd(), epoll::EventData::new_u64(MULTI_DATA), epoll::EventFlags::IN)?;
        Ok(MultiPolls { et: Some(et), polls: Vec::new(), events: Vec::with_capacity(super::EVENTS) })
    }
}

impl Engine {
    /// Starts multishot poll `i` on `fd` for `events`.
    pub(super) fn start_multi_poll(&mut self, i: u32, fd: RawFd, events: u32) {
        if fd < 0 {
            return self.complete(i, -libc::EBADF);
        }
        let was = self.multi.union(fd);
        self.multi.polls.push((fd, i, events));
        self.ops[i].state = State::MultiPoll { fd };
        if let Err(e) = self.multi.register(fd, was) {
            self.multi.polls.retain(|p| p.1 != i);
            let left = self.multi.union(fd);
            if left != was {
                let _ = self.multi.register(fd, was); // back to what the others need
            }
            // EPERM: a regular file, always ready: one CQE, as a poll of it would give.
            let ready = (libc::POLLIN | libc::POLLOUT | libc::POLLRDNORM | libc::POLLWRNORM) as u32 & events;
            self.complete(i, if e == -libc::EPERM { ready as i32 } else { e });
        }
    }

    /// Multi-poll rule 3: takes multishot poll `i` out (its cancel); 0.
    pub(super) fn cancel_multi_poll(&mut self, i: u32, fd: RawFd) -> i32 {
        let was = self.multi.union(fd);
        self.multi.polls.retain(|p| p.1 != i);
        let _ = self.multi.register(fd, was);
        0
    }

    /// Multi-poll rule 3: the edge-triggered instance reported; posts each wake-up.
    pub(super) fn multi_poll_events(&mut self) {
        let Some(et) = self.multi.et.as_ref() else { return };
        let mut events = std::mem::take(&mut self.multi.events);
        events.clear();
        events.reserve(super::EVENTS);
        let _ = epoll::wait(et, rustix::buffer::spare_capacity(&mut events), Some(&rustix::time::Timespec::default()));
        for ev in events.iter() {
            let (flags, data) = (ev.flags, ev.data);
            let (revents, fd) = (flags.bits(), data.u64() as RawFd);
            for &(pfd, i, want) in self.multi.polls.iter().filter(|p| p.0 == fd) {
                let got = revents & (want | UNMASK);
                if got != 0 && self.ops[i].state == (State::MultiPoll { fd: pfd }) {
                    self.cq.push_back(super::cqe(self.ops[i].sqe.user_data, got as i32, IORING_CQE_F_MORE));
                }
            }
        }
        self.multi.events = events;
    }
}
