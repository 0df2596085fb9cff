//! Taking SQEs and starting them: an `enter` takes the whole SQ, links its SQEs into
//! chains, then starts each chain's head in SQE order.
//!
//! Start rules (cited as "start rule N"):
//! 1. An SQE with `IOSQE_IO_LINK` (or `IOSQE_IO_HARDLINK`) links the next SQE of the same
//!    `enter` to it: that one is `Linked` and starts when this one completes (link rules in
//!    `links.rs`). A chain still open at the end of the SQ ends there, as the kernel's
//!    submission ends it.
//! 2. A LINK_TIMEOUT right after a linking SQE is that op's timer, not a chain member;
//!    its own `IOSQE_IO_LINK` continues the chain after the op. A LINK_TIMEOUT after
//!    anything else completes with `-EINVAL` (and fails what links to it).
//! 3. Every SQE reaches the CQ through its op, never synchronously to the caller: an op
//!    that completes at once posts its CQE in the same `enter`.
//! 4. An SQE the engine does not perform (`Engine::supports`, fixed files, buffer
//!    selection, drain, multishot forms other than accept's and poll's, direct
//!    descriptors, bundles, vectorized sends)
//!    completes with `-EOPNOTSUPP`.
//! 5. An SQE the kernel's prep refuses (`prep.rs`: a field its opcode does not use is
//!    set, or a bad I/O priority) is never performed and completes with `-EINVAL` when it
//!    is taken, as the kernel's submission fails it; in a chain, the whole chain fails
//!    there (the kernel fails even hard links it does not submit): the refused members
//!    with their error, every other member, link timers too, with `-ECANCELED`, in chain
//!    order.

use super::Engine;
use super::ops::State;
use super::perform_net::Step;
use super::sqe::*;
use super::{perform_fs, perform_net, pool, prep, ready, timers};
use io_uring::opcode;
use std::os::fd::RawFd;

/// How an op goes on after its first attempt.
pub(crate) enum Next {
    Step(Step),
    /// To the blocking pool.
    Pool,
    /// A TIMEOUT until this instant.
    Timer(u64),
    /// Already where it goes (a multishot poll).
    Started,
}

impl Engine {
    /// Start rules 1-2: takes the SQ into ops.
    pub(super) fn take_sq(&mut self) {
        let mut batch = std::mem::take(&mut self.sq);
        let mut tail: Option<u32> = None; // the op the next SQE links to
        let mut head = 0; // the first op of the chain being taken
        let mut refused = false; // start rule 5: a member of that chain failed its prep
        for e in &batch {
            let s = RawSqe::view(e);
            let i = self.ops.alloc(s);
            refused |= prep::refused(s);
            let links = s.flags & (IOSQE_IO_LINK | IOSQE_IO_HARDLINK) != 0;
            let timed = tail.filter(|&p| self.ops[p].ltimeout.is_none());
            if let (opcode::LinkTimeout::CODE, Some(p)) = (s.opcode, timed) {
                self.ops[i].state = State::LinkTimer { armed: false };
                self.ops[i].prev = Some(p);
                self.ops[p].ltimeout = Some(i);
                tail = links.then_some(p);
            } else {
                match tail {
                    Some(p) => {
                        self.ops[p].next = Some(i);
                        self.ops[i].prev = Some(p);
                        self.ops[i].state = State::Linked;
                    }
                    None => {
                        self.starts.push_back(i);
                        head = i;
                    }
                }
                tail = links.then_some(i);
            }
            if tail.is_none() && refused {
                self.fail_at_submit(head);
                refused = false;
            }
        }
        if refused {
            self.fail_at_submit(head); // a chain still open at the SQ's end (start rule 1)
        }
        batch.clear();
        self.sq = batch; // keeps its capacity
    }

    /// Start rule 5: chain `head`, just taken, has a member the kernel's prep refuses, so
    /// none of it is performed: each member completes in chain order (a link timer right
    /// after its op), a refused one with its error and the others with `-ECANCELED`. A
    /// head with `IOSQE_CQE_SKIP_SUCCESS` silences the rest (the kernel's
    /// `REQ_F_SKIP_LINK_CQES`, link rule 1). Bounded by the chain's length.
    fn fail_at_submit(&mut self, head: u32) {
        let started = self.starts.pop_back();
        debug_assert_eq!(started, Some(head), "keel bug: a refused chain's head is not the last start");
        let silence = self.ops[head].sqe.has(IOSQE_CQE_SKIP_SUCCESS);
        let mut at = Some(head);
        while let Some(m) = at {
            let op = &mut self.ops[m];
            let (next, timer) = (op.next.take(), op.ltimeout.take());
            for k in core::iter::once(m).chain(timer) {
                let s = self.ops[k].sqe;
                if k == head || !silence {
                    let res = if prep::refused(&s) { -libc::EINVAL } else { -libc::ECANCELED };
                    self.cq.push_back(super::cqe(s.user_data, res, 0));
                }
                self.ops.free(k);
            }
            at = next;
        }
    }

    /// Starts every op queued to start (heads taken now, successors whose predecessor
    /// completed); each start may queue more, and each op starts once: bounded by the
    /// ops in flight. Inline: most calls (an enter makes several) find nothing queued and pay no call.
    #[inline(always)]
    pub(super) fn run_starts(&mut self) {
        if !self.starts.is_empty() {
            self.run_queued_starts();
        }
    }

    /// [`run_starts`](Self::run_starts) with something queued.
    #[inline(never)]
    fn run_queued_starts(&mut self) {
        while let Some(i) = self.starts.pop_front() {
            if self.ops[i].state == State::Starting {
                self.start(i);
            }
        }
    }

    fn start(&mut self, i: u32) {
        if let Some(send) = self.plain_transfer(i) {
            return self.start_transfer(i, send); // transfer rule 1: no link timer to arm
        }
        let serial = self.ops[i].serial;
        let next = self.first_attempt(i);
        self.go_on(i, next, true);
        // Link rule 3: an op that is still in flight after its start arms its timer.
        let Some(t) = self.ops.is(i, serial).then(|| self.ops[i].ltimeout).flatten() else { return };
        match timers::deadline_of(&self.ops[t], timers::now()) {
            Ok(at) => {
                self.ops[t].state = State::LinkTimer { armed: true };
                self.ops[t].deadline = at;
                self.timers.push(at, self.ops[t].serial, t);
            }
            Err(e) => self.fire_link_timer(t, e),
        }
    }

    /// Puts op `i` where `next` says (`arm`: arm its descriptor now; a caller trying
    /// several waiters of one descriptor arms once after them).
    pub(super) fn go_on(&mut self, i: u32, next: Next, arm: bool) {
        match next {
            Next::Step(Step::Done(res)) => {
                self.after_transfer(i, res);
                self.complete(i, res)
            }
            Next::Step(Step::More(res)) => self.more(i, res, arm),
            Next::Step(Step::Wait(fd, _)) if fd < 0 => self.complete(i, -libc::EBADF),
            Next::Step(Step::Wait(fd, events)) => {
                self.ready.not_ready(fd, events); // readiness rule 2: what the attempt saw
                self.wait_on(i, fd, events, arm);
            }
            Next::Pool => self.hand_to_pool(i),
            Next::Started => {}
            Next::Timer(at) => {
                self.ops[i].state = State::Timer;
                self.ops[i].deadline = at;
                self.timers.push(at, self.ops[i].serial, i);
            }
        }
    }

    /// Op `i` waits for `events` on `fd` (`arm`: register it now if needed).
    pub(super) fn wait_on(&mut self, i: u32, fd: RawFd, events: u32, arm: bool) {
        // Readiness rule 10: an accept takes what wakes it.
        let events = if self.ops[i].sqe.opcode == opcode::Accept::CODE { events | ready::ONE } else { events };
        self.ops[i].state = State::Waiting { fd, events };
        self.ready.push(fd, i, events, self.sweeps);
        if self.ops[i].sqe.opcode == opcode::PollAdd::CODE && self.ready.is_registered(fd) {
            self.recheck(fd); // readiness rule 9: any descriptor, often not keel's
        } else if arm {
            self.arm(fd);
        }
    }

    /// Readiness rule 2: a short transfer on a descriptor that drains says it has no more
    /// (to read) or no room (to write) now; a descriptor an op made is new (rule 6).
    fn after_transfer(&mut self, i: u32, res: i32) {
        let s = &self.ops[i].sqe;
        let (code, fd, len) = (s.opcode, s.fd, s.len);
        let events = match code {
            // A peek leaves the data where it was: a short one drains nothing.
            opcode::Recv::CODE if s.op_flags as i32 & libc::MSG_PEEK != 0 => return,
            opcode::Recv::CODE | opcode::Read::CODE => ready::IN,
            opcode::Send::CODE | opcode::Write::CODE => ready::OUT,
            _ => return self.made_fd(code, res),
        };
        if res > 0 && (res as u32) < len && self.ready.drains(fd) {
            self.ready.drained(fd, events);
        }
    }

    /// Net rule 6: multishot op `i` produced `res`; it goes on (bounded burst).
    fn more(&mut self, i: u32, res: i32, arm: bool) {
        let mut res = res;
        for _ in 0..perform_net::MULTI_BURST {
            self.made_fd(self.ops[i].sqe.opcode, res);
            self.cq.push_back(super::cqe(self.ops[i].sqe.user_data, res, IORING_CQE_F_MORE));
            match perform_net::attempt(&mut self.ops[i], 0) {
                Step::More(r) => res = r,
                step => return self.go_on(i, step.into(), arm),
            }
        }
        self.made_fd(self.ops[i].sqe.opcode, res);
        self.cq.push_back(super::cqe(self.ops[i].sqe.user_data, res, IORING_CQE_F_MORE));
        // Not an observation: more connections may wait, so the direction stays maybe
        // ready and the wait is pending (readiness rule 4).
        let fd = self.ops[i].sqe.fd;
        self.wait_on(i, fd, ready::IN, arm);
    }

    fn hand_to_pool(&mut self, i: u32) {
        let (s, serial) = (self.ops[i].sqe, self.ops[i].serial);
        if let Some(p) = self.pool.as_mut() {
            let rank = pool::rank(s.ioprio, crate::ring::op::opcode_takes_priority(s.opcode));
            if p.push((i, serial), s, rank).is_ok() {
                self.ops[i].state = State::Pool;
                self.pool_jobs += 1;
                return;
            }
        }
        let res = perform_fs::blocking(&s); // no pool (file_threads 0): at once
        self.pool_done(i, res);
    }

    fn first_attempt(&mut self, i: u32) -> Next {
        let s = &self.ops[i].sqe;
        if !Self::performs(s) {
            return Next::Step(Step::Done(-libc::EOPNOTSUPP)); // start rule 4
        }
        let (code, fd, len, op_flags) = (s.opcode, s.fd, s.len, s.op_flags);
        let done = |r| Next::Step(Step::Done(r));
        match code {
            // The hot pair first: the rest of the match is never looked at for them.
            opcode::Send::CODE | opcode::Recv::CODE => self.attempt_unless_known(i),
            opcode::Nop::CODE => done(0),
            opcode::Read::CODE | opcode::Write::CODE | opcode::Readv::CODE | opcode::Writev::CODE => {
                match perform_fs::kind(fd) {
                    perform_fs::Kind::File => Next::Pool,
                    perform_fs::Kind::Stream => {
                        self.ops[i].sqe.off = u64::MAX; // no position: no ESPIPE retry
                        self.attempt_unless_known(i)
                    }
                    perform_fs::Kind::Anon => {
                        self.ops[i].sqe.off = u64::MAX;
                        // Readiness rule 3: its length is checked before readiness.
                        Next::Step(perform_net::attempt(&mut self.ops[i], 0))
                    }
                    perform_fs::Kind::Other => self.attempt_unless_known(i),
                }
            }
            opcode::SendMsg::CODE | opcode::RecvMsg::CODE | opcode::Accept::CODE => self.attempt_unless_known(i),
            opcode::Close::CODE => {
                self.ready.forget(fd);
                Next::Pool
            }
            opcode::Fsync::CODE
            | opcode::SyncFileRange::CODE
            | opcode::Fallocate::CODE
            | opcode::OpenAt::CODE
            | opcode::OpenAt2::CODE
            | opcode::Statx::CODE
            | opcode::UnlinkAt::CODE
            | opcode::RenameAt::CODE
            | opcode::MkDirAt::CODE => Next::Pool,
            opcode::Socket::CODE
            | opcode::Bind::CODE
            | opcode::Listen::CODE
            | opcode::Shutdown::CODE
            | opcode::SetSockOpt::CODE => done(perform_net::immediate(&self.ops[i])),
            opcode::Timeout::CODE => match timers::deadline_of(&self.ops[i], timers::now()) {
                Ok(at) => Next::Timer(at),
                Err(e) => done(e),
            },
            opcode::AsyncCancel::CODE => done(self.cancel_sqe(i)),
            opcode::PollAdd::CODE if len & IORING_POLL_ADD_MULTI != 0 => {
                self.start_multi_poll(i, fd, op_flags & 0xffff);
                Next::Started
            }
            // Start rule 2: a LINK_TIMEOUT with no op before it.
            opcode::LinkTimeout::CODE => done(-libc::EINVAL),
            _ => perform_net::attempt(&mut self.ops[i], 0).into(),
        }
    }

    /// Readiness rule 3: op `i`'s first attempt, or a wait without it when its
    /// descriptor is registered and known not ready for it (only for ops without the
    /// caller's own non-blocking flag, whose `EAGAIN` must come from the kernel).
    fn attempt_unless_known(&mut self, i: u32) -> Next {
        let s = &self.ops[i].sqe;
        let (fd, fl) = (s.fd, s.op_flags as i32);
        // A transfer of nothing (`len` 0: no bytes, or no iovecs) always asks the kernel,
        // which may answer at once (a pipe's 0) whatever the readiness.
        let some = s.len != 0;
        let events = match s.opcode {
            opcode::Recv::CODE | opcode::RecvMsg::CODE => {
                Some(ready::IN).filter(|_| some && fl & libc::MSG_DONTWAIT == 0)
            }
            opcode::Send::CODE | opcode::SendMsg::CODE => {
                Some(ready::OUT).filter(|_| some && fl & libc::MSG_DONTWAIT == 0)
            }
            opcode::Read::CODE | opcode::Readv::CODE => Some(ready::IN).filter(|_| some && fl & libc::RWF_NOWAIT == 0),
            opcode::Write::CODE | opcode::Writev::CODE => {
                Some(ready::OUT).filter(|_| some && fl & libc::RWF_NOWAIT == 0)
            }
            opcode::Accept::CODE => Some(ready::IN).filter(|_| s.ioprio & IORING_ACCEPT_DONTWAIT == 0),
            _ => None,
        };
        match events {
            Some(ev) if fd >= 0 && self.ready.must_wait(fd, ev) => Next::Step(Step::Wait(fd, ev)),
            _ => Next::Step(perform_net::attempt(&mut self.ops[i], 0)),
        }
    }

    /// Start rule 4: whether the engine performs this SQE at all.
    pub(super) fn performs(s: &RawSqe) -> bool {
        if !Self::supports(s.opcode) || s.flags & (IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT | IOSQE_IO_DRAIN) != 0 {
            return false;
        }
        match s.opcode {
            // A multishot accept goes on without end: never a chain member.
            opcode::Accept::CODE => {
                let linked = s.flags & (IOSQE_IO_LINK | IOSQE_IO_HARDLINK) != 0;
                s.file_index == 0 && !(linked && s.ioprio & IORING_ACCEPT_MULTISHOT != 0)
            }
            opcode::Recv::CODE | opcode::RecvMsg::CODE | opcode::Send::CODE | opcode::SendMsg::CODE => {
                let declined =
                    IORING_RECV_MULTISHOT | IORING_RECVSEND_FIXED_BUF | IORING_RECVSEND_BUNDLE | IORING_SEND_VECTORIZED;
                s.ioprio & declined == 0
            }
            // A multishot poll goes on without end: never a chain member.
            opcode::PollAdd::CODE => {
                let linked = s.flags & (IOSQE_IO_LINK | IOSQE_IO_HARDLINK) != 0;
                s.len & !IORING_POLL_ADD_MULTI == 0 && !(linked && s.len & IORING_POLL_ADD_MULTI != 0)
            }
            opcode::OpenAt::CODE | opcode::OpenAt2::CODE | opcode::Socket::CODE | opcode::Close::CODE => {
                s.file_index == 0
            }
            opcode::Timeout::CODE => s.off == 0,
            opcode::AsyncCancel::CODE => s.op_flags & (IORING_ASYNC_CANCEL_FD_FIXED | IORING_ASYNC_CANCEL_OP) == 0,
            _ => true,
        }
    }
}

impl From<Step> for Next {
    fn from(s: Step) -> Next {
        Next::Step(s)
    }
}
