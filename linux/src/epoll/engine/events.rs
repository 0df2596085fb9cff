//! Events: one `epoll_wait` and what each event it brings means (engine rule 2): a
//! descriptor's waiting ops try again (and it is registered if one still waits and it
//! is not yet), the pool's eventfd brings the pool's results, the multishot polls'
//! instance brings their wake-ups; then the pending descriptors' waiters try again
//! (readiness rule 4). Also the close log's renewals (readiness rule 6).

use super::closes;
use super::ops::State;
use super::ready::Armed;
use super::{Engine, POOL_DATA, multi_poll, perform_net, ready};
use io_uring::opcode;
use std::io;
use std::os::fd::RawFd;

impl Engine {
    /// Engine rule 2: one `epoll_wait` of at most `timeout_ns` (`None`: no timeout), then
    /// the events it brought.
    pub(super) fn wait_once(&mut self, timeout_ns: Option<u64>) -> io::Result<()> {
        let timeout_ns = if self.ready.any_pending() { Some(0) } else { timeout_ns };
        let ts = timeout_ns.map(|ns| {
            let ms = ns.div_ceil(1_000_000); // rounded up: epoll never wakes early
            rustix::time::Timespec { tv_sec: (ms / 1000) as i64, tv_nsec: ((ms % 1000) * 1_000_000) as i64 }
        });
        let mut events = std::mem::take(&mut self.events);
        let r = self.ready.wait(&mut events, ts.as_ref());
        for ev in events.iter() {
            let (flags, data) = (ev.flags, ev.data);
            let (flags, data) = (flags.bits(), data.u64());
            if data == POOL_DATA {
                self.take_pool_results();
            } else if data == multi_poll::MULTI_DATA {
                self.multi_poll_events();
            } else {
                self.woke(data as RawFd, flags, true);
            }
        }
        self.events = events;
        let mut pend = std::mem::take(&mut self.pend);
        self.ready.take_pending(&mut pend);
        for &(fd, maybe) in &pend {
            self.woke(fd, maybe, false);
        }
        self.pend = pend;
        self.run_starts();
        r
    }

    /// Descriptor `fd` reported `revents` (`event`: an epoll event; else the directions
    /// that may be ready, readiness rule 4): its ops try again (engine rule 2).
    fn woke(&mut self, fd: RawFd, revents: u32, event: bool) {
        // A poll asks the kernel itself when no event's mask came (`revents` 0).
        let seen = if event { revents } else { 0 };
        match self.ready.take_single(fd, revents) {
            Some(Some(i)) => self.retry(i, seen, true),
            Some(None) => {}
            None => self.woke_all(fd, revents, seen),
        }
        self.arm(fd);
    }

    /// [`woke`](Self::woke) for a descriptor with several waiters.
    #[inline(never)]
    fn woke_all(&mut self, fd: RawFd, revents: u32, seen: u32) {
        let mut woken = std::mem::take(&mut self.woken);
        self.ready.take(fd, revents, &mut woken);
        let mut k = 0;
        while let Some(&(i, ev)) = woken.get(k) {
            k += 1;
            self.retry(i, seen, true);
            if ev & ready::ONE != 0 && !matches!(self.ops[i].state, State::Waiting { .. }) {
                self.ready.take_one(fd, &mut woken); // readiness rule 10: the next one tries
            }
        }
        woken.clear();
        self.woken = woken;
    }

    /// Readiness rule 6, close-log rule 2: renews the entries of the numbers keel closed
    /// outside the engine since the last `enter`.
    pub(super) fn take_closes(&mut self) {
        if closes::count() == self.closes_seen {
            return;
        }
        let mut fds = std::mem::take(&mut self.due);
        fds.clear();
        match closes::since(self.closes_seen, |fd| fds.push(fd)) {
            Ok(seen) => self.closes_seen = seen,
            Err(seen) => {
                self.closes_seen = seen;
                fds.clear();
                self.ready.renew_all(&mut fds); // those with waiters, to register again
            }
        }
        for &fd in &fds {
            self.renew(fd);
        }
        self.due = fds;
    }

    /// Readiness rule 6: nothing known of `fd` is kept; ops still waiting on it are
    /// registered again (an op on a closed number then ends with `EBADF`).
    pub(super) fn renew(&mut self, fd: RawFd) {
        if self.ready.renew(fd) {
            self.arm(fd);
        }
    }

    /// Readiness rule 6: op `i` completed with `res`; a descriptor it made is new.
    pub(super) fn made_fd(&mut self, code: u8, res: i32) {
        if res >= 0
            && matches!(
                code,
                opcode::Accept::CODE | opcode::Socket::CODE | opcode::OpenAt::CODE | opcode::OpenAt2::CODE
            )
        {
            self.renew(res);
        }
    }

    /// Op `i` (waiting) tries again; `again`: a further wait is allowed (not for a
    /// descriptor that is always ready, which would loop).
    fn retry(&mut self, i: u32, revents: u32, again: bool) {
        if !matches!(self.ops[i].state, State::Waiting { .. }) {
            return;
        }
        self.ops[i].state = State::Starting;
        if let Some(send) = self.plain_transfer(i).filter(|_| again) {
            return self.transfer(i, send, false); // transfer rule 2
        }
        let step = perform_net::attempt(&mut self.ops[i], revents);
        match step {
            perform_net::Step::Wait(..) if !again => self.complete(i, -libc::EAGAIN),
            _ => self.go_on(i, step.into(), false),
        }
    }

    /// Readiness rules 1, 4 and 5 for `fd`, with what a failed registration means for its
    /// ops.
    #[inline(always)]
    pub(super) fn arm(&mut self, fd: RawFd) {
        if self.ready.settled(fd) {
            return; // the steady state: registered, nothing pending to add
        }
        self.arm_unsettled(fd);
    }

    /// [`arm`](Self::arm) past its steady-state check.
    #[inline(never)]
    fn arm_unsettled(&mut self, fd: RawFd) {
        let mut out = std::mem::take(&mut self.woken);
        let armed = self.ready.arm(fd, &mut out);
        self.end_waiters(armed, &mut out);
        self.woken = out;
    }

    /// What a registration's `armed` means for the waiters taken out into `out`
    /// (readiness rule 5); `out` is left empty.
    pub(super) fn end_waiters(&mut self, armed: Armed, out: &mut Vec<(u32, u32)>) {
        match armed {
            Armed::Ok => {}
            Armed::AlwaysReady => {
                let all = (libc::POLLIN | libc::POLLOUT | libc::POLLRDNORM | libc::POLLWRNORM) as u32;
                for (i, _) in out.drain(..) {
                    self.retry(i, all, false);
                }
            }
            Armed::Failed(e) => {
                for (i, _) in out.drain(..) {
                    if matches!(self.ops[i].state, State::Waiting { .. }) {
                        self.complete(i, e);
                    }
                }
            }
        }
        out.clear();
    }

    /// Pool op `i` (or one performed at once for want of a pool) returned `res`: a
    /// descriptor it made or closed is renewed (readiness rule 6: ops left on a closed one
    /// end with `EBADF`), then it completes.
    pub(super) fn pool_done(&mut self, i: u32, res: i32) {
        let (code, fd) = (self.ops[i].sqe.opcode, self.ops[i].sqe.fd);
        self.made_fd(code, res);
        if code == opcode::Close::CODE {
            self.renew(fd);
        }
        self.complete(i, res);
    }

    fn take_pool_results(&mut self) {
        let Some(p) = self.pool.as_ref() else { return };
        let mut results = std::mem::take(&mut self.results);
        p.take_done(&mut results);
        for ((i, serial), res) in results.drain(..) {
            self.pool_jobs -= 1;
            if self.ops.is(i, serial) && self.ops[i].state == State::Pool {
                self.pool_done(i, res);
            }
        }
        self.results = results;
    }
}
