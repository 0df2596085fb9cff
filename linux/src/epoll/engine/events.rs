//! Events: one `epoll_wait` and what each event it brings means (engine rule 2): a
//! descriptor's waiting ops try again and the descriptor is re-armed, the pool's eventfd
//! brings the pool's results, the multishot polls' instance brings their wake-ups.

use super::ops::State;
use super::ready::Armed;
use super::{Engine, POOL_DATA, multi_poll, perform_net};
use std::io;
use std::os::fd::RawFd;

impl Engine {
    /// Engine rule 2: one `epoll_wait` of at most `timeout_ns` (`None`: no timeout), then
    /// the events it brought.
    pub(super) fn wait_once(&mut self, timeout_ns: Option<u64>) -> io::Result<()> {
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
                self.woke(data as RawFd, flags);
            }
        }
        self.events = events;
        self.run_starts();
        r
    }

    /// Descriptor `fd` reported `revents`: its ops try again (engine rule 2).
    fn woke(&mut self, fd: RawFd, revents: u32) {
        let mut woken = std::mem::take(&mut self.woken);
        self.ready.take(fd, revents, &mut woken);
        for (i, _) in woken.drain(..) {
            self.retry(i, revents, true);
        }
        self.woken = woken;
        self.arm(fd);
    }

    /// Op `i` (waiting) tries again; `again`: a further wait is allowed (not for a
    /// descriptor that is always ready, which would loop).
    fn retry(&mut self, i: u32, revents: u32, again: bool) {
        if !matches!(self.ops[i].state, State::Waiting { .. }) {
            return;
        }
        self.ops[i].state = State::Starting;
        let step = perform_net::attempt(&mut self.ops[i], revents);
        match step {
            perform_net::Step::Wait(..) if !again => self.complete(i, -libc::EAGAIN),
            _ => self.go_on(i, step.into(), false),
        }
    }

    /// Readiness rules 1-3 for `fd`, with what a failed registration means for its ops.
    pub(super) fn arm(&mut self, fd: RawFd) {
        let mut out = std::mem::take(&mut self.woken);
        match self.ready.arm(fd, &mut out) {
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
        self.woken = out;
    }

    fn take_pool_results(&mut self) {
        let Some(p) = self.pool.as_ref() else { return };
        let mut results = std::mem::take(&mut self.results);
        p.take_done(&mut results);
        for ((i, serial), res) in results.drain(..) {
            self.pool_jobs -= 1;
            if self.ops.is(i, serial) && self.ops[i].state == State::Pool {
                self.complete(i, res);
            }
        }
        self.results = results;
    }
}
