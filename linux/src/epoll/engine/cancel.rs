//! Cancelling ops: ASYNC_CANCEL SQEs, link timers firing, and `sync_cancel_fd`.
//!
//! Cancel rules (cited as "cancel rule N"), as io_uring 6.x's:
//! 1. An op found before it ran to its end completes with `-ECANCELED`, whatever it was
//!    waiting for: its start (queued in this pass), readiness, a queued pool job or its
//!    TIMEOUT, at once; its chain predecessor (`Linked`), when that one completes, so that
//!    a chain's CQEs stay in chain order (the rest of the chain then fails, link rule
//!    2). The cancel's own result is 0. A running pool job cannot be stopped: the
//!    cancel's result is `-EALREADY` and the job completes with its real result. Nothing
//!    found: `-ENOENT`.
//! 2. Matching: by `user_data` (the default), by descriptor (`IORING_ASYNC_CANCEL_FD`,
//!    and `user_data` too with `IORING_ASYNC_CANCEL_USERDATA`), or every op
//!    (`IORING_ASYNC_CANCEL_ANY`). With `IORING_ASYNC_CANCEL_ALL` or `ANY` every match is
//!    cancelled and the result is how many matched (0 for none); otherwise the oldest
//!    match only. A LINK_TIMEOUT is never matched (it ends with its op).
//! 3. The cancelled op's CQE comes before the cancel's own (a chained op's: when its
//!    turn comes).

use super::Engine;
use super::ops::State;
use super::sqe::*;
use io_uring::opcode;
use std::os::fd::RawFd;

/// [`Engine::cancel_one`]'s result for a chained op (a cancel's result is then 0).
pub(super) const FOUND_LATER: i32 = 1;

impl Engine {
    /// Cancel rule 1: takes op `j` out of whatever it waits for. 0: taken out (the caller
    /// then calls [`finish_cancel`](Self::finish_cancel)); `FOUND_LATER`: a chained op,
    /// marked to complete in chain order; `-EALREADY`: running.
    pub(super) fn cancel_one(&mut self, j: u32) -> i32 {
        match self.ops[j].state {
            State::Starting => {
                self.starts.retain(|&k| k != j);
                0
            }
            State::Linked => {
                self.ops[j].cancelled = true;
                FOUND_LATER
            }
            State::Waiting { fd, .. } => {
                self.ready.remove(fd, j);
                self.arm(fd);
                0
            }
            State::Pool => {
                let key = (j, self.ops[j].serial);
                if self.pool.as_ref().is_some_and(|p| p.cancel(key)) {
                    self.pool_jobs -= 1;
                    0
                } else {
                    -libc::EALREADY
                }
            }
            State::Timer => 0, // its heap entry goes stale (timer rule 1)
            State::MultiPoll { fd } => self.cancel_multi_poll(j, fd),
            State::LinkTimer { .. } | State::Free => -libc::ENOENT,
        }
    }

    /// Completes op `j` with `-ECANCELED` if [`cancel_one`](Self::cancel_one) took it out.
    pub(super) fn finish_cancel(&mut self, j: u32, r: i32) {
        if r == 0 {
            self.complete(j, -libc::ECANCELED);
        }
    }

    /// Cancel rules 1-3: performs the ASYNC_CANCEL op `i`; its result.
    pub(super) fn cancel_sqe(&mut self, i: u32) -> i32 {
        let s = self.ops[i].sqe;
        let fl = s.op_flags;
        let all = fl & (IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_ANY) != 0;
        let matches = |o: &RawSqe| {
            if fl & IORING_ASYNC_CANCEL_ANY != 0 {
                true
            } else if fl & IORING_ASYNC_CANCEL_FD != 0 {
                o.fd == s.fd && takes_fd(o.opcode) && (fl & IORING_ASYNC_CANCEL_USERDATA == 0 || o.user_data == s.addr)
            } else {
                o.user_data == s.addr
            }
        };
        self.cancel_matching(i, all, matches)
    }

    /// Cancels the ops `matches` names (all of them, or the oldest), except op `me`;
    /// the count (`all`) or the one result.
    fn cancel_matching(&mut self, me: u32, all: bool, matches: impl Fn(&RawSqe) -> bool) -> i32 {
        let (mut n, mut first) = (0, -libc::ENOENT);
        for j in self.ops.live_by_age() {
            let serial = self.ops[j].serial;
            // An earlier cancel in this loop may have completed (and freed) `j` already.
            if j == me || serial == 0 || matches!(self.ops[j].state, State::LinkTimer { .. } | State::Free) {
                continue;
            }
            if !matches(&self.ops[j].sqe) || self.ops[j].sqe.opcode == opcode::AsyncCancel::CODE {
                continue;
            }
            let r = self.cancel_one(j);
            self.finish_cancel(j, r);
            n += 1;
            if !all {
                first = if r == FOUND_LATER { 0 } else { r };
                break;
            }
        }
        if all { n } else { first }
    }

    /// `IORING_REGISTER_SYNC_CANCEL` by descriptor: cancels every op on `fd` (their CQEs
    /// posted), then waits, at most `wait`, until none of its running pool jobs is left.
    pub(crate) fn sync_cancel_fd(&mut self, fd: RawFd, wait: core::time::Duration) {
        self.cancel_matching(u32::MAX, true, |o| o.fd == fd && takes_fd(o.opcode));
        self.ready.forget(fd); // readiness rule 6: keel closes it next
        let until = super::timers::now().saturating_add(wait.as_nanos().min(u128::from(u64::MAX)) as u64);
        loop {
            let running = self.ops.live_by_age().into_iter().any(|j| {
                self.ops[j].state == State::Pool && self.ops[j].sqe.fd == fd && takes_fd(self.ops[j].sqe.opcode)
            });
            let now = super::timers::now();
            if !running || now >= until {
                return;
            }
            let _ = self.wait_once(Some(until - now));
        }
    }
}

/// Whether `code`'s SQE names a descriptor in `fd` (not a domain, a directory or -1).
fn takes_fd(code: u8) -> bool {
    !matches!(
        code,
        opcode::Nop::CODE
            | opcode::Timeout::CODE
            | opcode::LinkTimeout::CODE
            | opcode::AsyncCancel::CODE
            | opcode::Socket::CODE
            | opcode::OpenAt::CODE
            | opcode::OpenAt2::CODE
            | opcode::Statx::CODE
            | opcode::UnlinkAt::CODE
            | opcode::RenameAt::CODE
            | opcode::MkDirAt::CODE
    )
}
