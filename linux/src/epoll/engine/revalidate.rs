//! Revalidation (readiness rule 7): a wait that lasts re-checks its descriptor's
//! registration, so that a descriptor closed behind keel's back, its number reused,
//! strands no waiter for good.
//!
//! Revalidation rules (cited as "revalidation rule N"):
//! 1. While any op waits on a descriptor, the engine sweeps once per period
//!    (`Engine::period`, `PERIOD_NS` by default): an `enter` that waits wakes for the
//!    next sweep at the latest. With no op waiting on a descriptor there is no sweep.
//! 2. A descriptor whose first waiter came at sweep `s` is checked at sweeps `s + 2`,
//!    `s + 4`, `s + 8`, `s + 16`, then every `MAX_GAP` sweeps while ops wait on it (a new
//!    first waiter starts the gaps again), so a wait shorter than a period is never
//!    checked and an idle connection costs one `epoll_ctl` per `MAX_GAP` periods.
//! 3. A check is `EPOLL_CTL_MOD` of the same registration. Success: it stands (and epoll
//!    re-checks the level, so the waiters hear of readiness they might have missed).
//!    `ENOENT`: the number names another file now: it is registered (`EPOLL_CTL_ADD`,
//!    readiness rule 1), the entry renewed (readiness rule 6) and its waiters try again
//!    (pending, readiness rule 4). Any other error (`EBADF`: closed, not reused): the
//!    waiters end with it (readiness rule 5). A due descriptor with waiters and no
//!    registration (the engine deleted it before a close the waiters outlived) is
//!    registered (readiness rule 1), which ends them with `EBADF` if the number is closed.
//! 4. Bounds: a waiter behind a descriptor closed behind keel's back is found by the
//!    first check after the close: at most `MAX_GAP + 1` periods after it (17 s with the
//!    defaults), and for a close early in the wait, by the time the wait is about twice
//!    as old plus a period. A sweep is one pass over the entries (bounded by the highest
//!    descriptor number waited on) and one or two `epoll_ctl` per descriptor due.

use super::Engine;
use super::entry::Entry;
use rustix::event::epoll;
use rustix::io::Errno;
use std::os::fd::{BorrowedFd, RawFd};

/// The default period between sweeps (revalidation rule 1): 1 s.
pub(crate) const PERIOD_NS: u64 = 1_000_000_000;

/// The largest gap between two checks of one wait, in sweeps (revalidation rule 2).
pub(crate) const MAX_GAP: u32 = 16;

/// Revalidation rule 2: a descriptor's first waiter came at sweep `since`.
pub(crate) fn first_wait(e: &mut Entry, since: u32) {
    e.gap = 2;
    e.check_at = since.wrapping_add(2);
}

impl Engine {
    /// Revalidation rule 1: sweeps if one is due at `now`, and keeps the next one
    /// scheduled while ops wait on descriptors.
    pub(super) fn sweep_if_due(&mut self, now: u64) {
        if !self.ready.any_waiting() {
            self.next_sweep = None;
            return;
        }
        match self.next_sweep {
            None => {
                self.next_sweep = Some(now.saturating_add(self.period));
                return;
            }
            Some(t) if now < t => return,
            Some(_) => {}
        }
        self.sweeps = self.sweeps.wrapping_add(1);
        self.next_sweep = Some(now.saturating_add(self.period));
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        let s = self.sweeps;
        for (k, e) in self.ready.fds.iter_mut().enumerate() {
            if e.has_waiters() && s.wrapping_sub(e.check_at) as i32 >= 0 {
                e.gap = (e.gap * 2).min(MAX_GAP);
                e.check_at = s.wrapping_add(e.gap);
                due.push(k as RawFd);
            }
        }
        for &fd in &due {
            if self.ready.fds[fd as usize].registered {
                self.recheck(fd);
            } else {
                self.arm(fd); // waiters left unregistered (their number closed by the engine)
            }
        }
        self.due = due;
    }

    /// When the next sweep is due, if one is (revalidation rule 1).
    pub(super) fn sweep_deadline(&self) -> Option<u64> {
        if self.ready.any_waiting() { self.next_sweep } else { None }
    }

    /// Revalidation rule 3 for `fd` (also readiness rule 9).
    pub(super) fn recheck(&mut self, fd: RawFd) {
        let r = &mut self.ready;
        let data = epoll::EventData::new_u64(fd as u64);
        let flags = epoll::EventFlags::from_bits_retain(super::ready::INTEREST);
        // SAFETY: epoll_ctl only looks the number up (closed or reused: its errno, handled
        // below); the borrow lives for these calls only.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        r.counts.ctl += 1;
        let res = match epoll::modify(&r.epoll, b, data, flags) {
            Err(Errno::NOENT) => {
                r.counts.ctl += 1;
                let added = epoll::add(&r.epoll, b, data, flags);
                if matches!(added, Ok(()) | Err(Errno::EXIST)) {
                    r.renew(fd);
                    r.fds[fd as usize].registered = true;
                    r.make_pending(fd);
                }
                added
            }
            other => other,
        };
        if let Err(err) = res.or_else(|e| if e == Errno::EXIST { Ok(()) } else { Err(e) }) {
            let mut out = std::mem::take(&mut self.woken);
            let armed = self.ready.fail(fd, err, &mut out);
            self.end_waiters(armed, &mut out);
            self.woken = out;
        }
    }
}
